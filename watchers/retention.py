"""Retention: what leaves the raw store and the spool's ``done/`` folders, and when, under two
guards. One :func:`sweep` per run, ``now`` injected; the coordinator runs it every
``retention.interval_seconds`` and ``dashspool retention`` on demand (docs/retention.md).

* **raw clips** go once the ledger has them archived with their own hash (``archive_sha256 ==
  sha256``, watchers/archiving.py), the archive copy is there with the clip's size, they are
  older than ``raw_days`` (from when the ledger first saw them) and neither locked nor event clips
  (unless ``delete_locked``). A clip that is not archived is never deleted, whatever its age.
* **finished jobs** ``<stage>/done/<job>`` go after ``done_days[<the stage that made them>]``.
* **free space**: a raw store under ``raw_min_free_percent`` free raises a warning and gives up
  its oldest archived clips early (same conditions but the age) until it would be back above;
  an archive under ``archive_min_free_percent`` raises a critical alert. Archive content is
  never deleted.
* **sanity**: a sweep that would delete more than ``max_sweep_fraction`` of a store's items
  deletes nothing there and raises a critical alert (unless ``allow_mass_delete``).

Every deletion is a ``deletions`` row, every alert an ``alerts`` row (none in a dry run).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlmodel import col, func, select

from watchers import stores
from watchers.archiving import Alert, Deletion
from watchers.catalog import parse_ts, ts
from watchers.clock import iso
from watchers.config import Policies, RetentionSettings
from watchers.errors import BadJob, DashspoolError, NotFound, StorageUnavailable, UnsafePath
from watchers.ledger import Ledger, Video
from watchers.spool import DEVICES, DONE_NAME_RE, DROPS, LEDGER_INBOX, Spool
from watchers.stores import Store

log = logging.getLogger(__name__)

RAW, ARCHIVE, SPOOL = "raw", "archive", "spool"
# top-level spool folders that are never a stage's, whatever policies.toml calls its stages
NOT_STAGES = frozenset({DROPS, DEVICES, LEDGER_INBOX.split("/")[0]})
DAY = 86400.0

# shutil.disk_usage and anything shaped like it: (total, used, free) in bytes
DiskUsage = Callable[[Path], tuple[int, int, int]]


@dataclass(frozen=True)
class Planned:
    """One file (raw) or job folder (spool) a sweep deletes, or would delete in a dry run."""

    store: str  # "raw" or "spool"
    path: str  # relative to the store's root (raw) or the spool root (spool)
    video_id: str | None
    reason: str
    bytes: int | None


@dataclass(frozen=True)
class Notice:
    """An alert: logged as a warning and, unless the sweep is a dry run, an ``alerts`` row."""

    level: str  # "warning" or "critical"
    source: str  # "retention:raw", "retention:archive", "retention:spool"
    message: str


@dataclass
class SweepResult:
    now: datetime
    dry_run: bool
    planned: list[Planned] = field(default_factory=list)
    deleted: list[Planned] = field(default_factory=list)
    failed: list[tuple[Planned, str]] = field(default_factory=list)  # (item, why not)
    kept: Counter[str] = field(default_factory=Counter)  # why items stay → how many
    alerts: list[Notice] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)  # store → why nothing went there

    def to_json(self) -> dict[str, Any]:
        return {
            "now": iso(self.now),
            "dry_run": self.dry_run,
            "planned": [asdict(p) for p in self.planned],
            "deleted": [asdict(p) for p in self.deleted],
            "failed": [{**asdict(p), "error": e} for p, e in self.failed],
            "kept": dict(sorted(self.kept.items())),
            "alerts": [asdict(a) for a in self.alerts],
            "blocked": dict(self.blocked),
        }


@dataclass(frozen=True)
class _Clip:
    item: Planned
    age_days: float
    verified: str  # archived_at, as the archive stage wrote it


@dataclass
class _RawPlan:
    total: int = 0  # clips the ledger has in the raw store (raw_path set, not deleted)
    due: list[_Clip] = field(default_factory=list)  # archived, verified, unlocked, old enough
    spare: list[_Clip] = field(default_factory=list)  # the same but younger: oldest first
    no_copy: list[str] = field(default_factory=list)  # archived per the ledger, copy missing


# ------------------------------------------------------------------------------- the sweep
def sweep(
    spool: Spool,
    policies: Policies,
    ledger: Ledger,
    now: datetime,
    *,
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    disk_usage: DiskUsage = shutil.disk_usage,
) -> SweepResult:
    """Plan, guard, then (unless ``dry_run``) delete and record. Returns what was planned,
    deleted, kept (with reasons), alerted and blocked."""
    now = _utc(now)
    r = policies.retention
    result = SweepResult(now=now, dry_run=dry_run)
    raw_store = spool.stores.get(RAW) or stores.open_store(policies, RAW)
    archive_store = spool.stores.get(ARCHIVE) or stores.open_store(policies, ARCHIVE)
    raw_root, archive_root = raw_store.url, archive_store.url

    raw = _plan_raw(ledger, r, raw_store, archive_store, now, result.kept)
    chosen = [c.item for c in raw.due]
    space = _space(raw_store, disk_usage)
    if space is not None and space.percent < r.raw_min_free_percent:
        extra, note = _make_room(space, r.raw_min_free_percent, chosen, raw.spare)
        chosen += extra
        result.alerts.append(Notice("warning", f"retention:{RAW}", f"{raw_root}: {note}"))
    taken = {p.video_id for p in chosen}
    young = sum(1 for c in raw.spare if c.item.video_id not in taken)
    if young:
        result.kept["raw: younger than raw_days"] += young
    if raw.no_copy:
        result.alerts.append(
            Notice(
                "critical",
                f"retention:{ARCHIVE}",
                f"{len(raw.no_copy)} clips the ledger has as archived have no copy of their size "
                f"in {archive_root} (first: {raw.no_copy[0]}); their raw clips are kept",
            )
        )
    _guard(result, RAW, "raw clips", chosen, raw.total, r, allow_mass_delete)

    jobs, total_jobs = _plan_spool(spool, policies, now, result.kept)
    _guard(result, SPOOL, "finished jobs in done/", jobs, total_jobs, r, allow_mass_delete)

    space = _space(archive_store, disk_usage)
    if space is not None and space.percent < r.archive_min_free_percent:
        result.alerts.append(
            Notice(
                "critical",
                f"retention:{ARCHIVE}",
                f"{archive_root}: {space.percent:.1f}% free, under "
                f"retention.archive_min_free_percent {r.archive_min_free_percent:g}; archived "
                "footage is never deleted automatically: add space or move old years elsewhere",
            )
        )

    for a in result.alerts:
        log.warning("%s alert (%s): %s", a.level, a.source, a.message)
    if not dry_run:
        _record_alerts(ledger, result.alerts, now)
        for item in result.planned:
            try:
                if item.store == RAW:
                    _delete_raw(ledger, raw_store, archive_store, item, now)
                else:
                    _delete_job(ledger, spool, item, now)
            except (OSError, ValueError, DashspoolError) as err:  # one item; ledger errors: all
                if isinstance(err, StorageUnavailable):
                    raise  # the NAS went away: the sweep stops, the next one starts over
                log.warning("retention: %s %s not deleted: %s", item.store, item.path, err)
                result.failed.append((item, str(err) or type(err).__name__))
                continue
            log.debug("retention deleted %s %s: %s", item.store, item.path, item.reason)
            result.deleted.append(item)
    done = result.planned if dry_run else result.deleted
    log.info(
        "retention%s: %d raw clips, %d finished jobs %s (%s); %d kept; %d alerts%s",
        " (dry run)" if dry_run else "",
        sum(1 for p in done if p.store == RAW),
        sum(1 for p in done if p.store == SPOOL),
        "would go" if dry_run else "deleted",
        human_size(sum(p.bytes or 0 for p in done)),
        sum(result.kept.values()),
        len(result.alerts),
        f"; blocked: {', '.join(result.blocked)}" if result.blocked else "",
    )
    return result


def _guard(
    result: SweepResult,
    store: str,
    what: str,
    chosen: list[Planned],
    total: int,
    r: RetentionSettings,
    allow: bool,
) -> None:
    """The sanity guard: more than ``max_sweep_fraction`` of a store at once is not retention
    but a wrong path or a wrong clock, until a person says otherwise."""
    if chosen and len(chosen) > r.max_sweep_fraction * total:
        share = f"{len(chosen)} of {total} {what} ({len(chosen) / max(total, 1):.0%})"
        if not allow:
            message = (
                f"{store}: this sweep would delete {share}, more than "
                f"retention.max_sweep_fraction {r.max_sweep_fraction:g}; nothing was deleted "
                "there. Check the store's path and the clock, look at `dashspool retention "
                "--dry-run`, then run `dashspool retention --allow-mass-delete` if it is right"
            )
            result.blocked[store] = message
            result.alerts.append(Notice("critical", f"retention:{store}", message))
            result.kept["blocked by the sanity guard"] += len(chosen)
            return
        log.warning("retention: %s: deleting %s (--allow-mass-delete)", store, share)
    result.planned += chosen


# -------------------------------------------------------------------------------- raw clips
def _plan_raw(
    ledger: Ledger,
    r: RetentionSettings,
    raw_store: Store,
    archive_store: Store,
    now: datetime,
    kept: Counter[str],
) -> _RawPlan:
    plan = _RawPlan()
    present = (
        Video.kind == "video",
        col(Video.raw_path).is_not(None),
        col(Video.raw_deleted_at).is_(None),
    )
    with ledger.reading() as s:
        plan.total = s.exec(select(func.count()).select_from(Video).where(*present)).one()
        rows = s.exec(
            select(Video)
            .where(*present, col(Video.archive_sha256).is_not(None))
            .where(col(Video.archived_at).is_not(None))
            .order_by(col(Video.created_at), col(Video.video_id))
        ).all()
    if plan.total > len(rows):
        kept["raw: not archived"] += plan.total - len(rows)
    for v in rows:
        why, size = _raw_check(v, r, raw_store, archive_store)
        if why == "no archive copy":
            plan.no_copy.append(v.archive_path or v.video_id)
        if why:
            kept[f"raw: {why}"] += 1
            continue
        try:
            age = (now - _parse_time(v.created_at)).total_seconds() / DAY
        except ValueError:
            kept["raw: created_at unreadable"] += 1
            continue
        verified = str(v.archived_at)
        item = Planned(RAW, str(v.raw_path), v.video_id, "", size)
        if age > r.raw_days:
            reason = (
                f"archived and verified {verified[:10]}; {age:.0f} days old "
                f"(raw_days {r.raw_days:g})"
            )
            plan.due.append(_Clip(replace(item, reason=reason), age, verified))
        else:
            plan.spare.append(_Clip(item, age, verified))
    return plan


def _raw_check(
    v: Video, r: RetentionSettings, raw_store: Store, archive_store: Store
) -> tuple[str | None, int]:
    """Why a clip the ledger has as archived must stay (None: it may go but for its age), and
    its raw file's size."""
    if not v.sha256 or v.archive_sha256 != v.sha256:
        return "archive hash differs from the clip's", 0
    if (v.locked or v.mode == "event") and not r.delete_locked:
        return "locked or event clip", 0
    rel = inside(raw_store, v.raw_path or "")
    if rel is None:
        return "raw path not inside the raw store", 0
    size = raw_store.file_size(rel)
    if size is None:
        return "raw file missing or not a plain file", 0
    if v.size_bytes is not None and size != v.size_bytes:
        return "raw file size differs from the ledger's", 0
    copy = inside(archive_store, v.archive_path or "")
    if copy is None or archive_store.file_size(copy) != size:
        return "no archive copy", 0
    return None, size


