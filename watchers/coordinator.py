"""The coordinator: the only ledger writer, and the scheduled housekeeping (reaper, deferred
release). Each duty is a plain method taking ``now`` so tests drive time; APScheduler 3.x only
decides when they run in a real process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from watchers.clock import iso, utcnow
from watchers.config import Policies
from watchers.errors import BadJob, NotFound, StorageUnavailable
from watchers.ledger import Ledger
from watchers.logs import context
from watchers.sidecar import Event
from watchers.spool import Spool
from watchers.worker import return_claim

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(
        self,
        spool: Spool,
        policies: Policies,
        ledger: Ledger,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.spool = spool
        self.policies = policies
        self.ledger = ledger
        self.device = policies.coordinator.device_id
        self.stages = policies.order()
        self.clock = clock
        self.duties: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._scheduler: Any = None

    def start(self, now: datetime | None = None) -> None:
        """Return claims the reaper itself was holding when it stopped."""
        now = now or self.clock()
        for claim in self.spool.claims_of(self.device, self.stages):
            with context(job=claim.job):
                return_claim(self.spool, self.policies, claim, now, "the coordinator stopped")

    # ------------------------------------------------------------------ duties
    def ingest(self, now: datetime | None = None) -> int:
        """Apply every pending event file to the ledger, once; returns how many were new."""
        now = now or self.clock()
        total = 0
        batch = self.policies.ledger.ingest_batch
        while True:
            names = self.spool.event_files(batch)
            if not names:
                return total
            events: list[Event] = []
            good: list[str] = []
            for name in names:
                try:
                    events.append(self.spool.read_event(name))
                    good.append(name)
                except NotFound:
                    continue
                except BadJob as err:
                    log.error("ledger event %s refused: %s", name, err)
                    self.spool.reject_event(name, str(err))
            with self._lock:
                total += self.ledger.ingest(events, now)
            for name in good:
                self.spool.consume_event(name)
            if len(names) < batch:
                return total

    def reap(self, now: datetime | None = None) -> int:
        """Return claims of devices whose heartbeat is older than the lease to their inboxes."""
        now = now or self.clock()
        self.start(now)  # claims this reaper took earlier but could not return (storage away)
        lease = timedelta(seconds=self.policies.spool.lease_seconds)
        n = 0
        for device in self.spool.stale_devices(self.stages, now, lease):
            if device == self.device:
                continue
            for claim in self.spool.claims_of(device, self.stages):
                mine = self.spool.take_over(claim, self.device)
                if mine is None:
                    continue
                with context(job=claim.job):
                    where = return_claim(
                        self.spool, self.policies, mine, now, f"device {device} went silent"
                    )
                    log.warning("reaped from silent device %s -> %s", device, where)
                n += 1
            self.spool.clean_staging(device)
        return n

    def release_deferred(self, now: datetime | None = None) -> int:
        now = now or self.clock()
        n = 0
        for stage in self.stages:
            for job in self.spool.deferred_due(stage, now):
                if self.spool.release(stage, job):
                    n += 1
        return n

    # --------------------------------------------------------------- schedule
    def run_duty(self, name: str, fn: Callable[[], int]) -> int:
        started = self.clock()
        was = self.duties.get(name, {}).get("last_result", "")
        try:
            result = fn()
            self.duties[name] = {"last_run": iso(started), "last_result": f"ok ({result})"}
            return result
        except StorageUnavailable as err:  # the watch loop says so too: once, no traceback
            if not was.startswith("waiting for storage"):
                log.warning("scheduled job %s: waiting for storage: %s", name, err)
            self.duties[name] = {
                "last_run": iso(started),
                "last_result": f"waiting for storage: {err}",
            }
            return 0
        except Exception as err:  # a duty must never kill the coordinator
            log.exception("scheduled job %s failed", name)
            self.duties[name] = {"last_run": iso(started), "last_result": f"error: {err}"}
            return 0

    def retention(self, now: datetime | None = None) -> int:
        """One retention sweep (watchers/retention.py); returns how many items were deleted."""
        from watchers import retention

        result = retention.sweep(
            self.spool, self.policies, self.ledger, now or self.clock(), dry_run=False
        )
        return len(result.deleted)

    def backup(self, now: datetime | None = None) -> int:
        """The daily ledger backup and its rotation (watchers/backup.py); returns 1."""
        from watchers import backup

        backup.scheduled_backup(self.policies, self.ledger, now or self.clock())
        return 1

    def start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        c = self.policies.coordinator
        hour, minute = self.policies.backup.time_utc.split(":")
        now = self.clock()
        sched = BackgroundScheduler(timezone="UTC")
        duties: list[tuple[str, Callable[[], int], Any, datetime | None]] = [
            ("reaper", self.reap, IntervalTrigger(seconds=c.reaper_interval_seconds), now),
            (
                "deferred-release",
                self.release_deferred,
                IntervalTrigger(seconds=c.deferred_interval_seconds),
                now,
            ),
            (
                "retention",
                self.retention,
                IntervalTrigger(seconds=self.policies.retention.interval_seconds),
                now + timedelta(seconds=60),  # not in the same breath as a restart
            ),
            ("backup", self.backup, CronTrigger(hour=int(hour), minute=int(minute)), None),
        ]
        for name, fn, trigger, first in duties:
            sched.add_job(
                self.run_duty,
                trigger,
                args=(name, fn),
                id=name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=3600,
                **({"next_run_time": first} if first is not None else {}),
            )
        sched.start()
        self._scheduler = sched

    def stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)  # a sweep or backup in hand finishes first
            self._scheduler = None

    def schedule_info(self) -> dict[str, dict[str, Any]]:
        duties = dict(self.duties)  # one C-level copy: scheduler threads add keys meanwhile
        info = {k: dict(v) for k, v in duties.items()}
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                nxt = job.next_run_time
                info.setdefault(job.id, {})["next_run"] = iso(nxt) if nxt else None
        return info
