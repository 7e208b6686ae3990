"""The SMB backend against a real Samba on loopback (tests/sambaserver.py): the whole backend
contract, a 4-process exclusive claim race repeated 1000 times, credentials kept out of every
URL, repr, error and log line, and a server that is down."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from backend_contract import BackendContract
from sambaserver import SambaServer, free_port

from watchers.backends import open_backend, smb
from watchers.backends.base import Backend
from watchers.backends.smb import (
    CREDENTIALS_ENV,
    PASSWORD_ENV,
    SmbBackend,
    _kind,
    load_credentials,
    parse_url,
)
from watchers.clock import utcnow
from watchers.errors import (
    AlreadyExists,
    ConfigError,
    NotFound,
    StorageUnavailable,
    UnsafePath,
)
from watchers.sidecar import Sidecar
from watchers.spool import Spool

RACES = 1000
RACERS = 4


pytestmark = pytest.mark.usefixtures("no_smb_env")


def connect(samba: SambaServer, folder: str = "") -> SmbBackend:
    url = samba.url + (f"/{folder}" if folder else "")
    return SmbBackend(url, password=samba.password)


@pytest.fixture
def folder(samba: SambaServer) -> str:
    """A fresh folder on the share for one test."""
    name = f"t-{secrets.token_hex(4)}"
    (samba.share_dir / name).mkdir()
    shutil.chown(samba.share_dir / name, samba.user, samba.user)
    return name


class TestSmbBackend(BackendContract):
    # Samba 4.17 creates no reparse points, and shows a server-side symlink as its target (inside
    # the share) or not at all (outside it): see test_server_side_links_do_not_escape.
    supports_links = False

    @pytest.fixture
    def backend(self, samba: SambaServer, folder: str) -> Iterator[Backend]:
        b = connect(samba, folder)
        yield b
        b.close()


# ---------------------------------------------------------------- the claim race


def _racer(
    url: str, password: str, me: int, rounds: int, barrier: Barrier, results: Any, plain: bool
) -> None:
    """One competitor in its own process, with its own SMB connection and session."""
    import smbclient

    b = SmbBackend(url, password=password)
    kw = b._kw
    try:
        b.stat("")  # connect before the first round
        for r in range(rounds):
            barrier.wait(30)
            won = True
            try:
                if plain:
                    smbclient.rename(b._unc(f"jobs/j{r}"), b._unc(f"claimed/{r}-{me}"), **kw)
                else:
                    b.rename(f"jobs/j{r}", f"claimed/{r}-{me}")
            except NotFound:
                won = False
            except OSError:  # plain smbclient: the loser's source is gone
                if not plain:
                    raise
                won = False
            results.put((r, me, won))
    finally:
        b.close()


def race(samba: SambaServer, folder: str, rounds: int, *, plain: bool = False) -> list[list[int]]:
    """``rounds`` rounds of RACERS processes renaming the same job folder at once; the winners of
    each round. The parent makes each job and checks the result at the winner's destination."""
    b = connect(samba, folder)
    b.makedirs("jobs")
    b.makedirs("claimed")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RACERS + 1)
    results = ctx.Queue()
    url = f"{samba.url}/{folder}"
    procs = [
        ctx.Process(target=_racer, args=(url, samba.password, i, rounds, barrier, results, plain))
        for i in range(RACERS)
    ]
    for p in procs:
        p.start()
    winners: list[list[int]] = []
    try:
        for r in range(rounds):
            payload = f"job {r} ".encode() * 10
            b.makedirs(f"jobs/j{r}")
            b.write_bytes(f"jobs/j{r}/payload", payload, fsync=False)
            barrier.wait(30)
            outcome = [results.get(timeout=30) for _ in range(RACERS)]
            won = sorted(me for (_, me, w) in outcome if w)
            winners.append(won)
            if not plain:
                assert len(won) == 1, f"round {r}: winners {won}"
                assert b.read_bytes(f"claimed/{r}-{won[0]}/payload", 1000) == payload
        if not plain:  # nothing left behind, nothing moved twice
            assert b.list("jobs") == []
            assert len(b.list("claimed")) == rounds
    finally:
        if any(p.is_alive() for p in procs):
            barrier.abort()
        for p in procs:
            p.join(30)
        b.close()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return winners