def _sha256(store: Store, rel: str) -> str | None:
    try:
        return store.sha256(rel)
    except (OSError, NotFound, BadJob):
        return None


def inside(store: Store, rel: str) -> str | None:
    """``rel`` when it is a plain relative path that stays inside the store (through any links
    on the way, on a local store), and names no hidden entry (the raw store's ``.index/``
    content index is never touched); else None. Ledger paths are checked like untrusted input."""
    try:
        rel = store.checked(rel, hidden=False)
        store.local_path(rel)
    except UnsafePath:
        return None
    return rel


@dataclass(frozen=True)
class _Space:
    total: int
    free: int

    @property
    def percent(self) -> float:
        return 100.0 * self.free / self.total


def _space(store: Store, disk_usage: DiskUsage) -> _Space | None:
    root = store.local_root
    try:
        if root is None:
            got = store.space()
            if got is None:
                return None
            total, free = got
        elif not root.is_dir():  # no store yet: nothing in it to guard
            return None
        else:
            total, _used, free = disk_usage(root)
    except (OSError, NotFound) as err:
        log.warning("retention: free space of %s unknown: %s", store.url, err)
        return None
    return _Space(total, free) if total > 0 else None


def _make_room(
    space: _Space, min_percent: float, due: list[Planned], spare: list[_Clip]
) -> tuple[list[Planned], str]:
    """The oldest spare clips that bring the store back above ``min_percent`` free, counting
    what the age rule frees anyway, and the alert's sentence."""
    need = math.ceil(space.total * min_percent / 100) - space.free - sum(p.bytes or 0 for p in due)
    extra: list[Planned] = []
    for clip in spare:
        if need <= 0:
            break
        reason = (
            f"raw store {space.percent:.1f}% free (raw_min_free_percent {min_percent:g}): "
            f"oldest archived first; archived and verified {clip.verified[:10]}; "
            f"{clip.age_days:.0f} days old"
        )
        extra.append(replace(clip.item, reason=reason))
        need -= clip.item.bytes or 0
    freed = sum(p.bytes or 0 for p in extra)
    note = (
        f"{space.percent:.1f}% free, under retention.raw_min_free_percent {min_percent:g}; "
        f"{len(extra)} archived clips younger than raw_days chosen to go early, oldest first "
        f"({human_size(freed)})"
    )
    if need > 0:
        note += (
            f"; still {human_size(need)} short: no other clip is archived, verified and unlocked "
            "(add space, or archive what is waiting)"
        )
    return extra, note


