"""``dashspool health``: the owner's alert thresholds, checked once, with an exit code.

:func:`gather` reads what the checks need in one pass — the spool's per-stage counts and
heartbeats (the same :func:`watchers.app.status` that ``dashspool status`` prints), the free space
of the spool and the stores, and the ledger inbox's backlog — into a :class:`Snapshot`.
:func:`evaluate` turns a snapshot and ``[health]`` into :class:`Problem` lines. ``/metrics``
(watchers/metrics.py) exports the same snapshot, and monitoring/rules/dashspool.rules.yml alerts
on the same thresholds, so Prometheus and this command agree on what is wrong.

Levels (the exit code is the worst one: 0 ok, 1 warning, 2 critical):

==================  ===========================================================  ==========
check               problem                                                      level
==================  ===========================================================  ==========
``spool``           the spool cannot be read, or its folder is empty or missing  critical
``pending``         more than ``max_pending_jobs`` in one stage's inbox          warning
``pending_age``     a job waiting longer than ``max_pending_age_seconds``        critical
``device_silent``   no heartbeat for ``device_silent_seconds`` (not stopped)     warning
``device_silent``   a heartbeat file that cannot be read                         warning
``free_space``      spool or raw store under its ``*_min_free_percent``          warning
``free_space``      archive under ``archive_min_free_percent``                   critical
``free_space``      a store that cannot be measured (missing, unreachable)       critical
``ledger_lag``      an event file older than ``ledger_max_lag_seconds``          warning
==================  ===========================================================  ==========
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from watchers import app
from watchers.clock import iso, utcnow
from watchers.config import HealthSettings, Policies
from watchers.spool import Spool
from watchers.stores import ARCHIVE, RAW, Store, location, open_store

log = logging.getLogger(__name__)

SPOOL_STORE = "spool"
STORES = (SPOOL_STORE, RAW, ARCHIVE)  # the label values of `store`, in this order


class Level(IntEnum):
    """A problem's level; also ``dashspool health``'s exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    @property
    def label(self) -> str:
        return self.name.lower()


# check -> its level (free_space and device_silent vary by subject: see LEVELS' callers)
PENDING, PENDING_AGE, DEVICE_SILENT, FREE_SPACE, LEDGER_LAG, SPOOL = (
    "pending",
    "pending_age",
    "device_silent",
    "free_space",
    "ledger_lag",
    "spool",
)
LEVELS: dict[str, Level] = {
    SPOOL: Level.CRITICAL,
    PENDING: Level.WARNING,
    PENDING_AGE: Level.CRITICAL,
    DEVICE_SILENT: Level.WARNING,
    LEDGER_LAG: Level.WARNING,
}
FREE_SPACE_LEVELS: dict[str, Level] = {
    SPOOL_STORE: Level.WARNING,
    RAW: Level.WARNING,
    ARCHIVE: Level.CRITICAL,
}


# ------------------------------------------------------------------------------ the snapshot
@dataclass(frozen=True)
class StageQueues:
    stage: str
    inbox: int
    work: int
    deferred: int
    failed: int
    done: int
    paused: bool
    oldest_pending_age_seconds: float | None


@dataclass(frozen=True)
class DeviceBeat:
    device_id: str
    stage: str | None
    host: str | None
    version: str | None
    state: str  # as `dashspool status` says: running, stopped, stale, offline, unknown, ...
    last_beat: datetime | None
    age_seconds: float | None


@dataclass(frozen=True)
class StoreSpace:
    store: str  # spool, raw, archive
    where: str
    total_bytes: int | None = None
    free_bytes: int | None = None
    problem: str | None = None  # why it could not be measured

    @property
    def free_ratio(self) -> float | None:
        if self.total_bytes is None or self.free_bytes is None or self.total_bytes <= 0:
            return None
        return self.free_bytes / self.total_bytes


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    spool: str
    spool_problem: str | None = None  # set: the spool could not be read (nothing below is)
    stages: list[StageQueues] = field(default_factory=list)
    devices: list[DeviceBeat] = field(default_factory=list)
    stores: list[StoreSpace] = field(default_factory=list)
    drops_pending: int = 0
    ledger_backlog: int = 0
    oldest_event_age_seconds: float | None = None

    @property
    def spool_ok(self) -> bool:
        return self.spool_problem is None


DiskUsage = Callable[[Store], "tuple[int, int] | None"]


