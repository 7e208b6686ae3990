"""``verify``: the ledger against hand-built archive and raw stores (real files, real SQLite), and
``--repair``, which only ever queues archive jobs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import chain_settings, write_settings
from sqlmodel import select
from test_cli import dashspool

from watchers import app, verify
from watchers.archiving import Alert
from watchers.catalog import ts
from watchers.config import Policies, load
from watchers.coordinator import Coordinator
from watchers.ledger import Ledger, Video
from watchers.sidecar import EventKind, Sidecar
from watchers.spool import Spool

T0 = datetime(2024, 3, 1, 2, 0, tzinfo=timezone.utc)
DAY = "2024/03/01"


@pytest.fixture
def policies(tmp_path: Path) -> Policies:
    """ingest -> archive, the archive stage typed ``archive``; written to policies.toml so the
    CLI sees the same settings."""
    data = chain_settings(("ingest", "archive"))
    data["stages"]["archive"]["type"] = "archive"
    return load(str(write_settings(tmp_path / "policies.toml", data)))


@pytest.fixture
def ledger(policies: Policies) -> Iterator[Ledger]:
    led = app.open_ledger(policies)
    yield led
    led.close()


@dataclass
class Clip:
    video: Video
    raw: Path
    copy: Path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archived(ledger: Ledger, policies: Policies, name: str, data: bytes) -> Clip:
    """A clip as ingest and archive leave it: the raw file, ``YYYY/MM/DD/<id>/`` in the archive
    with the byte-identical copy and meta.json, and its ``videos`` row."""
    digest = sha(data)
    vid = digest[:16]
    raw = policies.path(policies.stores.raw) / DAY / name
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(data)
    folder = policies.path(policies.stores.archive) / DAY / vid
    folder.mkdir(parents=True)
    (folder / name).write_bytes(data)
    meta = {"schema": 1, "video_id": vid, "sha256": digest, "source_name": name, "file": name}
    (folder / "meta.json").write_text(json.dumps(meta))
    video = Video(
        video_id=vid,
        job=f"2024_0301_020000_{name.split('.')[0]}-{vid[:6]}",
        source_name=name,
        state="archived",
        stage="archive",
        recorded_at="2024-03-01T02:00:00",
        created_at=ts(T0),
        updated_at=ts(T0),
        sha256=digest,
        size_bytes=len(data),
        raw_path=f"{DAY}/{name}",
        source_path=name,
        archive_path=f"{DAY}/{vid}/{name}",
        archive_sha256=digest,
        archived_at=ts(T0),
    )
    with ledger.transaction() as s:
        s.add(video)
    return Clip(video, raw, folder / name)


@pytest.fixture
def clips(ledger: Ledger, policies: Policies) -> list[Clip]:
    return [
        archived(ledger, policies, "clip1.MP4", b"first clip " * 1000),
        archived(ledger, policies, "clip2.MP4", b"second clip " * 1000),
    ]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def kinds(report: verify.Report) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.video_id) for f in report.findings)


# ------------------------------------------------------------------------------- checks
def test_a_good_archive_is_clean(policies: Policies, ledger: Ledger, clips: list[Clip]) -> None:
    # the archive stage's work in progress is skipped
    (clips[0].copy.parent.parent / f".{'f' * 16}.partial-dev1").mkdir()
    report = verify.verify(policies, ledger)
    assert report.findings == []
    assert report.ok
    assert dict(report.checked) == {"ledger": 1, "archived": 2, "hashed": 2, "folders": 2, "raw": 2}


def test_a_deleted_archive_copy_is_missing(
    policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    clips[0].copy.unlink()
    report = verify.verify(policies, ledger)
    assert [(f.kind, f.video_id, f.path) for f in report.findings] == [
        ("missing", clips[0].video.video_id, str(clips[0].copy))
    ]
    assert report.findings[0].repairable


def test_a_day_folder_that_links_out_of_the_archive_is_reported_not_followed(
    policies: Policies, ledger: Ledger, clips: list[Clip], tmp_path: Path
) -> None:
    """A link in the archive's tree that leads out of it: a finding, and verify goes on."""
    month = clips[0].copy.parents[2]  # archive/2024/03
    moved = tmp_path / "other-disk" / "01"
    moved.parent.mkdir()
    (month / "01").rename(moved)
    (month / "01").symlink_to(moved)
    report = verify.verify(policies, ledger)
    missing = [f for f in report.findings if f.kind == "missing"]
    assert {f.video_id for f in missing} == {c.video.video_id for c in clips}
    assert all("not checked" in f.detail and "symbolic link" in f.detail for f in missing)