def test_exclusive_rename_race_4_processes_1000_rounds(samba: SambaServer, folder: str) -> None:
    """Four processes, each with its own connection and session, claim the same job folder at
    once, 1000 times: exactly one wins each time and the job is intact where it moved."""
    t0 = time.monotonic()
    winners = race(samba, folder, RACES)
    elapsed = time.monotonic() - t0
    assert all(len(w) == 1 for w in winners)
    # every racer wins sometimes: the race is real, not one process always first
    assert {w[0] for w in winners} == set(range(RACERS)), f"{elapsed:.1f} s"


def test_plain_smbclient_rename_is_not_exclusive(samba: SambaServer, folder: str) -> None:
    """Why the backend does not use ``smbclient.rename``: with the same harness, two racers
    both "win" some rounds (the second moves the already moved folder: its handle follows)."""
    winners = race(samba, folder, 100, plain=True)
    doubles = sum(1 for w in winners if len(w) > 1)
    assert doubles > 0, "no round with two winners: the harness did not make the racers overlap"


# ---------------------------------------------------------------- errors and semantics


def test_rename_and_replace_semantics(samba: SambaServer, folder: str) -> None:
    b = connect(samba, folder)
    b.write_bytes("a", b"1", fsync=True)
    with pytest.raises(NotFound):
        b.rename("a", "no/such/folder/a")  # the target's folder is missing
    b.makedirs("d")
    b.write_bytes("d/a", b"0", fsync=False)
    with pytest.raises(AlreadyExists):
        b.rename("a", "d/a")
    b.remove_file("d/a")
    b.rename("a", "d/a")  # the failed rename left no exclusive handle behind
    assert b.read_bytes("d/a", 10) == b"1"
    b.write_bytes("h", b"heartbeat 2", fsync=False)
    b.replace("h", "d/a")
    assert b.read_bytes("d/a", 100) == b"heartbeat 2"
    with pytest.raises(AlreadyExists):
        b.remove_dir("d")  # not empty (like local: ENOTEMPTY)
    b.close()


