"""The whole pipeline over one SMB spool on a real Samba, as separate processes with their own
device ids (two for preprocess) and the coordinator: 50 clips, and smbd stopped for 20 s in the
middle. Every clip must be archived exactly once, nothing left in any work/ folder, and the
ledger consistent. The spool and both stores (raw, archive) are on the share, as smb:// URLs;
the ledger is a local file (the coordinator's own disk)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from sambaserver import SambaServer
from scenegen import make_scene

from watchers.backends.smb import CREDENTIALS_ENV, PASSWORD_ENV, SmbBackend
from watchers.ledger import Ledger

CLIPS = 50
OUTAGE_SECONDS = 20
DEADLINE_SECONDS = 600
# (stage, device id): one process each; preprocess twice
DEVICES = [
    ("ingest", "nas-ingest"),
    ("preprocess", "jetson-1"),
    ("preprocess", "jetson-2"),
    ("heavy", "gpu-1"),
    ("archive", "shed-nas"),
]

SETTINGS = """
[spool]
path = "{url}/spool"
settle_seconds = 0
rescan_seconds = 2
heartbeat_seconds = 1
lease_seconds = 120

[retry]
in_process_attempts = 2
in_process_initial_seconds = 0.2
in_process_max_seconds = 1
defer_initial_seconds = 1
defer_max_seconds = 4
max_attempts = 10

[stores]
raw = "{url}/raw"
archive = "{url}/archive"

[coordinator]
ingest_interval_seconds = 0.5
reaper_interval_seconds = 5
deferred_interval_seconds = 1

[stages.ingest]
type = "ingest"
next = ["preprocess"]
timezone = "UTC"

[stages.preprocess]
type = "preprocess"
next = ["heavy", "archive"]
fps = 2

[stages.heavy]
type = "heavy"
next = ["archive"]
window_fps = 2
[stages.heavy.detector]
type = "none"
[stages.heavy.overlay]
enabled = false