def test_a_modified_archive_copy_is_a_mismatch(
    policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    data = bytearray(clips[1].copy.read_bytes())
    data[100] ^= 0xFF  # same size, other bytes
    clips[1].copy.write_bytes(bytes(data))
    report = verify.verify(policies, ledger)
    assert kinds(report) == [("mismatch", clips[1].video.video_id)]
    assert "sha256" in report.findings[0].detail
    assert verify.verify(policies, ledger, quick=True).ok, "--quick compares sizes only"

    clips[1].copy.write_bytes(bytes(data[:-1]))
    quick = verify.verify(policies, ledger, quick=True)
    assert kinds(quick) == [("mismatch", clips[1].video.video_id)]
    assert "bytes" in quick.findings[0].detail


def test_meta_json_missing_or_wrong(policies: Policies, ledger: Ledger, clips: list[Clip]) -> None:
    (clips[0].copy.parent / "meta.json").unlink()
    (clips[1].copy.parent / "meta.json").write_text(json.dumps({"video_id": "0" * 16}))
    report = verify.verify(policies, ledger)
    assert kinds(report) == sorted(
        [("missing", clips[0].video.video_id), ("mismatch", clips[1].video.video_id)]
    )


def test_orphans_and_strays_are_reported(
    policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    root = policies.path(policies.stores.archive)
    orphan = root / DAY / ("ab" * 8)
    orphan.mkdir()
    (orphan / "lost.MP4").write_bytes(b"x")
    (root / "2024" / "notes.txt").write_text("hi")
    report = verify.verify(policies, ledger)
    found = sorted((f.kind, f.path, f.video_id) for f in report.findings)
    assert found == [
        ("orphan", str(orphan), "ab" * 8),
        ("orphan", str(root / "2024" / "notes.txt"), None),
    ]
    assert not any(f.repairable for f in report.findings)


def test_a_lost_raw_clip_is_reported_unless_retention_deleted_it(
    policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    clips[0].raw.unlink()
    clips[1].raw.unlink()
    with ledger.transaction() as s:
        row = s.get(Video, clips[1].video.video_id)
        assert row is not None
        row.raw_deleted_at = ts(T0)
        s.add(row)
    report = verify.verify(policies, ledger)
    assert [(f.kind, f.path, f.video_id) for f in report.findings] == [
        ("raw-missing", str(clips[0].raw), clips[0].video.video_id)
    ]


def test_an_unmounted_archive_store_is_not_everything_missing(
    policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    root = policies.path(policies.stores.archive)
    root.rename(root.with_name("archive-elsewhere"))
    from watchers.errors import StorageUnavailable

    with pytest.raises(StorageUnavailable, match="not mounted"):
        verify.verify(policies, ledger)


def test_a_damaged_ledger_is_an_integrity_finding(policies: Policies, ledger: Ledger) -> None:
    for i in range(300):
        with ledger.transaction() as s:
            s.add(
                Video(
                    video_id=f"{i:06x}ab",
                    job=f"j-{i:06x}",
                    source_name="x.MP4",
                    state="done",
                    created_at=ts(T0),
                    updated_at=ts(T0),
                )
            )
    ledger.close()
    path = policies.ledger_path
    size, page = path.stat().st_size, 4096
    with open(path, "r+b") as f:
        f.seek(4 * page)
        f.write(b"\xab" * (size // 2))
    damaged = Ledger(path, read_only=True)
    try:
        report = verify.verify(policies, damaged)
    finally:
        damaged.close()
    assert [f.kind for f in report.findings] == ["integrity"]
    assert "dashspool restore" in report.findings[0].detail


# ------------------------------------------------------------------------------- repair
def spool_files(spool: Spool) -> set[str]:
    root = spool.backend.local_root
    assert root is not None
    return tree(root)


def test_repair_queues_one_archive_job_for_a_missing_copy_and_deletes_nothing(
    spool: Spool, policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    clips[0].copy.unlink()
    archive, raw = policies.path(policies.stores.archive), policies.path(policies.stores.raw)
    before = (tree(archive), tree(raw), spool_files(spool))
    report = verify.verify(policies, ledger)
    repairs = verify.repair(spool, policies, ledger, report, T0)
    vid = clips[0].video.video_id
    job = f"2024_0301_020000_clip1.repair1-{vid[:6]}"
    assert [(r.video_id, r.action, r.job) for r in repairs] == [(vid, "queued", job)]
    assert spool.pending("archive") == [job]
    sidecar = spool.read_sidecar_at(f"archive/inbox/{job}")
    assert (sidecar.video_id, sidecar.stage, sidecar.source_name) == (vid, "archive", "clip1.MP4")
    assert sidecar.refs == {"video": f"raw:{DAY}/clip1.MP4"}
    assert spool.resolve_ref(sidecar.refs["video"]) == clips[0].raw.resolve()
    ingest = sidecar.facts["ingest"]
    assert (ingest["kind"], ingest["sha256"]) == ("video", clips[0].video.sha256)
    assert ingest["time"]["local"] == "2024-03-01T02:00:00", "the same YYYY/MM/DD folder"
    (event_file,) = spool.event_files(10)
    event = spool.read_event(event_file)
    assert (event.kind, event.video_id, event.job) == (EventKind.JOB_REQUEUED, vid, job)

    after = (tree(archive), tree(raw), spool_files(spool))
    assert after[0] == before[0] and after[1] == before[1], "the stores are untouched"
    assert before[2] <= after[2], "nothing in the spool went away"
    assert after[2] - before[2] == {
        f"archive/inbox/{job}",
        f"archive/inbox/{job}/job.json",
        f"ledger/inbox/{event_file}",
    }

    again = verify.repair(spool, policies, ledger, verify.verify(policies, ledger), T0)
    assert [(r.action, r.job) for r in again] == [("already-queued", job)]
    assert spool.pending("archive") == [job] and len(spool.event_files(10)) == 1

    Coordinator(spool, policies, ledger).ingest(T0 + timedelta(seconds=1))
    row = ledger.find_video(vid)[0]
    assert (row.state, row.stage) == ("queued", "archive")


def test_repair_without_a_good_raw_clip_queues_nothing(
    spool: Spool, policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    clips[0].copy.unlink()
    clips[0].raw.unlink()
    clips[1].copy.write_bytes(b"damaged")
    clips[1].raw.write_bytes(b"also damaged")
    report = verify.verify(policies, ledger)
    repairs = verify.repair(spool, policies, ledger, report, T0)
    assert sorted((r.video_id, r.action) for r in repairs) == sorted(
        [(clips[0].video.video_id, "none"), (clips[1].video.video_id, "none")]
    )
    assert spool.pending("archive") == []
    assert spool.event_files(10) == []


def test_repair_reuses_the_finished_job_with_its_outputs(
    spool: Spool, policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    """The archive stage's finished job is still in archive/done/: its files (heavy's
    thumbnails) and facts go into the new job, which keeps what only heavy knew."""
    video = clips[1].video
    done = spool.backend.local_path(f"archive/done/{video.job}")
    assert done is not None
    done.mkdir(parents=True)
    (done / "track-0001.jpg").write_bytes(b"jpeg")
    old = Sidecar(
        job=video.job,
        video_id=video.video_id,
        source_name=video.source_name,
        stage="archive",
        created_at=T0,
        attempts=2,
        files=("track-0001.jpg", "plates.json"),  # plates.json was consumed: not copied
        refs={"video": f"raw:{video.raw_path}"},
        facts={"heavy": {"kind": "labels", "tracks": [{"score": 0.9}]}},
    )
    (done / "job.json").write_bytes(old.encode())
    clips[1].copy.write_bytes(b"damaged")

    (repair,) = verify.repair(spool, policies, ledger, verify.verify(policies, ledger), T0)
    assert repair.action == "queued" and repair.job is not None
    rel = f"archive/inbox/{repair.job}"
    new = spool.read_sidecar_at(rel)
    assert new.files == ("track-0001.jpg",)
    assert spool.backend.read_bytes(f"{rel}/track-0001.jpg", 100) == b"jpeg"
    assert new.facts == old.facts and new.attempts == 0
    assert (done / "job.json").is_file() and (done / "track-0001.jpg").is_file()


# ---------------------------------------------------------------------------------- CLI
def test_cli_exit_codes_json_and_the_alert(
    tmp_path: Path, spool: Spool, policies: Policies, ledger: Ledger, clips: list[Clip]
) -> None:
    base = ("--config", str(tmp_path / "policies.toml"))
    r = dashspool(*base, "verify", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no problems" in r.stdout

    clips[0].copy.unlink()
    r = dashspool(*base, "verify", "--repair", "--json", cwd=tmp_path)
    assert r.returncode == 6, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False
    assert [f["kind"] for f in data["findings"]] == ["missing"]
    assert [x["action"] for x in data["repairs"]] == ["queued"]
    with ledger.reading() as s:
        alerts = list(s.exec(select(Alert)))
    assert [(a.source, a.level) for a in alerts] == [("verify", "warning")]
    assert "1 missing" in alerts[0].message