def test_rename_of_a_folder_with_a_file_open_elsewhere(
    samba: SambaServer, folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Samba refuses to rename a folder while a file inside is open on another connection; the
    backend retries briefly, so a claim does not fail because another device read the sidecar."""
    a, other = connect(samba, folder), connect(samba, folder)
    a.makedirs("job")
    a.write_bytes("job/job.json", b"{}", fsync=False)
    pauses: list[float] = []
    monkeypatch.setattr(smb, "sleep", pauses.append)  # no real waiting
    with other.open_read("job/job.json") as f:
        f.read()
        with pytest.raises(PermissionError, match="access denied"):
            a.rename("job", "claimed")  # held open for longer than the retries
    assert pauses == list(smb.BUSY_RETRY_SECONDS)
    with contextlib.ExitStack() as reading:
        reading.enter_context(other.open_read("job/job.json"))
        monkeypatch.setattr(smb, "sleep", lambda _: reading.close())  # the reader finishes
        a.rename("job", "claimed")
    assert a.read_bytes("claimed/job.json", 10) == b"{}"
    a.close()
    other.close()


def test_list_reports_kind_size_and_mtime(samba: SambaServer, folder: str) -> None:
    b = connect(samba, folder)
    before = time.time()
    b.write_bytes("f", b"12345", fsync=False)
    b.makedirs("sub")
    entries = {e.name: e for e in b.list("")}
    assert entries["f"].kind == "file" and entries["f"].size == 5
    assert entries["sub"].kind == "dir"
    assert abs(entries["f"].mtime - before) < 60
    st = b.stat("f")
    assert st is not None and st.name == "f" and abs(st.mtime - entries["f"].mtime) < 1
    b.close()


def test_reparse_points_are_links() -> None:
    assert _kind(0x20) == "file"
    assert _kind(0x10) == "dir"
    assert _kind(0x400 | 0x20) == "link"
    assert _kind(0x400 | 0x10) == "link"  # a junction or a folder symlink is still a link


def test_server_side_links_do_not_escape(samba: SambaServer, folder: str, tmp_path: Path) -> None:
    """A symlink made on the NAS that points out of the share is invisible over SMB (Samba's
    ``wide links = no``): it cannot be read through, and remove_tree cannot reach its target
    (the folder just does not empty)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    b = connect(samba, folder)
    b.makedirs("d")
    os.symlink(outside, samba.share_dir / folder / "d" / "escape")
    assert b.list("d") == []
    with pytest.raises(NotFound):
        b.read_bytes("d/escape/keep", 100)
    with pytest.raises(AlreadyExists):
        b.remove_tree("d")
    assert (outside / "keep").read_text() == "precious"
    (samba.share_dir / folder / "d" / "escape").unlink()
    b.remove_tree("d")
    b.close()


def test_paths_stay_inside_the_url_folder(samba: SambaServer, folder: str) -> None:
    b = connect(samba, folder)
    with pytest.raises(UnsafePath):
        b.write_bytes("../escaped", b"x", fsync=False)
    b.write_bytes("inside", b"x", fsync=False)
    assert (samba.share_dir / folder / "inside").read_bytes() == b"x"
    b.close()


def test_open_backend_picks_smb(samba: SambaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    b = open_backend(samba.url + "/via-open-backend")
    assert isinstance(b, SmbBackend) and b.local_root is None and not b.watchable
    b.makedirs("")
    assert b.list("") == []
    b.close()


def test_spool_protocol_over_smb(samba: SambaServer, folder: str) -> None:
    """Publish (uploaded from local scratch: no local root), claim by one of two devices, each
    on its own connection, load and finish."""
    a, b = Spool(connect(samba, folder)), Spool(connect(samba, folder))
    a.ensure_layout(["s"])
    job = "2024_0101_120000_x-abcdef"
    staging = a.staging("dev1", job)
    staging.path("data.bin").write_bytes(b"data" * 1000)
    sidecar = Sidecar(
        job=job, video_id="abcdef", source_name="x.MP4", stage="s", created_at=utcnow()
    )
    assert a.publish(staging, sidecar, "s")
    assert b.pending("s") == [job]
    assert b.backend.list(".tmp") == []
    claim = b.claim("s", job, "dev2")
    assert claim is not None and a.claim("s", job, "dev1") is None
    assert b.load(claim).files == ("data.bin",)
    assert b.backend.read_bytes(f"{claim.rel}/data.bin", 10_000) == b"data" * 1000
    b.finish(claim)
    assert [e.name for e in a.backend.list("s/done")] == [job]
    a.backend.close()
    b.backend.close()


# ---------------------------------------------------------------- credentials


def test_password_in_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as err:
        SmbBackend("smb://alice:hunter2secret@nas/share/spool")
    assert "hunter2secret" not in str(err.value)
    assert PASSWORD_ENV in str(err.value) and CREDENTIALS_ENV in str(err.value)


def test_url_parsing() -> None:
    loc = parse_url("smb://alice@nas.local:1445/media/dash%20cam/spool?connect_timeout_seconds=3")
    assert (loc.host, loc.port, loc.share, loc.folder) == (
        "nas.local",
        1445,
        "media",
        "dash cam\\spool",
    )
    assert loc.url == "smb://alice@nas.local:1445/media/dash%20cam/spool?connect_timeout_seconds=3"
    assert parse_url(loc.url) == loc
    assert parse_url("smb://nas/share").url == "smb://nas/share"
    for bad, why in [
        ("smb://nas", "no share"),
        ("smb://alice@nas/share/../x", "inside the share"),
        ("smb://alice@nas/share?speed=9", "unknown URL option"),
        ("smb://alice@nas:99999/share", "bad port"),
    ]:
        with pytest.raises(ConfigError, match=why):
            parse_url(bad)


def test_missing_password_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        SmbBackend("smb://alice@nas/share")
    with pytest.raises(ConfigError, match="no SMB user"):
        SmbBackend("smb://nas/share", password="x")


def test_credentials_file(
    samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "nas.cred"
    creds.write_text(f"username={samba.user}\npassword={samba.password}\n")
    creds.chmod(0o644)
    monkeypatch.setenv(CREDENTIALS_ENV, str(creds))
    url = f"smb://{samba.host}:{samba.port}/{samba.share}"
    with pytest.raises(ConfigError, match=f"chmod 600 {creds}") as err:
        SmbBackend(url)
    assert samba.password not in str(err.value)
    creds.chmod(0o600)
    b = SmbBackend(url)  # the user comes from the file too
    assert b.list("nope") == []
    b.close()
    with pytest.raises(ConfigError, match="names user 'bob'"):
        SmbBackend(f"smb://bob@{samba.host}:{samba.port}/{samba.share}")
    creds.write_text("user=x\ncolour=blue\n")
    with pytest.raises(ConfigError, match="line 2"):
        SmbBackend(url)


def test_credentials_file_domain_and_aliases(tmp_path: Path) -> None:
    creds = tmp_path / "nas.cred"
    creds.write_text("# the NAS\nuser=alice\npass= pass word \ndom=HOME\n")
    creds.chmod(0o600)
    got = load_credentials(
        parse_url("smb://nas/share"), password=None, env={CREDENTIALS_ENV: str(creds)}
    )
    assert (got.login, got.password) == ("HOME\\alice", " pass word ")
    assert " pass word " not in repr(got)


def test_credentials_never_leak(
    samba: SambaServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither the right nor a wrong password appears in url, repr, errors or any log line,
    smbprotocol's debug logging included."""
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + secrets.token_hex(8)
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    good = SmbBackend(samba.url)
    good.makedirs("leak-check")
    texts = [good.url, repr(good), str(vars(good))]
    good.close()
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    bad = SmbBackend(samba.url)
    with pytest.raises(ConfigError, match="refused the logon") as refused:
        bad.list("")
    texts += [bad.url, repr(bad), _chain_text(refused.value)]
    down = SmbBackend(f"smb://{samba.user}@127.0.0.1:{free_port()}/{samba.share}")
    with pytest.raises(StorageUnavailable) as unreachable:
        down.stat("x")
    texts.append(_chain_text(unreachable.value))
    texts += [r.getMessage() for r in caplog.records]
    texts.append(caplog.text)
    assert any("refused the logon" in t for t in texts)
    for t in texts:
        assert samba.password not in t
        assert wrong not in t


def _chain_text(err: BaseException | None) -> str:
    out = []
    while err is not None:
        out.append(f"{type(err).__name__}: {err} {err.args!r}")
        err = err.__cause__ or err.__context__
    return "\n".join(out)


# ---------------------------------------------------------------- server down


def test_unreachable_server_is_storage_unavailable_quickly(samba: SambaServer) -> None:
    """A closed port fails at once; a server that accepts but never answers fails after the
    connect timeout (here from the URL option)."""
    closed = SmbBackend(f"smb://{samba.user}@127.0.0.1:{free_port()}/{samba.share}", password="x")
    t0 = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"127\.0\.0\.1:\d+/spool"):
        closed.list("")
    assert time.monotonic() - t0 < 2
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mute = SmbBackend(
            f"smb://{samba.user}@127.0.0.1:{port}/{samba.share}?connect_timeout_seconds=1",
            password="x",
        )
        t0 = time.monotonic()
        with pytest.raises(StorageUnavailable):
            mute.stat("")
        assert time.monotonic() - t0 < 5
    # the half-made connection was closed, its reader thread with it
    assert not [t for t in threading.enumerate() if t.name.endswith(f":{port}")]


def test_server_restart_reconnects() -> None:
    """smbd stopped: StorageUnavailable; started again on the same port: the next call logs on
    again by itself."""
    with SambaServer() as server:
        b = connect(server)
        b.write_bytes("before", b"1", fsync=True)
        server.stop()
        with pytest.raises(StorageUnavailable, match="unavailable"):
            b.list("")
        with pytest.raises(StorageUnavailable):
            b.stat("before")  # refused while down
        server.start()
        assert b.read_bytes("before", 10) == b"1"
        b.write_bytes("after", b"2", fsync=True)
        assert sorted(e.name for e in b.list("")) == ["after", "before"]
        b.close()
