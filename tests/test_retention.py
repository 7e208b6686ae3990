"""Retention (watchers/retention.py): what goes when, what never goes, the free-space and sanity
guards, dry runs that change nothing, a ledger row for every deletion, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from conftest import chain_settings, write_settings
from sqlmodel import select

from watchers import app
from watchers.archiving import Alert, Deletion
from watchers.catalog import ts
from watchers.config import Policies, parse
from watchers.ledger import Ledger, Video
from watchers.retention import DiskUsage, SweepResult, sweep
from watchers.sidecar import HistoryEntry, Sidecar
from watchers.spool import Spool

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
STAGES = ("ingest", "preprocess", "heavy", "archive")
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "status.schema.json"


# --------------------------------------------------------------------------------- set-up
class World:
    """A spool, its raw and archive stores and a real ledger, all under ``tmp_path``."""

    def __init__(self, root: Path, **retention: Any) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.policies: Policies = parse(
            chain_settings(STAGES, retention=retention), source=None, base_dir=root
        )
        self.spool: Spool = app.open_spool(self.policies)
        self.spool.ensure_layout(self.policies.order())
        self.raw = self.spool.roots["raw"]
        self.archive = self.spool.roots["archive"]
        self.raw.mkdir()
        self.archive.mkdir()
        self.ledger = Ledger(self.policies.ledger_path)

    # raw clips ---------------------------------------------------------------------
    def clip(
        self,
        name: str,
        days: float,
        *,
        archived: bool = True,
        hash_ok: bool = True,
        locked: bool = False,
        mode: str = "normal",
        size: int = 1000,
    ) -> str:
        """A clip the ledger first saw ``days`` before NOW, its raw file and (if archived) its
        archive copy. Returns its video id."""
        data = (name.encode() + b"v" * size)[:size]  # content of its own, hashing to its id
        vid = hashlib.sha256(data).hexdigest()
        rel = f"2026/01/01/{name}"
        (self.raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (self.raw / rel).write_bytes(data)
        archive_rel = f"2026/01/01/{vid}/{name}"
        if archived:
            (self.archive / archive_rel).parent.mkdir(parents=True, exist_ok=True)
            (self.archive / archive_rel).write_bytes(data)
        seen = ts(NOW - timedelta(days=days))
        with self.ledger.transaction() as s:
            s.add(
                Video(
                    video_id=vid,
                    job=f"2026_0101_120000_{name.split('.')[0]}-{vid[:6]}",
                    source_name=name,
                    state="archived" if archived else "done",
                    created_at=seen,
                    updated_at=seen,
                    sha256=vid,
                    size_bytes=size,
                    raw_path=rel,
                    mode=mode,
                    locked=int(locked),
                    archive_path=archive_rel if archived else None,
                    archive_sha256=(vid if hash_ok else "0" * 64) if archived else None,
                    archived_at=seen if archived else None,
                )
            )
        return vid

    def raw_file(self, name: str) -> Path:
        return self.raw / "2026/01/01" / name

    def video(self, vid: str) -> Video:
        with self.ledger.reading() as s:
            v = s.get(Video, vid)
        assert v is not None
        return v

    # spool jobs --------------------------------------------------------------------
    def job(
        self,
        where: str,
        name: str,
        *,
        producer: str | None,
        days: float,
        size: int = 300,
    ) -> str:
        """A job folder at ``where`` (``<stage>/<queue>``) made by ``producer`` ``days`` before
        NOW (no producer: no history, and the folder's mtime says when). Returns its path."""
        vid = hashlib.sha256(name.encode()).hexdigest()
        job = f"2026_0101_120000_{name}-{vid[:6]}"
        rel = f"{where}/{job}"
        when = NOW - timedelta(days=days)
        history = (
            ()
            if producer is None
            else (
                HistoryEntry(
                    stage=producer,
                    device="d1",
                    finished_at=when - timedelta(hours=1),
                    duration_seconds=1.0,
                ),
                HistoryEntry(stage=producer, device="d1", finished_at=when, duration_seconds=1.0),
            )
        )
        sidecar = Sidecar(
            job=job,
            video_id=vid,
            source_name=f"{name}.MP4",
            stage=where.split("/")[0],
            created_at=when - timedelta(days=1),
            files=("payload.bin",),
            history=history,
        )
        self.spool.backend.makedirs(rel)
        self.spool.backend.write_bytes(f"{rel}/payload.bin", b"p" * size, fsync=False)
        self.spool.write_sidecar_at(rel, sidecar)
        folder = self.root / "spool" / rel
        stamp = when.timestamp()
        os.utime(folder, (stamp, stamp))
        return rel

    def exists(self, rel: str) -> bool:
        return (self.root / "spool" / rel).exists()

    # ledger rows -------------------------------------------------------------------
    def deletions(self) -> list[Deletion]:
        with self.ledger.reading() as s:
            return list(s.exec(select(Deletion)).all())

    def alerts(self) -> list[Alert]:
        with self.ledger.reading() as s:
            return list(s.exec(select(Alert)).all())

    def sweep(self, **kwargs: Any) -> SweepResult:
        return sweep(self.spool, self.policies, self.ledger, NOW, **kwargs)

    def usage(self, raw: float = 50.0, archive: float = 50.0) -> DiskUsage:
        """A disk_usage that reports ``raw``/``archive`` percent free of 100 000 bytes."""
        table = {self.raw.resolve(): raw, self.archive.resolve(): archive}

        def disk_usage(path: Path) -> tuple[int, int, int]:
            free = int(table[Path(path).resolve()] * 1000)
            return 100_000, 100_000 - free, free

        return disk_usage


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(**retention: Any) -> World:
        w = World(tmp_path, **retention)
        made.append(w)
        return w

    yield make
    for w in made:
        w.ledger.close()


def paths(result_items: Any) -> set[str]:
    return {p.path for p in result_items}


# ------------------------------------------------------------------------------ raw clips
def test_raw_clips_go_only_archived_verified_and_older_than_raw_days(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    old = w.clip("old.MP4", 91)
    young = w.clip("young.MP4", 89)
    w.clip("never-archived.MP4", 2000, archived=False)  # ancient, but not archived
    w.clip("mismatch.MP4", 200, hash_ok=False)  # the archive holds something else
    for i in range(4):  # enough clips that the sanity guard stays quiet
        w.clip(f"recent{i}.MP4", 5)

    result = w.sweep(disk_usage=w.usage())

    assert paths(result.deleted) == {"2026/01/01/old.MP4"}
    assert not w.raw_file("old.MP4").exists()
    for kept in ("young.MP4", "never-archived.MP4", "mismatch.MP4"):
        assert w.raw_file(kept).exists(), kept
    (row,) = w.deletions()
    assert (row.store, row.path, row.video_id, row.bytes) == (
        "raw",
        "2026/01/01/old.MP4",
        old,
        1000,
    )
    assert "91 days old (raw_days 90)" in row.reason and "archived and verified" in row.reason
    assert w.video(old).raw_deleted_at == ts(NOW)
    assert w.video(young).raw_deleted_at is None
    assert result.kept["raw: not archived"] == 1
    assert result.kept["raw: archive hash differs from the clip's"] == 1
    assert result.kept["raw: younger than raw_days"] == 5  # young and the four recent ones
    # the archive copy is never touched
    assert (w.archive / f"2026/01/01/{old}/old.MP4").exists()
    # a second sweep finds nothing more to do
    assert w.sweep(disk_usage=w.usage()).deleted == []


def test_raw_days_comes_from_the_settings(make_world: Callable[..., World]) -> None:
    w = make_world(raw_days=10)
    for i in range(3):
        w.clip(f"c{i}.MP4", 5)
    w.clip("eleven.MP4", 11)
    result = w.sweep(disk_usage=w.usage())
    assert paths(result.deleted) == {"2026/01/01/eleven.MP4"}
    assert "(raw_days 10)" in result.deleted[0].reason


@pytest.mark.parametrize(("locked", "mode"), [(True, "normal"), (False, "event")])
def test_locked_and_event_clips_stay_unless_delete_locked(
    make_world: Callable[..., World], locked: bool, mode: str
) -> None:
    w = make_world()
    w.clip("kept.MP4", 400, locked=locked, mode=mode)
    w.clip("parking.MP4", 400, mode="parking")  # parking mode is not protected
    for i in range(3):
        w.clip(f"r{i}.MP4", 1)
    result = w.sweep(disk_usage=w.usage())
    assert paths(result.deleted) == {"2026/01/01/parking.MP4"}
    assert w.raw_file("kept.MP4").exists()
    assert result.kept["raw: locked or event clip"] == 1

    w2 = World(w.root / "again", delete_locked=True)
    try:
        w2.clip("kept.MP4", 400, locked=locked, mode=mode)
        for i in range(3):
            w2.clip(f"r{i}.MP4", 1)
        assert paths(w2.sweep(disk_usage=w2.usage()).deleted) == {"2026/01/01/kept.MP4"}
    finally:
        w2.ledger.close()


def test_missing_archive_copy_keeps_the_clip_and_alerts(make_world: Callable[..., World]) -> None:
    w = make_world()
    vid = w.clip("gone.MP4", 400)
    (w.archive / f"2026/01/01/{vid}/gone.MP4").unlink()
    vid2 = w.clip("short.MP4", 400)
    (w.archive / f"2026/01/01/{vid2}/short.MP4").write_bytes(b"v" * 10)  # truncated copy
    for i in range(3):
        w.clip(f"r{i}.MP4", 1)
    result = w.sweep(disk_usage=w.usage())
    assert result.deleted == []
    assert w.raw_file("gone.MP4").exists() and w.raw_file("short.MP4").exists()
    assert result.kept["raw: no archive copy"] == 2
    (alert,) = w.alerts()
    assert (alert.level, alert.source) == ("critical", "retention:archive")
    assert "2 clips" in alert.message


def test_a_copy_that_rotted_since_it_was_archived_keeps_the_raw_clip(
    make_world: Callable[..., World],
) -> None:
    """Same size, other bytes (bit rot, a bad sector): the ledger still says archived, but the
    copy is hashed again right before the raw clip would go, and the raw clip stays."""
    w = make_world()
    vid = w.clip("rotted.MP4", 400)
    good = w.clip("good.MP4", 400)
    for i in range(3):
        w.clip(f"r{i}.MP4", 1)
    copy = w.archive / f"2026/01/01/{vid}/rotted.MP4"
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    result = w.sweep(disk_usage=w.usage())
    assert [d.video_id for d in w.deletions()] == [good]
    assert w.raw_file("rotted.MP4").exists() and not w.raw_file("good.MP4").exists()
    ((item, why),) = result.failed
    assert item.video_id == vid and "does not hash to the clip's sha256" in why
    assert w.video(vid).raw_deleted_at is None


def test_raw_paths_that_leave_the_store_are_never_followed(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    w = make_world()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.MP4").write_bytes(b"v" * 1000)
    # a link as the clip, a linked folder on the way, and a path with ..
    w.clip("link.MP4", 400)
    w.raw_file("link.MP4").unlink()
    w.raw_file("link.MP4").symlink_to(outside / "victim.MP4")
    via = w.clip("via-folder.MP4", 400)
    (w.raw / "2027").symlink_to(outside)
    (outside / "via-folder.MP4").write_bytes(b"v" * 1000)
    dotdot = w.clip("dotdot.MP4", 400)
    with w.ledger.transaction() as s:
        for vid, rel in ((via, "2027/via-folder.MP4"), (dotdot, "../x")):
            v = s.get(Video, vid)
            assert v is not None
            v.raw_path = rel
            s.add(v)
    for i in range(4):
        w.clip(f"r{i}.MP4", 1)

    result = w.sweep(disk_usage=w.usage())

    assert result.deleted == []
    assert (outside / "victim.MP4").exists() and (outside / "via-folder.MP4").exists()
    assert w.raw_file("link.MP4").is_symlink()
    assert result.kept["raw: raw file missing or not a plain file"] == 1
    assert result.kept["raw: raw path not inside the raw store"] == 2


# ----------------------------------------------------------------------------- spool jobs
def test_done_jobs_go_by_the_stage_that_made_them(make_world: Callable[..., World]) -> None:
    w = make_world(max_sweep_fraction=1.0)  # this test is about ages, not the sanity guard
    by_ingest = w.job("preprocess/done", "a", producer="ingest", days=31)  # ingest: 30
    young_pre = w.job("heavy/done", "b", producer="preprocess", days=29)  # preprocess: 30
    by_heavy = w.job("archive/done", "c", producer="heavy", days=8)  # heavy: 7
    young_heavy = w.job("archive/done", "d", producer="heavy", days=6)
    by_other = w.job("archive/done", "e", producer="custom", days=31)  # done_days_default 30
    no_history = w.job("ingest/done", "f", producer=None, days=40)  # folder mtime, default
    young_no_history = w.job("ingest/done", "g", producer=None, days=20)
    untouchable = [
        w.job(
            f"{stage}/{queue}", f"{stage}-{queue.replace('/', '-')}", producer="ingest", days=1000
        )
        for stage, queue in (
            ("ingest", "failed"),
            ("preprocess", "deferred"),
            ("heavy", "inbox"),
            ("archive", "work/d1"),
        )
    ]
    (w.root / "spool/inbox/rejected/old.MP4").write_bytes(b"x")
    os.utime(w.root / "spool/inbox/rejected/old.MP4", (0, 0))
    stray = w.root / "spool/archive/done/notes.txt"  # not a job folder: left alone
    stray.write_bytes(b"x")
    os.utime(stray, (0, 0))
    garbled = w.job("heavy/done", "garbled", producer="preprocess", days=1)
    (w.root / "spool" / garbled / "job.json").write_bytes(b"{not json")
    os.utime(w.root / "spool" / garbled, (0, 0))  # untrusted: the folder's age, the default

    result = w.sweep(disk_usage=w.usage())

    gone = {by_ingest, by_heavy, by_other, no_history, garbled}
    assert paths(result.deleted) == gone
    for rel in gone:
        assert not w.exists(rel), rel
    for rel in (young_pre, young_heavy, young_no_history, *untouchable):
        assert w.exists(rel), rel
    assert stray.exists() and result.kept["spool: not a job folder"] == 1
    assert (w.root / "spool/inbox/rejected/old.MP4").exists()
    reasons = {d.path: d for d in w.deletions()}
    assert set(reasons) == gone
    assert "made by ingest" in reasons[by_ingest].reason
    assert "(done_days.ingest 30)" in reasons[by_ingest].reason
    assert "(done_days.heavy 7)" in reasons[by_heavy].reason
    assert "(done_days_default 30)" in reasons[by_other].reason
    assert "folder last changed 40 days ago (done_days_default 30)" in reasons[no_history].reason
    assert "job.json unreadable" in reasons[garbled].reason
    assert "(done_days_default 30)" in reasons[garbled].reason
    assert reasons[garbled].video_id is None
    assert all(d.store == "spool" for d in reasons.values())
    assert reasons[by_heavy].video_id == hashlib.sha256(b"c").hexdigest()
    size = reasons[by_heavy].bytes
    assert size is not None and size > 300  # the payload and job.json
    assert result.kept["spool: younger than its done_days"] == 3


def test_done_days_per_stage_from_the_settings(make_world: Callable[..., World]) -> None:
    w = make_world(done_days={"heavy": 2}, done_days_default=100, max_sweep_fraction=1.0)
    by_heavy = w.job("archive/done", "c", producer="heavy", days=3)
    by_ingest = w.job("preprocess/done", "a", producer="ingest", days=50)  # now the default
    assert paths(w.sweep(disk_usage=w.usage()).deleted) == {by_heavy}
    assert w.exists(by_ingest)


# ---------------------------------------------------------------------------------- guards
def test_sanity_guard_blocks_a_store_and_alerts_until_allowed(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    for i in range(3):
        w.clip(f"old{i}.MP4", 400)
    w.clip("new.MP4", 1)
    due_job = w.job("archive/done", "due", producer="heavy", days=30)
    for i in range(2):
        w.job("archive/done", f"fresh{i}", producer="heavy", days=1)

    result = w.sweep(disk_usage=w.usage())

    assert set(result.blocked) == {"raw"}  # 3 of 4 raw clips; 1 of 3 jobs is fine
    assert paths(result.deleted) == {due_job}
    for i in range(3):
        assert w.raw_file(f"old{i}.MP4").exists()
    assert {d.store for d in w.deletions()} == {"spool"}
    (alert,) = w.alerts()
    assert (alert.level, alert.source) == ("critical", "retention:raw")
    assert "3 of 4 raw clips (75%)" in alert.message
    assert "--allow-mass-delete" in alert.message
    assert result.kept["blocked by the sanity guard"] == 3

    again = w.sweep(disk_usage=w.usage(), allow_mass_delete=True)
    assert not again.blocked
    assert paths(again.deleted) == {f"2026/01/01/old{i}.MP4" for i in range(3)}
    assert w.raw_file("new.MP4").exists()
    assert len(w.alerts()) == 1  # no new alert


def test_sanity_guard_on_the_spool(make_world: Callable[..., World]) -> None:
    w = make_world(max_sweep_fraction=0.25)
    jobs = [w.job("preprocess/done", f"j{i}", producer="ingest", days=40) for i in range(2)]
    w.job("preprocess/done", "young", producer="ingest", days=1)
    w.job("heavy/done", "young2", producer="preprocess", days=1)
    result = w.sweep(disk_usage=w.usage())  # 2 of 4 > 0.25
    assert set(result.blocked) == {"spool"} and result.deleted == []
    assert all(w.exists(j) for j in jobs)
    (alert,) = w.alerts()
    assert alert.source == "retention:spool" and "2 of 4" in alert.message


def test_low_raw_space_deletes_the_oldest_archived_clips_until_enough(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    due = w.clip("due.MP4", 100)  # goes anyway: frees 1000 of the 2000 needed
    ages = {"c50.MP4": 50, "c40.MP4": 40, "c30.MP4": 30, "c20.MP4": 20, "c10.MP4": 10}
    for name, days in ages.items():
        w.clip(name, days)
    w.clip("unarchived.MP4", 500, archived=False)
    w.clip("locked.MP4", 60, locked=True)

    # 8% free of 100 000 bytes; 10% wanted: 2000 bytes short
    result = w.sweep(disk_usage=w.usage(raw=8.0))

    assert paths(result.deleted) == {"2026/01/01/due.MP4", "2026/01/01/c50.MP4"}
    for name in ("c40.MP4", "c30.MP4", "c20.MP4", "c10.MP4", "unarchived.MP4", "locked.MP4"):
        assert w.raw_file(name).exists(), name
    reasons = {d.path: d.reason for d in w.deletions()}
    assert "raw store 8.0% free (raw_min_free_percent 10)" in reasons["2026/01/01/c50.MP4"]
    assert w.video(due).raw_deleted_at == ts(NOW)
    (alert,) = w.alerts()
    assert (alert.level, alert.source) == ("warning", "retention:raw")
    assert "8.0% free" in alert.message and "1 archived clips" in alert.message


def test_low_raw_space_never_reaches_unarchived_or_locked_clips(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    w.clip("a.MP4", 20)
    for i in range(4):
        w.clip(f"u{i}.MP4", 500, archived=False)
    w.clip("locked.MP4", 60, locked=True)
    result = w.sweep(disk_usage=w.usage(raw=1.0))  # 9000 bytes short: far more than there is
    assert paths(result.deleted) == {"2026/01/01/a.MP4"}
    for name in ("u0.MP4", "u3.MP4", "locked.MP4"):
        assert w.raw_file(name).exists()
    (alert,) = w.alerts()
    assert "short" in alert.message


def test_low_archive_space_is_a_critical_alert_and_deletes_nothing(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    vid = w.clip("young.MP4", 10)
    copy = w.archive / f"2026/01/01/{vid}/young.MP4"
    result = w.sweep(disk_usage=w.usage(archive=2.0))
    assert result.deleted == [] and w.deletions() == []
    assert copy.exists() and w.raw_file("young.MP4").exists()
    (alert,) = w.alerts()
    assert (alert.level, alert.source) == ("critical", "retention:archive")
    assert "2.0% free" in alert.message and "archive_min_free_percent 5" in alert.message


# ------------------------------------------------------------------ dry run, ledger rows
def _snapshot(w: World) -> tuple[list[tuple[str, int, int]], list[str]]:
    files = sorted(
        (str(p.relative_to(w.root)), p.lstat().st_size, p.lstat().st_mtime_ns)
        for top in (w.raw, w.archive, w.root / "spool")
        for p in top.rglob("*")
    )
    con = sqlite3.connect(w.policies.ledger_path)
    try:
        dump = list(con.iterdump())
    finally:
        con.close()
    return files, dump


def test_dry_run_changes_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    for i in range(3):
        w.clip(f"old{i}.MP4", 200)
    for i in range(3):
        w.clip(f"new{i}.MP4", 3)
    w.job("archive/done", "c", producer="heavy", days=8)
    w.job("archive/done", "d", producer="heavy", days=1)
    before = _snapshot(w)

    result = w.sweep(dry_run=True, disk_usage=w.usage(raw=8.0, archive=1.0))

    assert result.dry_run and result.deleted == []
    assert [p.store for p in result.planned].count("raw") == 3
    assert [p.store for p in result.planned].count("spool") == 1
    assert {a.source for a in result.alerts} == {"retention:raw", "retention:archive"}
    assert _snapshot(w) == before
    assert w.deletions() == [] and w.alerts() == []


def test_dry_run_reports_a_blocked_store_without_recording_it(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    for i in range(2):
        w.clip(f"old{i}.MP4", 200)
    result = w.sweep(dry_run=True, disk_usage=w.usage())
    assert set(result.blocked) == {"raw"} and result.planned == []
    assert any(a.level == "critical" for a in result.alerts)
    assert w.alerts() == []


def test_every_deletion_is_a_ledger_row(make_world: Callable[..., World]) -> None:
    w = make_world()
    for i in range(3):
        w.clip(f"old{i}.MP4", 120, size=1000 + i)
    for i in range(4):
        w.clip(f"new{i}.MP4", 1)
    jobs = [w.job("preprocess/done", f"j{i}", producer="ingest", days=45) for i in range(2)]
    for i in range(3):
        w.job("heavy/done", f"k{i}", producer="preprocess", days=2)
    before = {str(p.relative_to(w.raw)) for p in w.raw.rglob("*.MP4")}

    result = w.sweep(disk_usage=w.usage())

    after = {str(p.relative_to(w.raw)) for p in w.raw.rglob("*.MP4")}
    rows = {(d.store, d.path): d for d in w.deletions()}
    vanished = {("raw", p) for p in before - after} | {("spool", j) for j in jobs}
    assert set(rows) == vanished == {(p.store, p.path) for p in result.deleted}
    assert len(rows) == 5
    for i in range(3):
        assert rows[("raw", f"2026/01/01/old{i}.MP4")].bytes == 1000 + i
    assert all(d.at == ts(NOW) and d.reason for d in rows.values())
    with w.ledger.reading() as s:
        marked = {v.raw_path for v in s.exec(select(Video)).all() if v.raw_deleted_at}
    assert marked == {p for store, p in vanished if store == "raw"}


def test_a_file_that_vanished_after_planning_is_a_failure_not_a_row(
    make_world: Callable[..., World],
) -> None:
    w = make_world()
    vid = w.clip("old.MP4", 200)
    for i in range(3):
        w.clip(f"n{i}.MP4", 1)
    usage = w.usage()

    def usage_then_lose(path: Path) -> tuple[int, int, int]:
        # asked after the plan is made: someone removes the clip meanwhile
        w.raw_file("old.MP4").unlink(missing_ok=True)
        return usage(path)

    result = w.sweep(disk_usage=usage_then_lose)
    assert paths(result.planned) == {"2026/01/01/old.MP4"}
    assert result.deleted == [] and [p.path for p, _ in result.failed] == ["2026/01/01/old.MP4"]
    assert w.deletions() == []
    assert w.video(vid).raw_deleted_at is None


# -------------------------------------------------------------------------------------- CLI
def dashspool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSPOOL_")}
    env.update({"HOME": str(cwd), "COLUMNS": "250"})
    return subprocess.run(
        [sys.executable, "-m", "watchers.cli", "--config", str(cwd / "policies.toml"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_retention_dry_run_then_blocked_then_allowed(make_world: Callable[..., World]) -> None:
    w = make_world()
    write_settings(w.root / "policies.toml", chain_settings(STAGES))
    for i in range(3):
        w.clip(f"c{i}.MP4", 100 - 10 * i)  # 100, 90, 80 days old
    w.clip("unarchived.MP4", 3000, archived=False)
    w.ledger.close()

    # 2026-06-01: only the 100-day-old clip is due
    r = dashspool("retention", "--dry-run", "--now", "2026-06-01T12:00", "--json", cwd=w.root)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["dry_run"] is True and data["now"] == "2026-06-01T12:00:00+00:00"
    assert [(p["store"], p["path"]) for p in data["planned"]] == [("raw", "2026/01/01/c0.MP4")]
    assert "100 days old" in data["planned"][0]["reason"]
    assert data["planned"][0]["bytes"] == 1000 and data["deleted"] == []
    assert w.raw_file("c0.MP4").exists()

    # a real sweep has no --now: the three archived clips are made years old instead
    r = dashspool("retention", "--now", "2036-06-01T12:00:00Z", cwd=w.root)
    assert r.returncode == 2 and "--dry-run" in r.stderr, "--now never deletes for real"
    with sqlite3.connect(w.root / "dashspool.db") as db:
        db.execute("UPDATE videos SET created_at = '2016-01-01T00:00:00.000000Z'")
    db.close()

    # all three archived clips are due: 3 of 4, blocked, exit 6
    r = dashspool("retention", cwd=w.root)
    assert r.returncode == 6, r.stdout + r.stderr
    assert "blocked by the sanity guard: raw" in " ".join(r.stdout.split())
    assert all(w.raw_file(f"c{i}.MP4").exists() for i in range(3))
    r = dashspool("ledger", "alerts", "--json", cwd=w.root)
    assert r.returncode == 0, r.stderr
    (alert,) = json.loads(r.stdout)
    assert alert["source"] == "retention:raw" and "3 of 4 raw clips" in alert["message"]

    # status shows it, and its JSON still matches the schema
    r = dashspool("status", "--json", cwd=w.root)
    assert r.returncode == 0, r.stderr
    status = json.loads(r.stdout)
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(status, schema, format_checker=jsonschema.FormatChecker())
    assert [a["message"] for a in status["alerts"]] == [alert["message"]]

    r = dashspool("retention", "--allow-mass-delete", "--json", cwd=w.root)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["deleted"]) == 3
    r = dashspool("ledger", "deletions", "--json", cwd=w.root)
    rows = json.loads(r.stdout)
    assert sorted(d["path"] for d in rows) == [f"2026/01/01/c{i}.MP4" for i in range(3)]
    assert w.raw_file("unarchived.MP4").exists()


def test_cli_now_must_be_a_time(tmp_path: Path) -> None:
    write_settings(tmp_path / "policies.toml", chain_settings(STAGES))
    r = dashspool("retention", "--dry-run", "--now", "next tuesday", cwd=tmp_path)
    assert r.returncode == 2
    assert "--now" in r.stderr


def test_cli_status_lists_the_scheduled_jobs(make_world: Callable[..., World]) -> None:
    w = make_world()
    write_settings(w.root / "policies.toml", chain_settings(STAGES))
    jobs = {
        "reaper": {"last_run": "2026-06-01T11:59:00+00:00", "last_result": "ok (0)"},
        "retention": {
            "last_run": "2026-06-01T11:00:00+00:00",
            "last_result": "ok (4)",
            "next_run": "2026-06-01T12:00:00+00:00",
        },
        "backup": {"next_run": "2026-06-02T02:00:00+00:00"},
    }
    w.spool.beat("coordinator", {"stage": "coordinator", "state": "running", "jobs": jobs}, NOW)
    r = dashspool("status", cwd=w.root)
    assert r.returncode == 0, r.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in r.stdout.splitlines()]
    jobs_table = {row[1]: row[2:] for row in cells if len(row) == 5 and row[0] == "coordinator"}
    assert jobs_table == {
        "reaper": ["2026-06-01T11:59:00+00:00", "ok (0)", "-"],
        "deferred-release": ["-", "not reported", "-"],
        "retention": ["2026-06-01T11:00:00+00:00", "ok (4)", "2026-06-01T12:00:00+00:00"],
        "backup": ["-", "not run yet", "2026-06-02T02:00:00+00:00"],
    }