def _delete_raw(
    ledger: Ledger, raw_store: Store, archive_store: Store, item: Planned, now: datetime
) -> None:
    """Remove one raw clip and record it.

    Order: inside one ledger transaction the rows are written (and flushed, so a database
    error surfaces before anything irreversible), then the file is removed, then the
    transaction commits. A removal that fails rolls the rows back, so a row never claims a
    deletion that did not happen. Only a crash between the removal and the commit leaves a
    file gone without its row; the next sweep then keeps that clip as "raw file missing" and
    deletes nothing. The other order (commit the intent, then delete) would turn that
    window into a row for a file that is still there and is never looked at again: space lost
    silently, in the store whose free space retention is meant to keep."""
    path = inside(raw_store, item.path)
    if path is None or raw_store.file_size(path) is None:
        raise FileNotFoundError(f"{item.path}: no longer a file inside the raw store")
    # the archive copy is read and hashed now, outside the ledger's write lock: a copy that
    # rotted since it was archived (same size, other bytes) must not cost the last good one
    with ledger.reading() as s:
        video = s.get(Video, item.video_id)
        copy_rel, sha = (video.archive_path, video.sha256) if video else (None, None)
    copy = inside(archive_store, copy_rel or "")
    if copy is None or not sha or _sha256(archive_store, copy) != sha:
        raise _Changed(
            f"{item.video_id}: the archive copy {copy_rel} does not hash to the clip's sha256 "
            "(run dashspool verify --repair); the raw clip is kept"
        )
    with ledger.transaction() as s:
        video = s.get(Video, item.video_id)
        if video is None or video.raw_deleted_at is not None or video.raw_path != item.path:
            raise _Changed(f"{item.video_id}: the ledger changed since the plan")
        if not video.sha256 or video.archive_sha256 != video.sha256:
            raise _Changed(f"{item.video_id}: no longer archived with its own hash")
        video.raw_deleted_at = ts(now)  # updated_at stays: it orders the clip's own events
        s.add(video)
        s.add(_row(item, now))
        s.flush()
        raw_store.backend.remove_file(path)


