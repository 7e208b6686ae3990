"""The raw store and the archive as ``smb://`` URLs on a real Samba: ingest files clips there,
preprocess and archive read them back over SMB, the archive entry is built and verified there,
``dashspool verify`` and retention work on them, and ``check-config`` / ``status`` say what is
wrong when the server is away."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, dropped
from sambaserver import SambaServer, free_port
from test_archive import NAME, drive, settings
from test_watch import start_runner

from watchers import app, runstate, verify
from watchers.backends.smb import PASSWORD_ENV
from watchers.clock import utcnow
from watchers.config import load
from watchers.ledger import Video
from watchers.retention import sweep

pytestmark = pytest.mark.usefixtures("no_smb_env")


@pytest.fixture
def smb_stores(
    samba: SambaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """A folder of its own on the share for this test's stores: (URL, the folder on disk)."""
    monkeypatch.setenv(PASSWORD_ENV, samba.password)
    name = f"stores-{tmp_path.name}"
    yield f"{samba.url}/{name}", samba.share_dir / name


def smb_settings(url: str, **archive: Any) -> dict[str, Any]:
    data = settings(**archive)
    data["stores"] = {"raw": f"{url}/raw", "archive": f"{url}/archive"}
    return data


def test_clips_are_filed_and_archived_over_smb(
    smb_stores: tuple[str, Path], tmp_path: Path, samba: SambaServer
) -> None:
    url, on_disk = smb_stores
    clips = drive(tmp_path)
    original = hashlib.sha256(Path(clips[NAME]).read_bytes()).hexdigest()  # type: ignore[arg-type]
    p = dropped(tmp_path, smb_settings(url, preview={"mode": "always"}), clips)
    p.drain()
    (video,) = [v for v in p.coordinator.ledger.videos() if v.kind == "video"]
    assert video.state == "archived", video.last_error
    assert video.archive_sha256 == original

    raw = on_disk / "raw" / str(video.raw_path)
    assert hashlib.sha256(raw.read_bytes()).hexdigest() == original, "filed over SMB"
    assert (on_disk / "raw" / ".index" / original[:2] / f"{original}.json").is_file()
    assert not (tmp_path / "raw").exists() and not (tmp_path / "archive").exists()

    entry = on_disk / "archive" / str(video.archive_path).rsplit("/", 1)[0]
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [NAME, "meta.json", "poster.jpg", "preview.mp4", "track.gpx", "track.geojson"]
    )
    assert hashlib.sha256((entry / NAME).read_bytes()).hexdigest() == original
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["sha256"] == original and meta["track"]["points"] > 0
    assert not [x for x in entry.parent.iterdir() if x.name.startswith(".")], "no partial left"

    report = verify.verify(p.policies, p.coordinator.ledger)
    assert report.findings == [] and report.checked["hashed"] == 1
    assert samba.password not in json.dumps(report.as_dict())

    # a copy that rots on the NAS is found by verify, read over SMB
    data = bytearray((entry / NAME).read_bytes())
    data[len(data) // 2] ^= 0x01
    (entry / NAME).write_bytes(bytes(data))
    report = verify.verify(p.policies, p.coordinator.ledger)
    assert [f.kind for f in report.findings] == [verify.MISMATCH]
    assert report.findings[0].path.startswith(url + "/archive/")


def archived_over_smb(smb_stores: tuple[str, Path], tmp_path: Path) -> tuple[Any, Video, Path]:
    """One clip through the pipeline with both stores on the share (raw_days 1): the pipeline,
    the clip's ledger row, and the stores' folder on the server's disk."""
    url, on_disk = smb_stores
    cfg = smb_settings(url)
    cfg["retention"] = {"raw_days": 1}
    p = dropped(tmp_path, cfg, drive(tmp_path))
    p.drain()
    (video,) = [v for v in p.coordinator.ledger.videos() if v.kind == "video"]
    return p, video, on_disk


def test_retention_deletes_a_raw_clip_over_smb_only_after_hashing_the_archive_copy(
    smb_stores: tuple[str, Path], tmp_path: Path
) -> None:
    p, video, on_disk = archived_over_smb(smb_stores, tmp_path)
    raw = on_disk / "raw" / str(video.raw_path)
    assert raw.is_file()
    later = utcnow() + timedelta(days=3)
    result = sweep(p.spool, p.policies, p.coordinator.ledger, later, allow_mass_delete=True)
    assert [i.video_id for i in result.deleted] == [video.video_id], result.failed
    assert not raw.exists(), "deleted over SMB"
    with p.coordinator.ledger.reading() as s:
        row = s.get(Video, video.video_id)
        assert row is not None and row.raw_deleted_at is not None
    archived = on_disk / "archive" / str(video.archive_path)
    assert archived.is_file(), "the archive copy stays"


def test_a_rotted_archive_copy_keeps_the_raw_clip_over_smb(
    smb_stores: tuple[str, Path], tmp_path: Path
) -> None:
    p, video, on_disk = archived_over_smb(smb_stores, tmp_path)
    archived = on_disk / "archive" / str(video.archive_path)
    data = bytearray(archived.read_bytes())
    data[100] ^= 0xFF
    archived.write_bytes(bytes(data))
    later = utcnow() + timedelta(days=3)
    result = sweep(p.spool, p.policies, p.coordinator.ledger, later, allow_mass_delete=True)
    assert result.deleted == [] and len(result.failed) == 1
    assert "does not hash" in result.failed[0][1]
    assert (on_disk / "raw" / str(video.raw_path)).is_file()


def _cli(tmp_path: Path, cfg: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, PASSWORD_ENV: password, "PYTHONPATH": str(REPO)}
    env[runstate.RUN_DIR_ENV] = str(tmp_path / "run")
    return subprocess.run(
        [sys.executable, "-m", "watchers.cli", "--config", str(cfg), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_config_reaches_the_store_shares_and_names_a_missing_one(
    samba: SambaServer, tmp_path: Path
) -> None:
    cfg = tmp_path / "policies.toml"
    good = f"{samba.url}/cfg-stores"
    bad = f"smb://{samba.user}@{samba.host}:{samba.port}/nosuchshare/archive"
    cfg.write_text(f'[stores]\nraw = "{good}/raw"\narchive = "{good}/archive"\n')
    r = _cli(tmp_path, cfg, "check-config", "--json", password=samba.password)
    assert r.returncode == 0, r.stdout + r.stderr
    checks = {c["what"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["stores.raw"]["ok"] and checks["stores.raw"]["where"] == f"{good}/raw"
    assert (samba.share_dir / "cfg-stores" / "archive").is_dir()

    cfg.write_text(f'[stores]\nraw = "{good}/raw"\narchive = "{bad}"\n')
    r = _cli(tmp_path, cfg, "check-config", "--json", password=samba.password)
    assert r.returncode == 3, r.stdout + r.stderr
    checks = {c["what"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["stores.raw"]["ok"]
    assert "no such share" in checks["stores.archive"]["problem"]
    assert samba.password not in r.stdout + r.stderr


def test_status_shows_this_machines_watcher_waiting_for_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool's server goes away: status cannot read the spool (exit 5) but shows the
    watcher on this machine as waiting for storage, from its local heartbeat copy."""
    with SambaServer() as server:
        monkeypatch.setenv(PASSWORD_ENV, server.password)
        monkeypatch.setenv(runstate.RUN_DIR_ENV, str(tmp_path / "run"))
        cfg = tmp_path / "policies.toml"
        cfg.write_text(
            f'[spool]\npath = "{server.url}/spool"\nrescan_seconds = 0.2\n'
            'heartbeat_seconds = 0.2\n[stages.ingest]\ntype = "copy"\n'
        )
        p = load(str(cfg))
        spool = app.open_spool(p)
        spool.ensure_layout(p.order())
        runner, thread = start_runner(spool, p)
        try:
            deadline = utcnow() + timedelta(seconds=60)
            while utcnow() < deadline and runner.state != "running":
                threading.Event().wait(0.05)
            assert runner.state == "running"
            server.stop()
            rec: dict[str, Any] = {}
            deadline = utcnow() + timedelta(seconds=60)
            while utcnow() < deadline:
                recs = runstate.read_all(spool.backend.url)
                rec = recs[0] if recs else {}
                if rec.get("state") == "waiting-for-storage":
                    break
                threading.Event().wait(0.1)
            assert rec.get("state") == "waiting-for-storage", rec
            r = _cli(tmp_path, cfg, "status", "--json", password=server.password)
            assert r.returncode == 5, r.stdout + r.stderr
            data = json.loads(r.stdout)
            assert data["reachable"] is False and data["stages"] == {}
            (dev,) = data["devices"]
            assert dev["device_id"] == "dev1" and dev["state"] == "waiting-for-storage"
            assert "storage unavailable" in r.stderr
            r = _cli(tmp_path, cfg, "status", password=server.password)
            assert r.returncode == 5, r.stdout + r.stderr
            assert "UNREACHABLE" in r.stdout and "waiting-for-storage" in r.stdout
            assert server.password not in r.stdout + r.stderr
        finally:
            runner.request_stop()
            thread.join(timeout=30)


def test_an_archive_nas_that_is_away_defers_the_job_without_counting_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool answers but the archive's server does not: the job waits in deferred/ with
    its attempts unchanged (a NAS reboot must not use up max_attempts and fail good clips)."""
    monkeypatch.setenv(PASSWORD_ENV, "secret-pw")
    cfg = settings()
    cfg["stores"] = {"archive": f"smb://nobody@127.0.0.1:{free_port()}/share/archive"}
    cfg["retry"].update(max_attempts=1, defer_initial_seconds=3600, defer_max_seconds=3600)
    p = dropped(tmp_path, cfg, drive(tmp_path))
    p.drain()
    (deferred,) = (tmp_path / "spool/archive/deferred").iterdir()
    sidecar = json.loads((deferred / "job.json").read_text())
    assert sidecar["attempts"] == 0, "the outage was counted as an attempt"
    assert "unavailable" in sidecar["last_error"]
    assert "secret-pw" not in sidecar["last_error"]
    assert not list((tmp_path / "spool/archive/failed").iterdir())


def test_two_stored_files_of_one_name_are_fetched_apart(
    smb_stores: tuple[str, Path], tmp_path: Path
) -> None:
    """GPX tracks of two days may share a name: a fetched copy is kept per path."""
    from watchers.backends import open_backend
    from watchers.stores import Store

    url, _ = smb_stores
    store = Store("raw", open_backend(f"{url}/raw"))
    try:
        store.backend.makedirs("tracks/a")
        store.backend.makedirs("tracks/b")
        store.backend.write_bytes("tracks/a/t.gpx", b"day a", fsync=False)
        store.backend.write_bytes("tracks/b/t.gpx", b"day b", fsync=False)
        first = store.fetch("tracks/a/t.gpx", tmp_path / "scratch")
        second = store.fetch("tracks/b/t.gpx", tmp_path / "scratch")
        assert (first.name, second.name) == ("t.gpx", "t.gpx")
        assert (first.read_bytes(), second.read_bytes()) == (b"day a", b"day b")
        assert store.fetch("tracks/a/t.gpx", tmp_path / "scratch") == first, "reused"
    finally:
        store.backend.close()


def test_storage_trouble_while_every_store_answers_counts_as_an_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file's trouble reported as StorageUnavailable (EIO on a bad sector) while the spool
    and the stores answer: the job's attempts count, so it ends in failed/, not deferred for
    ever."""
    from stages.archive import ArchiveStage
    from watchers.errors import StorageUnavailable

    def bad_sector(self: Any, job: Any, ctx: Any) -> None:
        raise StorageUnavailable("clip.MP4: storage unavailable (Input/output error)")

    monkeypatch.setattr(ArchiveStage, "process", bad_sector)
    cfg = settings()
    cfg["retry"].update(max_attempts=1, defer_initial_seconds=3600, defer_max_seconds=3600)
    p = dropped(tmp_path, cfg, drive(tmp_path))
    p.drain()
    assert not list((tmp_path / "spool/archive/deferred").iterdir())
    (failed,) = (tmp_path / "spool/archive/failed").glob("*.error.json")
    assert "Input/output error" in failed.read_text()