def _measure(name: str, store: Store, disk_usage: DiskUsage) -> StoreSpace:
    try:
        usage = disk_usage(store)
    except Exception as e:  # an unreachable share, a permission problem: say so, go on
        return StoreSpace(name, store.url, problem=f"cannot be measured: {e}")
    if usage is None:
        return StoreSpace(name, store.url, problem="not there (not mounted, or not made yet?)")
    total, free = usage
    return StoreSpace(name, store.url, total_bytes=int(total), free_bytes=int(free))


def _store_space(
    policies: Policies,
    name: str,
    spool: Spool | None,
    disk_usage: DiskUsage,
    opened: list[Store],
) -> StoreSpace:
    if spool is not None and name in spool.stores:
        return _measure(name, spool.stores[name], disk_usage)
    try:
        store = open_store(policies, name)
    except Exception as e:  # e.g. an smb:// store on a machine without the nas extra
        return StoreSpace(name, location(policies, name), problem=f"cannot open: {e}")
    opened.append(store)
    return _measure(name, store, disk_usage)


def _oldest_event_age(spool: Spool, now: datetime) -> tuple[int, float | None]:
    """Event files waiting in the ledger inbox and the age of the oldest (from its own time)."""
    names = spool.event_files(1 << 62)  # sorted by name: the event's UTC time comes first
    if not names:
        return 0, None
    try:
        oldest = spool.read_event(names[0]).at
    except Exception as e:  # ingested meanwhile, or unreadable (the coordinator rejects it)
        log.debug("oldest ledger event %s not read: %s", names[0], e)
        return len(names), None
    return len(names), max(0.0, (now - oldest).total_seconds())


