"""``/metrics``: the Prometheus text exposition, computed when it is scraped.

A custom collector on a registry of its own reads the spool (through the same
:func:`watchers.health.gather` that ``dashspool health`` uses) and the ledger, read-only, at each
scrape. No counter is incremented by the runtime: every value is derived from what is stored,
so every process that serves ``/metrics`` says the same and a restart loses nothing. (To keep
a scrape cheap on a big ledger, the sums over its events are remembered per ledger file and
each scrape adds only the events inserted since; the result always equals a full count.)

Counters come from the ledger's ``events`` table: one ``stage.completed``, ``stage.skipped``,
``stage.deferred`` or ``stage.failed`` row per finished attempt. Those rows are only ever added
(retention deletes raw clips and finished spool jobs, never events), so the counters only go up.
They are not counted from ``stage_attempts``, whose rows a requeue rewrites (its attempt numbers
start again at 1, so a failed attempt's row becomes the completed one and a count of failures
would go down), nor from the spool's ``done/`` folders, which retention empties. Restoring an
older ledger backup makes them go down once: Prometheus takes that as a counter reset.

Metric names and labels are listed in monitoring/README.md; the alert rules and the Grafana
dashboard there use them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from watchers import app
from watchers.clock import utcnow
from watchers.config import Policies
from watchers.health import Snapshot, gather
from watchers.sidecar import EventKind

if TYPE_CHECKING:
    from watchers.ledger import Ledger

log = logging.getLogger(__name__)

QUEUES = ("inbox", "work", "deferred", "failed")
# The classic text format, which every Prometheus reads (the body is the same in 1.0.0 for
# names like ours; prometheus_client's CONTENT_TYPE_LATEST says 1.0.0 from 0.22 on).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# processing time per job: stages take from a second (ingest) to many minutes (heavy on a CPU)
DURATION_BUCKETS_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# counter name -> the event kinds it counts
COUNTED: dict[str, tuple[EventKind, ...]] = {
    "done": (EventKind.STAGE_COMPLETED, EventKind.STAGE_SKIPPED),
    "failed": (EventKind.STAGE_FAILED,),
    "deferred": (EventKind.STAGE_DEFERRED,),
}


class LedgerTotals:
    """Per-stage counts and processing-time histograms, read from the ledger's events."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {name: {} for name in COUNTED}
        # stage -> (cumulative counts per bucket bound, +Inf count, sum of seconds)
        self.durations: dict[str, tuple[list[int], int, float]] = {}

    def add(self, other: LedgerTotals) -> None:
        for name, per_stage in other.counts.items():
            mine = self.counts[name]
            for stage, n in per_stage.items():
                mine[stage] = mine.get(stage, 0) + n
        for stage, (cumulative, n, total) in other.durations.items():
            had, had_n, had_total = self.durations.get(
                stage, ([0] * len(DURATION_BUCKETS_SECONDS), 0, 0.0)
            )
            both = [a + b for a, b in zip(had, cumulative, strict=True)]
            self.durations[stage] = (both, had_n + n, had_total + total)

    @classmethod
    def read(cls, ledger: Ledger, after: int = 0) -> tuple[LedgerTotals, int]:
        """The totals of the events with a rowid above ``after`` (0: all), and the highest
        rowid they include. Events are only ever inserted, each committed transaction after
        the ones before it, so the rows up to a rowid once read never change."""
        from sqlalchemy import text

        out = cls()
        kinds = {kind.value: name for name, ks in COUNTED.items() for kind in ks}
        finished = {k.value for k in COUNTED["done"]}
        names = ", ".join(f"'{k}'" for k in kinds)  # our own constants, not input
        timed = ", ".join(f"'{k}'" for k in sorted(finished))
        bucket_sums = ", ".join(f"SUM(d <= {b!r})" for b in DURATION_BUCKETS_SECONDS)
        with ledger.reading() as s:  # one read transaction: one snapshot for both queries
            upto = int(s.execute(text("SELECT COALESCE(MAX(rowid), 0) FROM events")).scalar_one())
            if upto <= after:
                return out, upto
            rows = s.execute(
                text(
                    f"SELECT kind, stage, COUNT(*), COUNT(d), TOTAL(d), {bucket_sums} FROM ("
                    "  SELECT kind, stage, CASE WHEN kind IN ("
                    f"{timed}) THEN CAST(json_extract(data, '$.duration_seconds') AS REAL) END AS d"
                    "  FROM events WHERE rowid > :after AND rowid <= :upto"
                    f"  AND kind IN ({names}) AND stage IS NOT NULL"
                    ") GROUP BY kind, stage"
                ),
                {"after": after, "upto": upto},
            ).all()
        for kind, stage, n, timed_n, total, *cumulative in rows:
            counts = out.counts[kinds[kind]]
            counts[stage] = counts.get(stage, 0) + int(n)
            if kind in finished and timed_n:
                part = cls()
                part.durations[stage] = ([int(c or 0) for c in cumulative], int(timed_n), total)
                out.add(part)
        return out, upto