[stages.archive]
type = "archive"
next = []
terminal_state = "archived"
[stages.archive.preview]
mode = "never"
"""


@pytest.fixture
def samba() -> Iterator[SambaServer]:
    with SambaServer() as server:
        yield server


def clip_bytes(tmp_path: Path, i: int) -> bytes:
    path = make_scene(
        tmp_path / "made.mp4", seconds=2, fps=10, width=160, height=90, drive=i % 2 == 0, seed=i
    )
    return path.read_bytes()


def archived(ledger_path: Path) -> list[Any]:
    if not ledger_path.exists():
        return []
    led = Ledger(ledger_path, read_only=True)
    try:
        return [v for v in led.videos(limit=1000) if v.state == "archived"]
    except Exception:  # the coordinator is creating it
        return []
    finally:
        led.close()


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_fifty_clips_through_five_processes_and_a_nas_outage(
    samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
    cfg = tmp_path / "policies.toml"
    cfg.write_text(SETTINGS.format(url=samba.url))
    (samba.share_dir / "spool").mkdir()
    os.chown(samba.share_dir / "spool", *_ids(samba.share_dir))
    env = {
        **os.environ,
        PASSWORD_ENV: samba.password,
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(tmp_path / "yolo"),
        "PYTHONPATH": str(REPO),
    }
    base = [sys.executable, "-m", "watchers.cli", "--config", str(cfg)]
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(name: str, *args: str) -> None:
        with open(logs / f"{name}.log", "wb") as out:
            procs[name] = subprocess.Popen(
                [*base, *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def tail(name: str) -> str:
        return (logs / f"{name}.log").read_text(errors="replace")[-3000:]

    truth: dict[str, str] = {}  # sha256 -> name
    dropper = SmbBackend(f"{samba.url}/spool", password=samba.password)
    try:
        launch("coordinator", "coordinator")
        for stage, device in DEVICES:
            launch(device, "watch", stage, "--device-id", device)
        for i in range(CLIPS):
            name = f"2026_0513_16{i // 60:02d}{i % 60:02d}_{i:06d}F.MP4"
            data = clip_bytes(tmp_path, i)
            truth[hashlib.sha256(data).hexdigest()] = name
            dropper.makedirs("inbox")
            dropper.write_bytes(f"inbox/{name}.part", data, fsync=True)  # an uploader's way
            dropper.replace(f"inbox/{name}.part", f"inbox/{name}")
        dropper.close()
        assert len(truth) == CLIPS, "the generated clips must differ"

        ledger_path = tmp_path / "dashspool.db"
        start = time.monotonic()
        while len(archived(ledger_path)) < CLIPS // 4:
            assert time.monotonic() - start < DEADLINE_SECONDS, "too slow before the outage"
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited early:\n{tail(name)}"
            time.sleep(0.5)
        before = len(archived(ledger_path))
        samba.stop()
        time.sleep(OUTAGE_SECONDS)
        samba.start()
        while len(archived(ledger_path)) < CLIPS:
            if time.monotonic() - start > DEADLINE_SECONDS:
                pytest.fail(
                    f"{len(archived(ledger_path))}/{CLIPS} archived; share: "
                    f"{files(samba.share_dir / 'spool')[:40]}\n"
                    + "\n".join(f"--- {n}\n{tail(n)}" for n in procs)
                )
            for name, proc in procs.items():
                assert proc.poll() is None, f"{name} exited:\n{tail(name)}"
            time.sleep(0.5)
        print(
            f"\n{before} archived before the outage; all {CLIPS} in "
            f"{time.monotonic() - start:.0f} s"
        )
        time.sleep(2)  # let the last completions' bookkeeping land
    finally:
        # the shutdown order of the operations guide: the watchers, then the coordinator once
        # it has taken in their last events
        watchers = [n for n in procs if n != "coordinator"]
        for group in (watchers, [n for n in procs if n == "coordinator"]):
            if "coordinator" in group:
                _settle_ledger(samba.share_dir / "spool" / "ledger" / "inbox")
            for name in group:
                if procs[name].poll() is None:
                    procs[name].send_signal(signal.SIGTERM)
            for name in group:
                try:
                    procs[name].wait(30)
                except subprocess.TimeoutExpired:
                    procs[name].kill()
                    pytest.fail(f"{name} did not stop on SIGTERM:\n{tail(name)}")
    try:
        for name, proc in procs.items():
            assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{tail(name)}"

        # every clip archived exactly once, verified
        videos = archived(ledger_path)
        assert sorted(v.sha256 for v in videos) == sorted(truth)
        assert all(v.archive_sha256 == v.sha256 for v in videos)
        archive = samba.share_dir / "archive"
        assert not (tmp_path / "archive").exists() and not (tmp_path / "raw").exists()
        raw = [p for p in (samba.share_dir / "raw").rglob("*.MP4") if ".index" not in p.parts]
        assert len(raw) == CLIPS, "every clip filed once in the raw store on the share"
        entries = [p for p in archive.glob("*/*/*/*") if p.is_dir()]
        assert len(entries) == CLIPS and not [p for p in entries if p.name.startswith(".")]
        for v in videos:
            clip = archive / v.archive_path
            assert hashlib.sha256(clip.read_bytes()).hexdigest() == v.sha256
            assert truth[v.sha256] == clip.name
            assert not list(clip.parent.glob("*.corrupt-*"))
        # nothing stuck or lost in the spool
        spool = samba.share_dir / "spool"
        for stage in ("ingest", "preprocess", "heavy", "archive"):
            assert files(spool / stage / "work") == [], f"{stage}/work not empty"
            assert files(spool / stage / "failed") == [], f"{stage}/failed: {files(spool / stage)}"
            assert files(spool / stage / "inbox") == [] and files(spool / stage / "deferred") == []
        assert files(spool / "inbox") == [], "a drop was rejected or taken for a duplicate"
        assert files(spool / "ledger" / "inbox") == [], "ledger events left unapplied"
        led = Ledger(ledger_path, read_only=True)
        try:
            assert led.counts() == {"archived": CLIPS}
        finally:
            led.close()
        beats = {p.stem: json.loads(p.read_text()) for p in (spool / "devices").glob("*.json")}
        assert {d for _, d in DEVICES} <= set(beats)
        assert all(b["state"] == "stopped" for b in beats.values())
    except AssertionError as err:  # say what each process saw: a flake must be readable
        seen = "\n".join(f"--- {n}\n{tail(n)}" for n in procs)
        raise AssertionError(f"{err}\n{seen}") from None


def _settle_ledger(inbox: Path, timeout: float = 20.0) -> None:
    """Wait until the coordinator has taken in every event file (or the timeout)."""
    deadline = time.monotonic() + timeout
    while files(inbox) and time.monotonic() < deadline:
        time.sleep(0.2)


def _ids(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid
