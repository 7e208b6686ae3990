"""SMB2 change notification against a real Samba: another client's writes wake the watcher,
the one-shot watch is re-armed, an "enumerate the folder" reply (overflow) still wakes it, it
comes back after the server restarts, and a watch loop on an SMB spool picks jobs up long before
its rescan."""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import chain_settings
from sambaserver import SambaServer
from test_watch import start_runner

from watchers import app
from watchers.backends.smb import PASSWORD_ENV, SmbBackend
from watchers.config import parse

WAIT = 10.0  # seconds: far more than a report takes (milliseconds), far less than a rescan


pytestmark = pytest.mark.usefixtures("no_smb_env")


@pytest.fixture
def folder(samba: SambaServer) -> str:
    name = f"n-{secrets.token_hex(4)}"
    for sub in ("", "/a", "/b"):
        (samba.share_dir / f"{name}{sub}").mkdir()
        shutil.chown(samba.share_dir / f"{name}{sub}", samba.user, samba.user)
    return name


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self) -> float:
        """Seconds until the next wake (fails after WAIT)."""
        t = time.monotonic()
        assert self.event.wait(WAIT), "no change report"
        self.event.clear()
        return time.monotonic() - t


def backend(samba: SambaServer, folder: str) -> SmbBackend:
    return SmbBackend(f"{samba.url}/{folder}", password=samba.password)


def test_another_clients_writes_wake_the_watcher_every_time(
    samba: SambaServer, folder: str
) -> None:
    watched, writer = backend(samba, folder), backend(samba, folder)
    wakes = Wakes()
    notifier = watched.notify(["a", "b"], wakes)
    try:
        latencies = []
        for i in range(5):  # one-shot on the wire: each reply must have been re-armed
            sub = "ab"[i % 2]
            t = time.monotonic()
            writer.write_bytes(f"{sub}/f{i}", b"x", fsync=False)
            wakes.event.wait(WAIT)
            latencies.append(time.monotonic() - t)
            assert wakes.event.is_set(), f"change {i} in {sub}/ not reported"
            wakes.event.clear()
            time.sleep(0.05)  # let a second report of the same change arrive now, not later
            wakes.event.clear()
        print(f"\nchange-notify latency (ms): {[round(x * 1000, 1) for x in latencies]}")
        writer.makedirs("elsewhere")  # the watched folders' parent: not watched
        assert not wakes.event.wait(0.5), "a change outside the watched folders woke it"
    finally:
        notifier.stop()
        watched.close()
        writer.close()


def test_an_enumerate_reply_is_a_wake_like_any_other(samba: SambaServer, folder: str) -> None:
    """With no room for the change list the server answers STATUS_NOTIFY_ENUM_DIR: "something
    changed, list the folder" - the overflow case. It must wake the loop and be re-armed."""
    watched, writer = backend(samba, folder), backend(samba, folder)
    wakes = Wakes()
    notifier = watched.notify(["a"], wakes, output_buffer_length=0)
    try:
        for i in range(3):
            writer.write_bytes(f"a/f{i}", b"x", fsync=False)
            wakes.wait()
            time.sleep(0.05)
            wakes.event.clear()
    finally:
        notifier.stop()
        watched.close()
        writer.close()


def test_the_watch_comes_back_after_the_server_restarts(samba: SambaServer, folder: str) -> None:
    watched = backend(samba, folder)
    wakes = Wakes()
    notifier = watched.notify(["a"], wakes)
    try:
        samba.stop()
        wakes.wait()  # the connection dropped: look again (the loop's rescan takes over)
        samba.start()
        wakes.wait()  # armed again: changes during the outage were not reported, so look
        writer = backend(samba, folder)
        writer.write_bytes("a/after", b"x", fsync=False)
        wakes.wait()
        writer.close()
    finally:
        notifier.stop()
        watched.close()


def test_a_watch_loop_on_an_smb_spool_claims_long_before_its_rescan(
    samba: SambaServer, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = chain_settings(("a", "b"), spool={"path": f"{samba.url}/{folder}"})
    settings["spool"].update(rescan_seconds=60, settle_seconds=0)
    policies = parse(settings, source=None, base_dir=tmp_path)
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    spool = app.open_spool(policies)
    runner, thread = start_runner(spool, policies)
    dropper = backend(samba, folder)
    try:
        deadline = time.monotonic() + WAIT
        while runner._notifier is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner._notifier is not None, "the loop did not start change notification"
        time.sleep(0.5)  # the first rescan is done; from now on only a report wakes it
        t = time.monotonic()
        dropper.write_bytes("inbox/clip.MP4", b"payload", fsync=True)
        while not dropper.list("b/done") and time.monotonic() - t < WAIT:
            time.sleep(0.02)
        print(f"\ndrop -> through both stages over SMB: {(time.monotonic() - t) * 1000:.0f} ms")
        assert [e.name for e in dropper.list("b/done")], "not picked up before the rescan"
    finally:
        runner.request_stop()
        thread.join(15)
        dropper.close()
        spool.backend.close()


def test_a_watcher_started_while_the_nas_is_away_waits_for_it(
    samba: SambaServer, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NAS still booting when the device starts: the watcher waits (no exit 5 and a restart
    loop), then lays out the spool and works once the server answers."""
    settings = chain_settings(("a", "b"), spool={"path": f"{samba.url}/{folder}/late"})
    settings["spool"].update(rescan_seconds=0.5, settle_seconds=0)
    policies = parse(settings, source=None, base_dir=tmp_path)
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    samba.stop()
    spool = app.open_spool(policies)
    runner, thread = start_runner(spool, policies)
    try:
        time.sleep(1.5)
        assert thread.is_alive() and runner.state == "waiting-for-storage"
        samba.start()
        dropper = backend(samba, f"{folder}/late")
        deadline = time.monotonic() + WAIT
        while not dropper.exists("inbox") and time.monotonic() < deadline:
            time.sleep(0.05)
        dropper.write_bytes("inbox/clip.MP4", b"payload", fsync=True)
        while not dropper.list("b/done") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dropper.list("b/done"), "the job did not go through after the NAS came back"
        dropper.close()
    finally:
        samba.start()
        runner.request_stop()
        thread.join(15)
        spool.backend.close()