# --------------------------------------------------------------------------- spool jobs
def _plan_spool(
    spool: Spool, policies: Policies, now: datetime, kept: Counter[str]
) -> tuple[list[Planned], int]:
    """Finished jobs old enough to go, and how many finished jobs there are. Only ``done/``
    of the pipeline's stages is looked at; every other queue is never touched."""
    r = policies.retention
    out: list[Planned] = []
    total = 0
    for stage in policies.order():
        if stage in NOT_STAGES:
            continue
        folder = f"{stage}/done"
        for e in spool.done_entries(stage):
            if e.kind != "dir" or not DONE_NAME_RE.match(e.name):
                kept["spool: not a job folder"] += 1
                continue
            total += 1
            rel = f"{folder}/{e.name}"
            video_id: str | None = None
            producer: str | None = None
            finished = datetime.fromtimestamp(e.mtime, timezone.utc)
            what = "folder last changed"
            try:
                sidecar = spool.read_sidecar_at(rel)
            except DashspoolError as err:  # size-limited, strictly decoded: untrusted input
                what = f"job.json unreadable ({str(err)[:120]}); folder last changed"
            else:
                video_id = sidecar.video_id
                if sidecar.history:
                    producer = sidecar.history[-1].stage
                    finished = max(_utc(h.finished_at) for h in sidecar.history)
                    what = f"made by {producer}, finished"
            if producer in r.done_days:
                days, rule = r.done_days[producer], f"done_days.{producer}"
            else:
                days, rule = r.done_days_default, "done_days_default"
            age = (now - finished).total_seconds() / DAY
            if age <= days:
                kept["spool: younger than its done_days"] += 1
                continue
            reason = f"{what} {age:.0f} days ago ({rule} {days:g})"
            size = spool.done_job_bytes(stage, e.name)
            out.append(Planned(SPOOL, rel, video_id, reason, size))
    return out, total