def gather(
    policies: Policies,
    now: datetime | None = None,
    *,
    spool: Spool | None = None,
    disk_usage: DiskUsage = Store.space,
) -> Snapshot:
    """Everything the checks and ``/metrics`` need, read once. Storage that cannot be reached
    is recorded as a problem in the snapshot, never raised. The stores are the spool's own
    (``Spool.stores``); only when the spool cannot be opened are they opened one by one."""
    now = now or utcnow()
    own = spool is None
    opened: list[Store] = []  # what this call opened, to close
    spool_problem = None
    try:
        if spool is None:
            spool = app.open_spool(policies)
            opened += [spool.stores[RAW], spool.stores[ARCHIVE]]
    except Exception as e:
        spool_problem = f"cannot be opened: {e}"
    try:
        stores = [
            _store_space(policies, name, spool, disk_usage, opened) for name in (RAW, ARCHIVE)
        ]
        if spool is None:
            return Snapshot(now, policies.spool_url, spool_problem=spool_problem, stores=stores)
        where = spool.backend.url
        try:
            stores.insert(0, _measure(SPOOL_STORE, Store(SPOOL_STORE, spool.backend), disk_usage))
            if not spool.backend.list(""):
                problem = "its folder is empty or missing (not mounted? no watcher started yet?)"
                return Snapshot(now, where, spool_problem=problem, stores=stores)
            status = app.status(spool, policies, now)
            backlog, oldest_event = _oldest_event_age(spool, now)
        except Exception as e:
            return Snapshot(now, where, spool_problem=f"cannot be read: {e}", stores=stores)
    finally:
        for store in opened:
            store.backend.close()
        if own and spool is not None:
            spool.backend.close()
    stages = [StageQueues(stage=name, **counts) for name, counts in status["stages"].items()]
    devices = [
        DeviceBeat(
            device_id=d["device_id"],
            stage=d["stage"],
            host=d["host"],
            version=d["version"],
            state=d["state"],
            last_beat=_parse_time(d["last_beat"]),
            age_seconds=d["age_seconds"],
        )
        for d in status["devices"]
    ]
    return Snapshot(
        now,
        where,
        stages=stages,
        devices=devices,
        stores=stores,
        drops_pending=status["drops_pending"],
        ledger_backlog=backlog,
        oldest_event_age_seconds=oldest_event,
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# ------------------------------------------------------------------------------ the checks
@dataclass(frozen=True)
class Problem:
    level: Level
    check: str
    subject: str  # the stage, device or store; "spool" / "ledger" for those
    message: str
    value: float | None = None
    threshold: float | None = None

    def line(self) -> str:
        return f"{self.level.name} {self.check} {self.subject}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level.label}


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def evaluate(snap: Snapshot, h: HealthSettings) -> list[Problem]:
    """The problems in ``snap`` by the thresholds in ``h``, worst first."""
    out: list[Problem] = []
    if snap.spool_problem is not None:
        out.append(Problem(LEVELS[SPOOL], SPOOL, "spool", f"{snap.spool}: {snap.spool_problem}"))
    for q in snap.stages:
        paused = " (the stage is paused)" if q.paused else ""
        if q.inbox > h.max_pending_jobs:
            out.append(
                Problem(
                    LEVELS[PENDING],
                    PENDING,
                    q.stage,
                    f"{q.inbox} jobs waiting in its inbox, more than health.max_pending_jobs "
                    f"{h.max_pending_jobs}{paused}",
                    q.inbox,
                    h.max_pending_jobs,
                )
            )
        age = q.oldest_pending_age_seconds
        if age is not None and age > h.max_pending_age_seconds:
            out.append(
                Problem(
                    LEVELS[PENDING_AGE],
                    PENDING_AGE,
                    q.stage,
                    f"a job has waited {_duration(age)} in its inbox, longer than "
                    f"health.max_pending_age_seconds {h.max_pending_age_seconds:g}{paused}",
                    round(age, 3),
                    h.max_pending_age_seconds,
                )
            )
    for d in snap.devices:
        if d.state == "stopped":
            continue  # stopped cleanly (systemctl stop, a machine shut down): not silent
        if d.state == "unknown" or d.age_seconds is None:
            out.append(
                Problem(
                    LEVELS[DEVICE_SILENT],
                    DEVICE_SILENT,
                    d.device_id,
                    "its heartbeat file cannot be read",
                )
            )
        elif d.age_seconds > h.device_silent_seconds:
            out.append(
                Problem(
                    LEVELS[DEVICE_SILENT],
                    DEVICE_SILENT,
                    d.device_id,
                    f"no heartbeat for {_duration(d.age_seconds)} (state {d.state}), longer "
                    f"than health.device_silent_seconds {h.device_silent_seconds:g}",
                    d.age_seconds,
                    h.device_silent_seconds,
                )
            )
    minimum = {
        SPOOL_STORE: h.spool_min_free_percent,
        RAW: h.raw_min_free_percent,
        ARCHIVE: h.archive_min_free_percent,
    }
    for s in snap.stores:
        ratio = s.free_ratio
        if s.problem is not None or ratio is None:
            if s.store == SPOOL_STORE and snap.spool_problem is not None:
                continue  # said once already
            out.append(
                Problem(
                    Level.CRITICAL,
                    FREE_SPACE,
                    s.store,
                    f"{s.where}: {s.problem or 'free space unknown'}",
                )
            )
        elif ratio * 100 < minimum[s.store]:
            out.append(
                Problem(
                    FREE_SPACE_LEVELS[s.store],
                    FREE_SPACE,
                    s.store,
                    f"{s.where}: {ratio * 100:.1f}% free ({_gib(s.free_bytes)} of "
                    f"{_gib(s.total_bytes)}), under health.{s.store}_min_free_percent "
                    f"{minimum[s.store]:g}",
                    round(ratio * 100, 3),
                    minimum[s.store],
                )
            )
    lag = snap.oldest_event_age_seconds
    if lag is not None and lag > h.ledger_max_lag_seconds:
        out.append(
            Problem(
                LEVELS[LEDGER_LAG],
                LEDGER_LAG,
                "ledger",
                f"{snap.ledger_backlog} event files waiting, the oldest for {_duration(lag)}, "
                f"longer than health.ledger_max_lag_seconds {h.ledger_max_lag_seconds:g} "
                "(is the coordinator running?)",
                round(lag, 3),
                h.ledger_max_lag_seconds,
            )
        )
    out.sort(key=lambda p: -p.level)
    return out


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


@dataclass(frozen=True)
class Report:
    snapshot: Snapshot
    problems: list[Problem]

    @property
    def level(self) -> Level:
        return max((p.level for p in self.problems), default=Level.OK)

    def lines(self) -> list[str]:
        if not self.problems:
            s = self.snapshot
            return [
                f"OK: {len(s.stages)} stages, {len(s.devices)} devices and "
                f"{len(s.stores)} stores checked, no problem"
            ]
        return [p.line() for p in self.problems]

    def as_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "status": self.level.label,
            "exit_code": int(self.level),
            "generated_at": iso(s.now),
            "spool": s.spool,
            "problems": [p.as_dict() for p in self.problems],
            "checked": {
                "stages": [q.stage for q in s.stages],
                "devices": [d.device_id for d in s.devices],
                "stores": {
                    x.store: None if x.free_ratio is None else round(x.free_ratio * 100, 3)
                    for x in s.stores
                },
                "ledger_backlog": s.ledger_backlog,
            },
        }


def check(policies: Policies, now: datetime | None = None, *, spool: Spool | None = None) -> Report:
    """Gather and evaluate: what ``dashspool health`` prints."""
    snap = gather(policies, now, spool=spool)
    return Report(snap, evaluate(snap, policies.health))