class _Tally:
    """What was counted so far in one ledger file: a scrape reads only the events added since
    the last one (a full count of a million events takes seconds). The result is always the
    full count; a different file at the path (a restore) starts again from zero."""

    def __init__(self, file_id: tuple[int, int]) -> None:
        self.file_id = file_id
        self.upto = 0
        self.totals = LedgerTotals()


_TALLIES: dict[str, _Tally] = {}
_TALLY_LOCK = threading.Lock()


def ledger_totals(policies: Policies) -> LedgerTotals | None:
    """The ledger's totals now; None when there is no ledger or it cannot be read."""
    path = policies.ledger_path
    try:
        st = path.stat()
    except OSError:
        return None
    file_id = (st.st_dev, st.st_ino)
    with _TALLY_LOCK:
        tally = _TALLIES.get(str(path))
        if tally is None or tally.file_id != file_id:
            tally = _TALLIES[str(path)] = _Tally(file_id)
        try:
            ledger = app.open_ledger(policies, read_only=True)
            try:
                fresh, upto = LedgerTotals.read(ledger, tally.upto)
                if upto < tally.upto:  # fewer events than counted: not the same ledger
                    tally = _TALLIES[str(path)] = _Tally(file_id)
                    fresh, upto = LedgerTotals.read(ledger)
            finally:
                ledger.close()
        except Exception as e:  # a damaged or locked ledger: the spool's metrics still stand
            log.warning("metrics: the ledger could not be read: %s", e)
            return None
        tally.totals.add(fresh)
        tally.upto = upto
        result = LedgerTotals()
        result.add(tally.totals)
        return result


def ledger_totals_uncached(policies: Policies) -> LedgerTotals:
    """A full count, without the tally (to compare with it)."""
    ledger = app.open_ledger(policies, read_only=True)
    try:
        return LedgerTotals.read(ledger)[0]
    finally:
        ledger.close()


class DashspoolCollector(Collector):
    """Collects at scrape time from the spool and the ledger named by ``policies``."""

    def __init__(self, policies: Policies, now: datetime | None = None) -> None:
        self.policies = policies
        self.now = now  # tests pin the clock; None: the time of each scrape

    def collect(self) -> Iterator[Metric]:
        now = self.now or utcnow()
        snap = gather(self.policies, now)
        yield from _spool_metrics(snap, self.policies.order())
        yield from _store_metrics(snap)
        yield from _ledger_metrics(self.policies, [q.stage for q in snap.stages])


def _spool_metrics(snap: Snapshot, order: list[str]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "dashspool_spool_up", "1 when the spool could be read at this scrape, else 0."
    )
    up.add_metric([], 1 if snap.spool_ok else 0)
    yield up
    queue = GaugeMetricFamily(
        "dashspool_queue_jobs",
        "Jobs in a stage's queue folder: inbox (waiting), work (claimed), deferred (waiting "
        "to retry), failed (a person should look).",
        labels=["stage", "queue"],
    )
    oldest = GaugeMetricFamily(
        "dashspool_oldest_pending_age_seconds",
        "Age of the oldest job waiting in a stage's inbox; 0 when none waits.",
        labels=["stage"],
    )
    paused = GaugeMetricFamily(
        "dashspool_stage_paused",
        "1 while the stage is paused (dashspool pause), else 0.",
        labels=["stage"],
    )
    for q in snap.stages:
        for name in QUEUES:
            queue.add_metric([q.stage, name], getattr(q, name))
        oldest.add_metric([q.stage], q.oldest_pending_age_seconds or 0.0)
        paused.add_metric([q.stage], 1 if q.paused else 0)
    yield from (queue, oldest, paused)
    drops = GaugeMetricFamily(
        "dashspool_drops_pending",
        "Files dropped in the spool's top-level inbox that the entry stage has not adopted yet.",
    )
    backlog = GaugeMetricFamily(
        "dashspool_ledger_backlog_events",
        "Event files in the spool's ledger inbox that the coordinator has not ingested yet.",
    )
    lag = GaugeMetricFamily(
        "dashspool_ledger_oldest_event_age_seconds",
        "Age of the oldest event file waiting for the coordinator (its own time); 0 when none.",
    )
    if snap.spool_ok:
        drops.add_metric([], snap.drops_pending)
        backlog.add_metric([], snap.ledger_backlog)
        lag.add_metric([], snap.oldest_event_age_seconds or 0.0)
    yield from (drops, backlog, lag)
    age = GaugeMetricFamily(
        "dashspool_device_heartbeat_age_seconds",
        "Seconds since the device's last heartbeat (negative: its clock is ahead).",
        labels=["device"],
    )
    stamp = GaugeMetricFamily(
        "dashspool_device_last_heartbeat_timestamp_seconds",
        "Unix time of the device's last heartbeat.",
        labels=["device"],
    )
    stopped = GaugeMetricFamily(
        "dashspool_device_stopped",
        "1 when the device's last heartbeat says it stopped cleanly, else 0.",
        labels=["device"],
    )
    info = GaugeMetricFamily(
        "dashspool_device_info",
        "Always 1: what the device's heartbeat says it serves and runs.",
        labels=["device", "stage", "host", "version"],
    )
    for d in snap.devices:
        if d.last_beat is not None and d.age_seconds is not None:
            age.add_metric([d.device_id], d.age_seconds)
            stamp.add_metric([d.device_id], d.last_beat.timestamp())
        stopped.add_metric([d.device_id], 1 if d.state == "stopped" else 0)
        info.add_metric([d.device_id, d.stage or "", d.host or "", d.version or ""], 1)
    yield from (age, stamp, stopped, info)