def _delete_job(ledger: Ledger, spool: Spool, item: Planned, now: datetime) -> None:
    """Remove one finished job folder through the spool's backend and record it, in the same
    order as :func:`_delete_raw` and for the same reason."""
    stage, _, job = item.path.split("/")
    with ledger.transaction() as s:
        s.add(_row(item, now))
        s.flush()
        spool.remove_done(stage, job)


# --------------------------------------------------------------------------------- ledger
class _Changed(DashspoolError):
    """The ledger no longer agrees with the plan (another sweep, a late event): skip it."""


def _row(item: Planned, now: datetime) -> Deletion:
    return Deletion(
        at=ts(now),
        store=item.store,
        path=item.path,
        video_id=item.video_id,
        reason=item.reason,
        bytes=item.bytes,
    )


def _record_alerts(ledger: Ledger, alerts: list[Notice], now: datetime) -> None:
    if not alerts:
        return
    with ledger.transaction() as s:
        for a in alerts:
            s.add(Alert(at=ts(now), level=a.level, source=a.source, message=a.message))


def deletions(ledger: Ledger, since: datetime | None = None, limit: int = 100) -> list[Deletion]:
    """What retention deleted, newest first."""
    with ledger.reading() as s:
        q = select(Deletion).order_by(col(Deletion.at).desc(), col(Deletion.id).desc())
        if since is not None:
            q = q.where(Deletion.at >= ts(since))
        return list(s.exec(q.limit(limit)).all())


def alerts(ledger: Ledger, since: datetime | None = None, limit: int = 100) -> list[Alert]:
    """Alerts (retention's and any other source's), newest first."""
    with ledger.reading() as s:
        q = select(Alert).order_by(col(Alert.at).desc(), col(Alert.id).desc())
        if since is not None:
            q = q.where(Alert.at >= ts(since))
        return list(s.exec(q.limit(limit)).all())


# --------------------------------------------------------------------------------- helpers
def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _parse_time(value: str) -> datetime:
    """A ledger time: the fixed-width form :func:`ts` writes, else any ISO time (naive: UTC)."""
    try:
        return parse_ts(value)
    except ValueError:
        return _utc(datetime.fromisoformat(value))


def human_size(n: float) -> str:
    """1000 B, 1.5 KB, 2.3 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"
