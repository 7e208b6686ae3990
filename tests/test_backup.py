"""Ledger backups (online, checked, rotated) and restore (guarded, atomic, migrated): real SQLite
files in tmp_path, and the CLI as a real process for one round trip."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import chain_settings, write_settings
from sqlalchemy import text
from test_cli import dashspool

from watchers import app, backup
from watchers.backup import BackupError
from watchers.catalog import ts
from watchers.config import Policies
from watchers.coordinator import Coordinator
from watchers.ledger import MIGRATIONS, Ledger, Video
from watchers.spool import Spool

T0 = datetime(2024, 3, 1, 2, 0, tzinfo=timezone.utc)


def add_video(ledger: Ledger, video_id: str) -> None:
    with ledger.transaction() as s:
        s.add(
            Video(
                video_id=video_id,
                job=f"2024_0301_020000_x-{video_id[:6]}",
                source_name=f"{video_id}.MP4",
                state="done",
                created_at=ts(T0),
                updated_at=ts(T0),
            )
        )


def ids_in(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in db.execute("SELECT video_id FROM videos"))
    finally:
        db.close()


def crash_after_insert(path: Path, video_id: str) -> None:
    """A writer that commits a row and dies (no close, no checkpoint): it leaves a -wal."""
    code = (
        "import os, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('PRAGMA wal_autocheckpoint=0')\n"
        'db.execute("INSERT INTO videos (video_id, job, source_name, state, created_at, '
        "updated_at, kind) VALUES (?, 'j-x', 'x.MP4', 'done', 't', 't', 'video')\", "
        "(sys.argv[2],))\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), video_id], check=True, timeout=60)


@pytest.fixture
def ledger(policies: Policies) -> Ledger:
    led = app.open_ledger(policies)
    add_video(led, "aaaaaa")
    return led


def backups_of(policies: Policies) -> list[str]:
    folder = policies.path(policies.backup.dir)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------- backup
def test_a_backup_is_a_checked_self_contained_copy(policies: Policies, ledger: Ledger) -> None:
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    assert made.name == "dashspool-20240301-020000.db"
    assert backups_of(policies) == [made.name], "no temporary or -wal file left beside it"
    assert ids_in(made) == ["aaaaaa"]
    assert backup.integrity_problem(made) is None
    db = sqlite3.connect(made)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        db.close()
    again = backup.make_backup(ledger.path, policies.path("backups"), T0)
    assert again != made and again.name == "dashspool-20240301-020000-1.db"


def test_backup_of_a_missing_ledger_says_so(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no ledger at"):
        backup.make_backup(tmp_path / "absent.db", tmp_path / "backups", T0)
    assert not (tmp_path / "absent.db").exists(), "the backup must not create a ledger"


def test_backup_during_a_write_transaction_copies_the_last_commit(
    policies: Policies, ledger: Ledger
) -> None:
    """In WAL mode the backup reads one snapshot: the writer's uncommitted row is not in the
    copy, the copy is sound, and the backup neither waits for nor blocks the writer."""
    writer = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(
            "INSERT INTO videos (video_id, job, source_name, state, created_at, updated_at, kind)"
            " VALUES ('bbbbbb', 'j-bbbbbb', 'b.MP4', 'done', 't', 't', 'video')"
        )
        during = backup.make_backup(
            ledger.path, policies.path("backups"), T0, busy_timeout_seconds=0.1
        )
        writer.execute("COMMIT")
    finally:
        writer.close()
    after = backup.make_backup(ledger.path, policies.path("backups"), T0 + timedelta(seconds=1))
    assert ids_in(during) == ["aaaaaa"]
    assert backup.integrity_problem(during) is None
    assert ids_in(after) == ["aaaaaa", "bbbbbb"]


def test_rotation_removes_only_our_old_backups_and_keeps_the_newest(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    now = T0
    names = {
        "old": backup.backup_name(now - timedelta(days=40)),
        "old_safety": backup.backup_name(now - timedelta(days=35), suffix="-pre-restore"),
        "recent": backup.backup_name(now - timedelta(days=1)),
        "foreign_db": "notes.db",
        "lookalike": "dashspool-latest.db",
        "hidden": ".dashspool-x.db.partial",
    }
    for name in names.values():
        (folder / name).write_bytes(b"x")
    (folder / f"{names['old']}-wal").write_bytes(b"x")
    removed = backup.rotate(folder, 30, now)
    assert sorted(p.name for p in removed) == sorted([names["old"], names["old_safety"]])
    left = sorted(p.name for p in folder.iterdir())
    assert left == sorted(
        [names["recent"], names["foreign_db"], names["lookalike"], names["hidden"]]
    )

    # all of ours are old: the newest of them stays
    (folder / names["recent"]).unlink()
    for key in ("old", "old_safety"):
        (folder / names[key]).write_bytes(b"x")
    removed = backup.rotate(folder, 30, now)
    assert [p.name for p in removed] == [names["old"]]
    assert (folder / names["old_safety"]).is_file()


def test_the_coordinator_duty_backs_up_and_rotates(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    folder = policies.path(policies.backup.dir)
    folder.mkdir()
    stale = folder / backup.backup_name(T0 - timedelta(days=policies.backup.keep_days + 1))
    stale.write_bytes(b"x")
    assert Coordinator(spool, policies, ledger).backup(T0) == 1
    assert backups_of(policies) == ["dashspool-20240301-020000.db"]


# ------------------------------------------------------------------------------ restore
def test_backup_then_restore_gives_the_old_content_back(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    ledger.close()
    crash_after_insert(ledger.path, "bbbbbb")
    assert Path(f"{ledger.path}-wal").stat().st_size > 0, "the new row is in the WAL only"
    # a reader still holding the old ledger: its WAL is not folded in and removed on close
    reader = sqlite3.connect(ledger.path)
    try:
        assert reader.execute("SELECT count(*) FROM videos").fetchone() == (2,)
        done = backup.restore(spool, policies, made, T0 + timedelta(hours=1))
    finally:
        reader.close()
    assert done.safety_copy is not None
    assert done.safety_copy.name == "dashspool-20240301-030000-pre-restore.db"
    assert ids_in(done.safety_copy) == ["aaaaaa", "bbbbbb"], "the replaced ledger is kept whole"
    assert done.migrated == []
    restored = Ledger(policies.ledger_path)
    try:
        assert [v.video_id for v in restored.videos()] == ["aaaaaa"]
    finally:
        restored.close()
    assert ids_in(made) == ["aaaaaa"], "the backup itself is untouched"


def test_an_older_backup_is_migrated_on_restore(spool: Spool, policies: Policies) -> None:
    old = policies.path("old.db")
    db = sqlite3.connect(old)
    db.executescript(MIGRATIONS[0][1])
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.execute("INSERT INTO schema_migrations VALUES ('0001_initial', 'then')")
    db.execute(
        "INSERT INTO videos (video_id, job, source_name, state, created_at, updated_at) "
        "VALUES ('abcdef012345', 'x-abcdef', 'x.MP4', 'done', 't', 't')"
    )
    db.commit()
    db.close()
    done = backup.restore(spool, policies, old, T0)
    assert done.safety_copy is None, "there was no ledger to keep"
    assert done.migrated == [name for name, _ in MIGRATIONS[1:]]
    restored = Ledger(policies.ledger_path)
    try:
        assert restored.migrate() == []
        with restored.reading() as s:
            assert s.execute(text("SELECT archive_path FROM videos")).all() == [(None,)]
    finally:
        restored.close()


def beat_as_running_coordinator(spool: Spool, policies: Policies, now: datetime) -> None:
    """A heartbeat as another live process writes it (the test's own pid would count as
    'this process', which never blocks itself)."""
    device = policies.coordinator.device_id
    spool.beat(device, {"stage": "coordinator", "state": "running"}, now)
    path = spool.backend.local_path(f"devices/{device}.json")
    assert path is not None
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "pid": os.getppid()}))


def test_restore_is_refused_while_a_coordinator_runs(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    add_video(ledger, "bbbbbb")
    ledger.close()
    beat_as_running_coordinator(spool, policies, T0)
    before = backups_of(policies)
    with pytest.raises(BackupError, match="stop dashspool-coordinator first"):
        backup.restore(spool, policies, made, T0 + timedelta(seconds=1))
    assert backups_of(policies) == before, "no safety copy: nothing was done"
    assert ids_in(policies.ledger_path) == ["aaaaaa", "bbbbbb"]
    # the same heartbeat past the lease is a coordinator that died: the restore goes ahead
    later = T0 + timedelta(seconds=policies.spool.lease_seconds + 1)
    backup.restore(spool, policies, made, later)
    assert ids_in(policies.ledger_path) == ["aaaaaa"]


def test_restore_refuses_a_file_that_is_not_sqlite(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    junk = policies.path("notes.db")
    junk.write_text("not a database\n" * 100)
    with pytest.raises(BackupError, match="is not a SQLite database"):
        backup.restore(spool, policies, junk, T0)
    assert backups_of(policies) == []
    assert [v.video_id for v in ledger.videos()] == ["aaaaaa"]


def test_restore_refuses_a_damaged_backup(spool: Spool, policies: Policies, ledger: Ledger) -> None:
    """Corruption: a backup of a ledger with many rows keeps its first page (header and schema)
    but has the middle of its pages overwritten with 0xAB, as a bad disk block would."""
    for i in range(300):
        add_video(ledger, f"{i:06x}ab")
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    size = made.stat().st_size
    page = 4096
    assert size >= 8 * page, "enough pages to damage some and keep the header"
    with open(made, "r+b") as f:
        f.seek(2 * page)
        f.write(b"\xab" * (size // 2))
    with pytest.raises(BackupError, match="is damaged"):
        backup.restore(spool, policies, made, T0)
    assert len(ledger.videos(limit=1000)) == 301, "the ledger is untouched"
    assert backups_of(policies) == [made.name], "no safety copy: nothing was done"


def test_restore_over_a_damaged_ledger_keeps_it_as_it_was(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    """The reason to restore: the ledger is damaged, so the backup API's copy of it fails its
    check; the safety copy is then the file byte for byte."""
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    for i in range(300):
        add_video(ledger, f"{i:06x}ab")
    ledger.close()
    with open(ledger.path, "r+b") as f:
        f.seek(4 * 4096)
        f.write(b"\xab" * (ledger.path.stat().st_size // 2))
    damaged = ledger.path.read_bytes()
    assert backup.integrity_problem(ledger.path) is not None

    done = backup.restore(spool, policies, made, T0 + timedelta(hours=1))
    assert done.safety_copy is not None and done.safety_copy.name.endswith("-pre-restore.db")
    assert done.safety_copy.read_bytes() == damaged
    assert ids_in(policies.ledger_path) == ["aaaaaa"]
    assert backup.integrity_problem(policies.ledger_path) is None


def test_restore_refuses_a_ledger_from_a_newer_dashspool(
    spool: Spool, policies: Policies, ledger: Ledger
) -> None:
    made = backup.make_backup(ledger.path, policies.path("backups"), T0)
    db = sqlite3.connect(made)
    db.execute("INSERT INTO schema_migrations VALUES ('9999_future', 'later')")
    db.commit()
    db.close()
    with pytest.raises(BackupError, match=r"newer dashspool .*9999_future.*upgrade dashspool"):
        backup.restore(spool, policies, made, T0)


def test_restore_refuses_a_sqlite_file_that_is_not_a_ledger(
    spool: Spool, policies: Policies
) -> None:
    other = policies.path("other.db")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(BackupError, match="not a dashspool ledger"):
        backup.restore(spool, policies, other, T0)
    assert not policies.ledger_path.exists()


# ---------------------------------------------------------------------------------- CLI
def test_cli_backup_restore_round_trip(
    tmp_path: Path, make_policies: Callable[..., Policies]
) -> None:
    cfg = write_settings(tmp_path / "policies.toml", chain_settings())
    policies = make_policies()
    led = app.open_ledger(policies)
    add_video(led, "aaaaaa")
    base = ("--config", str(cfg))

    r = dashspool(*base, "backup", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    made = Path(json.loads(r.stdout)["file"])
    assert made.parent == tmp_path / "backups" and made.is_file()

    add_video(led, "bbbbbb")
    led.close()
    r = dashspool(*base, "restore", str(made), "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "restored from" in r.stdout and "pre-restore" in r.stdout
    assert ids_in(policies.ledger_path) == ["aaaaaa"]

    r = dashspool(*base, "restore", str(cfg), "--yes", cwd=tmp_path)
    assert r.returncode == 1
    assert "is not a SQLite database" in r.stderr
