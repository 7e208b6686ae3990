"""The watch loop: watchdog's inotify events for latency, a full rescan every N seconds for truth
(inotify drops events on overflow and never sees other machines' writes on a network mount).

One :class:`Runner` serves any mix of stage workers and the coordinator in one thread, round
robin: ``dashspool watch`` is one worker, ``dashspool coordinator`` no worker, ``dashspool run``
all of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from watchers import __version__, runstate
from watchers.backends.base import Notifier
from watchers.clock import iso, utcnow
from watchers.config import Policies
from watchers.errors import StorageUnavailable
from watchers.spool import DROPS, LEDGER_INBOX, Spool
from watchers.worker import Worker

if TYPE_CHECKING:
    from watchers.coordinator import Coordinator

log = logging.getLogger(__name__)


class _Wake:
    """A watchdog handler that only sets an event (it runs on the observer's thread)."""

    def __init__(self, wake: threading.Event) -> None:
        self.wake = wake

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("created", "moved", "closed"):
            self.wake.set()


def prompt_observer() -> Any:
    """watchdog's inotify observer without its 0.5 s hold-back. watchdog keeps every inotify event
    for 0.5 s to pair IN_MOVED_FROM with IN_MOVED_TO; we never need the pair (any event only
    means "look again"), and the hold-back alone would put ~250 ms on every pickup. Elsewhere
    (no inotify) watchdog's default observer for the platform."""
    try:
        from watchdog.observers.api import BaseObserver
        from watchdog.observers.inotify import InotifyEmitter
        from watchdog.observers.inotify_buffer import InotifyBuffer
    except ImportError:  # pragma: no cover - not Linux
        from watchdog.observers import Observer

        return Observer()

    class PromptBuffer(InotifyBuffer):
        delay = 0.0

    class PromptEmitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = PromptBuffer(
                os.fsencode(self.watch.path),
                recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
            )

    return BaseObserver(PromptEmitter)


class Runner:
    def __init__(
        self,
        spool: Spool,
        policies: Policies,
        device: str,
        workers: Sequence[Worker],
        coordinator: Coordinator | None = None,
        *,
        until_idle: bool = False,
        max_jobs: int | None = None,
        use_events: bool = True,
        stop: threading.Event | None = None,
        on_job: Callable[[Worker], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.spool = spool
        self.policies = policies
        self.device = device
        self.workers = list(workers)
        self.coordinator = coordinator
        self.until_idle = until_idle
        self.max_jobs = max_jobs
        self.use_events = use_events
        self.stop = stop or threading.Event()
        self.wake = threading.Event()
        self.on_job = on_job
        self.clock = clock
        self.handled = 0
        self.state = "starting"
        self._observer: Any = None
        self._notifier: Notifier | None = None
        self._beat_ok = True  # the last heartbeat was written (log only the changes)
        self._beat_lock = threading.Lock()
        self._next_ingest = clock()
        self._beat_thread: threading.Thread | None = None
        order = policies.order()
        self._stages = [s for s in order if any(w.name == s for w in self.workers)]

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    # ----------------------------------------------------------------- setup
    def _watch_dirs(self) -> list[str]:
        dirs = [f"{w.name}/inbox" for w in self.workers]
        if any(w.is_entry for w in self.workers):
            dirs.append(DROPS)
        if self.coordinator is not None:
            dirs.append(LEDGER_INBOX)
        return dirs

    def _start_observer(self) -> None:
        if not self.use_events:
            return
        backend = self.spool.backend
        if not backend.watchable:
            try:
                self._notifier = backend.notify(self._watch_dirs(), self.wake.set)
            except StorageUnavailable as err:  # the loop waits for storage; rescans still run
                log.warning("change notification not started: %s", err)
            if self._notifier is not None:
                log.info("watching %s through the server's change notification", backend.url)
            else:
                log.info(
                    "storage is a network mount: polling every %ss",
                    self.policies.spool.rescan_seconds,
                )
            return
        observer = prompt_observer()
        handler = _Wake(self.wake)
        for rel in self._watch_dirs():
            path = self.spool.backend.local_path(rel)
            if path is not None:
                observer.schedule(handler, str(path), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _heartbeat(self, state: str | None = None) -> None:
        with self._beat_lock:  # the loop and the heartbeat thread write the same file
            self._write_heartbeat(state)

    def _beat_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "stage": ",".join(w.name for w in self.workers) or "coordinator",
            "state": self.state,
            "current_job": next((w.current_job for w in self.workers if w.current_job), None),
            "jobs_handled": self.handled,
        }
        if self.coordinator is not None and self.coordinator.device == self.device:
            info["jobs"] = self.coordinator.schedule_info()  # `dashspool coordinator` alone
        return info

    def _write_local(self, info: dict[str, Any]) -> None:
        """This machine's copy of the heartbeat: status reads it while the spool cannot be."""
        runstate.write(
            self.device,
            {
                **info,
                "device_id": self.device,
                "spool": self.spool.backend.url,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
                "last_beat": iso(self.clock()),
            },
        )

    def _write_heartbeat(self, state: str | None) -> None:
        if state:
            self.state = state
        info = self._beat_info()
        self._write_local(info)
        try:
            self.spool.beat(self.device, info, self.clock())
            if self.coordinator is not None and self.coordinator.device != self.device:
                self.spool.beat(
                    self.coordinator.device,
                    {
                        "stage": "coordinator",
                        "state": self.state,
                        "jobs": self.coordinator.schedule_info(),
                    },
                    self.clock(),
                )
        except Exception as err:  # storage away: say so once, the loop handles the rest
            if self._beat_ok:
                log.warning("heartbeat not written: %s", err)
            self._beat_ok = False
        else:
            if not self._beat_ok:
                log.info("heartbeat written again")
            self._beat_ok = True

    def _prepare(self) -> bool:
        """Lay out the spool, check the device id is free, and take back this device's own
        claims. A device started while the storage is away (a NAS still booting) waits for it,
        saying so once, instead of exiting; False when it was stopped while waiting."""
        rescan = self.policies.spool.rescan_seconds
        waiting = False
        while True:
            try:
                self.spool.ensure_layout(self.policies.order())
                lease = timedelta(seconds=self.policies.spool.lease_seconds)
                self.spool.check_device_free(self.device, self.clock(), lease)
                if self.coordinator is not None:
                    self.spool.check_device_free(self.coordinator.device, self.clock(), lease)
                self.spool.clean_staging(self.device)
                for w in self.workers:
                    w.start()
                if self.coordinator is not None:
                    self.coordinator.start()
            except StorageUnavailable as err:
                if not waiting:
                    log.warning("waiting for storage before starting: %s", err)
                    waiting = True
                    self.state = "waiting-for-storage"
                self._write_local(self._beat_info())  # the spool's heartbeat must wait
                if self.stop.wait(min(rescan, 5.0)):
                    return False
                continue
            if waiting:
                log.info("storage is there: starting")
            return True

    def _storage_back(self) -> None:
        """The storage answers again: jobs it dropped in the middle of are taken back (to their
        inbox, as after a crash; their outputs are idempotent), then work goes on."""
        self.spool.clean_staging(self.device)
        taken = sum(w.start(why="the storage went away in the middle of it") for w in self.workers)
        log.info("storage is back%s", f"; {taken} interrupted job(s) queued again" if taken else "")
        self._heartbeat("running")
        for w in self.workers:
            w.mark_dirty()

    def _beat_loop(self) -> None:
        every = self.policies.spool.heartbeat_seconds
        while not self.stop.wait(every):
            self._heartbeat()

    # ------------------------------------------------------------------ loop
    def loop_once(self, now: datetime | None = None) -> bool:
        """One round: each worker may handle one job; the coordinator ingests the ledger."""
        did = False
        for w in self.workers:
            if self.stop.is_set() or self._limit_reached():
                break
            if w.loop_once(now):
                did = True
                self.handled += 1
                if self.on_job:
                    self.on_job(w)
        if self.coordinator is not None:
            # batch the ledger: ingest every ingest_interval_seconds, or at once when idle
            clock = now or self.clock()
            if not did or clock >= self._next_ingest:
                self._next_ingest = clock + timedelta(
                    seconds=self.policies.coordinator.ingest_interval_seconds
                )
                if self.coordinator.ingest(clock):
                    did = True
        return did

    def _limit_reached(self) -> bool:
        return self.max_jobs is not None and self.handled >= self.max_jobs

    def idle(self) -> bool:
        """Nothing pending for the stages served here, and the ledger has caught up."""
        entry = any(w.is_entry for w in self.workers)
        if self._stages and self.spool.busy(self._stages, drops=entry):
            return False
        return not (self.coordinator is not None and self.spool.ledger_backlog())

    def run(self) -> int:
        """Serve until stopped (or idle / max jobs). Returns the process exit code."""
        if not self._prepare():
            return 0  # stopped while waiting for the storage
        if self.coordinator is not None:
            self.coordinator.start_scheduler()
        self._start_observer()
        self._heartbeat("running")
        self._beat_thread = threading.Thread(target=self._beat_loop, name="heartbeat", daemon=True)
        self._beat_thread.start()
        rescan = self.policies.spool.rescan_seconds
        storage_down = False
        try:
            while not self.stop.is_set() and not self._limit_reached():
                try:
                    if storage_down:
                        self._storage_back()
                        storage_down = False
                    did = self.loop_once()
                except StorageUnavailable as err:
                    if not storage_down:
                        log.warning("waiting for storage: %s", err)
                        storage_down = True
                        self._heartbeat("waiting-for-storage")
                    self.stop.wait(min(rescan, 5.0))
                    continue
                except Exception:  # a runtime bug must not take the watcher down with it
                    log.exception("unexpected error in the watch loop; going on shortly")
                    self.stop.wait(min(rescan, 5.0))
                    for w in self.workers:
                        w.mark_dirty()
                    continue
                if did:
                    continue
                timeout = rescan
                if self.until_idle:
                    if self.idle() and self.idle():
                        break
                    timeout = min(rescan, 0.1)  # others are still working: look again soon
                self.wake.wait(timeout)
                self.wake.clear()
                for w in self.workers:
                    w.mark_dirty()  # an event or the periodic rescan: list the inbox again
        finally:
            self.stop.set()
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=5)
            if self._notifier is not None:
                self._notifier.stop()
            if self.coordinator is not None:
                self.coordinator.stop_scheduler()
            if self._beat_thread is not None:
                self._beat_thread.join(timeout=5)  # its last beat lands before "stopped"
            for w in self.workers:
                try:
                    w.stage.teardown()
                except Exception:  # a stage that fails to let go must not hide the exit code
                    log.exception("%s: teardown failed", w.name)
            self._heartbeat("stopped")
        return 0