def _store_metrics(snap: Snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "dashspool_store_up",
        "1 when the store's free space could be measured at this scrape, else 0.",
        labels=["store"],
    )
    size = GaugeMetricFamily(
        "dashspool_store_size_bytes",
        "Size of the filesystem or share holding the store.",
        labels=["store"],
    )
    free = GaugeMetricFamily(
        "dashspool_store_free_bytes",
        "Bytes still free for dashspool where the store is (the share's quota view on SMB).",
        labels=["store"],
    )
    ratio = GaugeMetricFamily(
        "dashspool_store_free_ratio", "Free bytes over size, 0 to 1.", labels=["store"]
    )
    for s in snap.stores:
        r = s.free_ratio
        up.add_metric([s.store], 0 if r is None else 1)
        if r is None or s.total_bytes is None or s.free_bytes is None:
            continue
        size.add_metric([s.store], s.total_bytes)
        free.add_metric([s.store], s.free_bytes)
        ratio.add_metric([s.store], r)
    yield from (up, size, free, ratio)


def _ledger_metrics(policies: Policies, stages: Iterable[str]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "dashspool_ledger_up", "1 when the ledger could be read at this scrape, else 0."
    )
    totals = ledger_totals(policies)
    up.add_metric([], 0 if totals is None else 1)
    yield up
    if totals is None:
        return
    names = list(stages)
    helps = {
        "done": "Stage attempts that finished a job (completed, or skipped with nothing to do), "
        "from the ledger's events.",
        "failed": "Jobs a stage moved to failed/, from the ledger's events.",
        "deferred": "Stage attempts deferred to retry later, from the ledger's events.",
    }
    for name, per_stage in totals.counts.items():
        c = CounterMetricFamily(f"dashspool_jobs_{name}", helps[name], labels=["stage"])
        for stage in _stages(names, per_stage):
            c.add_metric([stage], per_stage.get(stage, 0))
        yield c
    h = HistogramMetricFamily(
        "dashspool_stage_duration_seconds",
        "Processing time of the stage attempts that finished a job, from the ledger's events.",
        labels=["stage"],
    )
    for stage in _stages(names, totals.durations):
        cumulative, count, total = totals.durations.get(
            stage, ([0] * len(DURATION_BUCKETS_SECONDS), 0, 0.0)
        )
        buckets = [
            (_le(b), float(n)) for b, n in zip(DURATION_BUCKETS_SECONDS, cumulative, strict=True)
        ]
        h.add_metric([stage], [*buckets, ("+Inf", float(count))], total)
    yield h


def _stages(pipeline: list[str], seen: Iterable[str]) -> list[str]:
    """The pipeline's stages (every one, so rates start from 0), then any other the ledger has
    (a renamed or removed stage's counts must not vanish)."""
    return [*pipeline, *sorted(set(seen) - set(pipeline))]


def _le(bound: float) -> str:
    return repr(float(bound))


def registry(policies: Policies, now: datetime | None = None) -> CollectorRegistry:
    """A registry of its own holding only the dashspool collector (no process metrics)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DashspoolCollector(policies, now))
    return reg


def exposition(policies: Policies, now: datetime | None = None) -> tuple[bytes, str]:
    """The Prometheus text exposition (body, content type) as of ``now`` (default: the time of
    the call). What the web app serves at ``GET /metrics``."""
    return generate_latest(registry(policies, now)), CONTENT_TYPE
