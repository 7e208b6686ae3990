"""Ledger backups and restore.

A backup is SQLite's online backup API copying the live ledger in one step (one read snapshot:
a writer in WAL mode goes on meanwhile and its uncommitted work is not in the copy) into
``<backup dir>/dashspool-YYYYMMDD-HHMMSS.db``. The copy is written under a dot name, switched to
a rollback journal (one self-contained file), synced, checked with ``PRAGMA integrity_check``
and only then renamed into place. :func:`rotate` removes our own backups older than
``backup.keep_days`` (by the time in their name), always keeping the newest.

:func:`restore` puts a backup back: refused while the coordinator's heartbeat is fresh, refused
for a file that is not a sound dashspool ledger or comes from a newer dashspool; the current
ledger is first backed up as ``…-pre-restore.db``, then replaced in one rename, and the
migrations this code knows are applied to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchers.config import Policies
from watchers.errors import ConfigError, DashspoolError
from watchers.files import fsync_dir, fsync_file
from watchers.ledger import MIGRATIONS, Ledger
from watchers.spool import Spool

log = logging.getLogger(__name__)

PREFIX = "dashspool-"
PRE_RESTORE = "-pre-restore"
# dashspool-20240101-020000.db, a second one in the same second -1, a safety copy -pre-restore
NAME_RE = re.compile(r"^dashspool-(\d{8}-\d{6})(?:-(\d+))?(-pre-restore)?\.db$")
COMPANIONS = ("-wal", "-shm", "-journal")
SQLITE_MAGIC = b"SQLite format 3\x00"


class BackupError(DashspoolError):
    """A backup could not be made, or a restore was refused; ``str()`` says why and what to do."""


# ----------------------------------------------------------------------------- backup
def backup_name(now: datetime, *, suffix: str = "", n: int = 0) -> str:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{PREFIX}{stamp}{f'-{n}' if n else ''}{suffix}.db"


def make_backup(
    ledger_path: Path,
    backup_dir: Path,
    now: datetime,
    *,
    suffix: str = "",
    busy_timeout_seconds: float = 30.0,
) -> Path:
    """Copy the ledger into ``backup_dir``; returns the new file. Raises BackupError when the
    ledger is missing or the copy does not pass ``integrity_check`` (nothing is left behind)."""
    if not ledger_path.is_file():
        raise BackupError(f"no ledger at {ledger_path} to back up")
    tmp = backup_dir / f".{PREFIX}{secrets.token_hex(4)}.db.partial"
    try:
        backup_dir.mkdir(parents=True, exist_ok=True)
        src = _connect(ledger_path, "rw", busy_timeout_seconds)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # pages=-1: every page in one step, from one read snapshot
                dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            finally:
                dst.close()
        finally:
            src.close()
        fsync_file(tmp)
        problem = integrity_problem(tmp)
        if problem:
            raise BackupError(f"the copy of {ledger_path} is damaged ({problem}); nothing kept")
        final = _free_name(backup_dir, now, suffix)
        os.replace(tmp, final)
        fsync_dir(backup_dir)
        return final
    except sqlite3.Error as err:
        raise BackupError(f"cannot back up {ledger_path}: {err}") from None
    except OSError as err:
        raise BackupError(f"cannot write a backup in {backup_dir}: {err}") from None
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{c}") for c in COMPANIONS)):
            leftover.unlink(missing_ok=True)


def rotate(backup_dir: Path, keep_days: float, now: datetime) -> list[Path]:
    """Remove our backups (names matching :data:`NAME_RE`, dated by their name) older than
    ``keep_days``; the newest is always kept. Returns what was removed."""
    ours = sorted(backups(backup_dir), key=lambda b: (b[1], b[0].name))
    cutoff = now - timedelta(days=keep_days)
    removed = []
    for path, when in ours[:-1]:
        if when < cutoff:
            for p in (path, *(Path(f"{path}{c}") for c in COMPANIONS)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(path)
    if removed:
        fsync_dir(backup_dir)
    return removed


def backups(backup_dir: Path) -> list[tuple[Path, datetime]]:
    """Our backup files in ``backup_dir`` with the (UTC) time in their names."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for entry in backup_dir.iterdir():
            m = NAME_RE.match(entry.name)
            if m and entry.is_file() and not entry.is_symlink():
                try:
                    when = datetime.strptime(m[1], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
                except ValueError:  # our pattern, but no real date: not one of ours
                    continue
                out.append((entry, when))
    return out


def backup_and_rotate(
    policies: Policies, now: datetime, backup_dir: Path | None = None
) -> tuple[Path, list[Path]]:
    folder = backup_dir or policies.path(policies.backup.dir)
    made = make_backup(
        policies.ledger_path,
        folder,
        now,
        busy_timeout_seconds=policies.ledger.busy_timeout_seconds,
    )
    return made, rotate(folder, policies.backup.keep_days, now)


def scheduled_backup(policies: Policies, ledger: Ledger, now: datetime) -> Path:
    """The coordinator's daily duty: one backup of ``ledger``, then the rotation."""
    folder = policies.path(policies.backup.dir)
    made = make_backup(
        ledger.path, folder, now, busy_timeout_seconds=policies.ledger.busy_timeout_seconds
    )
    removed = rotate(folder, policies.backup.keep_days, now)
    log.info(
        "ledger backed up to %s (%.1f MB); %d backups older than %g days removed",
        made,
        made.stat().st_size / 1e6,
        len(removed),
        policies.backup.keep_days,
    )
    return made


# ---------------------------------------------------------------------------- restore
@dataclass
class Restored:
    source: Path
    ledger: Path
    safety_copy: Path | None
    migrated: list[str] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # the old ledger's -wal/-shm files


def check_no_coordinator(spool: Spool, policies: Policies, now: datetime) -> None:
    """Refuse while the coordinator's heartbeat is fresh (the same rule as a second start
    under its device id: a heartbeat within the lease, not stopped, not a dead local pid)."""
    device = policies.coordinator.device_id
    lease = timedelta(seconds=policies.spool.lease_seconds)
    try:
        spool.check_device_free(device, now, lease)
    except ConfigError:
        rec = next((d for d in spool.devices() if d["device_id"] == device), {})
        last = rec.get("last_beat_at")
        age = f"{(now - last).total_seconds():.0f}s ago" if last else "recently"
        raise BackupError(
            f"the coordinator {device!r} is running (pid {rec.get('pid')} on {rec.get('host')}, "
            f"heartbeat {age}): stop dashspool-coordinator first "
            "(or the `dashspool run` that serves it)"
        ) from None


def check_ledger_file(path: Path) -> list[str]:
    """Refuse a file that is not a sound dashspool ledger this code can read; returns the
    migrations it still needs."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    with open(path, "rb") as f:
        if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise BackupError(f"{path} is not a SQLite database")
    problem = integrity_problem(path)
    if problem:
        raise BackupError(f"{path} is damaged: integrity_check says {problem}")
    try:
        conn = _connect(path, "ro", 5.0)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
        finally:
            conn.close()
    except sqlite3.Error:
        raise BackupError(f"{path} is not a dashspool ledger (no schema_migrations)") from None
    known = [name for name, _ in MIGRATIONS]
    newer = sorted(names - set(known))
    if newer:
        raise BackupError(
            f"{path} comes from a newer dashspool (migrations unknown here: "
            f"{', '.join(newer)}): upgrade dashspool, then restore"
        )
    return [name for name in known if name not in names]


def restore(spool: Spool, policies: Policies, source: Path, now: datetime) -> Restored:
    """Put ``source`` back as the ledger (see the module docstring for the order)."""
    from watchers import app

    check_no_coordinator(spool, policies, now)
    pending = check_ledger_file(source)
    ledger = policies.ledger_path
    if ledger.exists() and source.resolve() == ledger.resolve():
        raise BackupError(f"{source} is the ledger itself")
    ledger.parent.mkdir(parents=True, exist_ok=True)
    safety = _safety_copy(policies, ledger, now) if ledger.exists() else None

    tmp = ledger.with_name(f".{ledger.name}.restore-{secrets.token_hex(4)}")
    try:
        src = _connect(source, "ro", 5.0)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")
            finally:
                dst.close()
        finally:
            src.close()
        fsync_file(tmp)
        removed = _retire(ledger)
        os.replace(tmp, ledger)
        fsync_dir(ledger.parent)
    except sqlite3.Error as err:
        raise BackupError(f"cannot copy {source}: {err}") from None
    except OSError as err:
        raise BackupError(f"cannot put {source} in place of {ledger}: {err}") from None
    finally:
        for leftover in (tmp, *(Path(f"{tmp}{c}") for c in COMPANIONS)):
            leftover.unlink(missing_ok=True)
    app.open_ledger(policies).close()  # applies the migrations the backup predates
    log.info("ledger %s restored from %s (safety copy: %s)", ledger, source, safety)
    return Restored(source, ledger, safety, pending, removed)


def _safety_copy(policies: Policies, ledger: Path, now: datetime) -> Path:
    """The current ledger as ``…-pre-restore.db``. A ledger too damaged for the backup API
    (the reason to restore) is copied as it lies, with its -wal beside the copy."""
    folder = policies.path(policies.backup.dir)
    try:
        return make_backup(
            ledger,
            folder,
            now,
            suffix=PRE_RESTORE,
            busy_timeout_seconds=policies.ledger.busy_timeout_seconds,
        )
    except BackupError as err:
        log.warning("%s; copying the file as it is instead", err)
    final = _free_name(folder, now, PRE_RESTORE)
    for c in ("", "-wal"):
        if Path(f"{ledger}{c}").is_file():
            tmp = folder / f".{final.name}{c}.partial"
            shutil.copyfile(f"{ledger}{c}", tmp)
            fsync_file(tmp)
            os.replace(tmp, f"{final}{c}")
    fsync_dir(folder)
    return final


def _retire(ledger: Path) -> list[Path]:
    """Fold the old ledger's WAL into it, then remove its -wal/-shm/-journal: left beside the
    restored file they would be replayed into it."""
    if ledger.is_file():
        with contextlib.suppress(sqlite3.Error):
            conn = _connect(ledger, "rw", 5.0)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
    removed = []
    for c in COMPANIONS:
        p = Path(f"{ledger}{c}")
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed


# ---------------------------------------------------------------------------- helpers
def integrity_problem(path: Path, *, quick: bool = False) -> str | None:
    """None when ``PRAGMA integrity_check`` (or ``quick_check``) says ok, else its first lines."""
    try:
        conn = _connect(path, "ro", 5.0)
        try:
            pragma = "quick_check" if quick else "integrity_check"
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}").fetchmany(5)]
        finally:
            conn.close()
    except sqlite3.Error as err:
        return str(err)
    return None if rows == ["ok"] else "; ".join(rows)


def _connect(path: Path, mode: str, timeout: float) -> sqlite3.Connection:
    """Open an existing database (``mode`` ro or rw: never creates one)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=timeout)


def _free_name(folder: Path, now: datetime, suffix: str) -> Path:
    n = 0
    while (folder / backup_name(now, suffix=suffix, n=n)).exists():
        n += 1
    return folder / backup_name(now, suffix=suffix, n=n)
