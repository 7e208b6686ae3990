"""The worker: one stage on one device, owning the whole life of a job.

``loop_once(now)`` claims at most one job and carries it to a final state for this stage:
completed (outputs published, event written, claim moved to ``done/``), skipped, deferred or
failed. Cross-cutting behaviour wraps ``stage.process`` as middleware (in-process retries now;
time limits and metrics slot into the same list).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import tenacity

from watchers.clock import iso, utcnow
from watchers.config import Policies, RetrySettings
from watchers.errors import (
    AlreadyExists,
    BadJob,
    Duplicate,
    NotFound,
    PermanentError,
    Rejected,
    RetryLater,
    SkipJob,
    StorageUnavailable,
    TransientError,
)
from watchers.logs import context
from watchers.sidecar import Event, EventKind, HistoryEntry, Sidecar
from watchers.spool import DUPLICATES, REJECTED, Claim, Spool
from watchers.stage import Context, Stage

log = logging.getLogger(__name__)

TRANSIENT = (TransientError, StorageUnavailable, OSError)


class Middleware(Protocol):
    def around(self, ctx: Context, call: Callable[[], None]) -> None: ...


class InProcessRetries:
    """Retry transient errors a few times with jittered exponential backoff (tenacity), waiting
    on the stop event so a shutdown is never delayed by a backoff."""

    def __init__(self, settings: RetrySettings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop

    def around(self, ctx: Context, call: Callable[[], None]) -> None:
        s = self.settings

        def before_sleep(state: tenacity.RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            ctx.log.warning("attempt %d failed (%s); retrying", state.attempt_number, err)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            stop=tenacity.stop_after_attempt(s.in_process_attempts),
            wait=tenacity.wait_exponential_jitter(
                multiplier=s.in_process_initial_seconds, max=s.in_process_max_seconds
            ),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(call)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)  # a shutdown cuts the backoff short


def backoff_seconds(settings: RetrySettings, attempts: int) -> float:
    base = min(
        settings.defer_initial_seconds * 2 ** max(0, attempts - 1), settings.defer_max_seconds
    )
    return float(base) * random.uniform(0.9, 1.1)


def error_record(
    err: BaseException | str, *, claim: Claim, attempts: int, now: datetime
) -> dict[str, Any]:
    if isinstance(err, BaseException):
        kind, message = type(err).__name__, str(err) or repr(err)
        tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    else:
        kind, message, tb = "Abandoned", err, ""
    return {
        "type": kind,
        "message": message,
        "stage": claim.stage,
        "job": claim.job,
        "attempts": attempts,
        "device": claim.device,
        "time": iso(now),
        "traceback": tb,
    }


def job_event(
    kind: EventKind,
    claim: Claim,
    now: datetime,
    *,
    event_id: str | None = None,
    attempt: int = 0,
    **data: Any,
) -> Event:
    sc = claim.sidecar
    if sc is not None:
        data.setdefault("source_name", sc.source_name)
        data.setdefault("priority", sc.priority)
        data.setdefault("recorded_at", sc.recorded_at)
    return Event(
        event_id=event_id or Event.random_id(),
        kind=kind,
        at=now,
        device=claim.device,
        stage=claim.stage,
        job=claim.job,
        video_id=sc.video_id if sc else None,
        attempt=attempt,
        data=data,
    )


def return_claim(spool: Spool, policies: Policies, claim: Claim, now: datetime, why: str) -> str:
    """Give back a claim whose holder stopped mid-job (own restart or reaped): to the inbox with
    attempts + 1, or to ``failed/`` once the attempts are used up. Returns where it went
    ("gone" when someone else moved it first)."""
    try:
        return _return_claim(spool, policies, claim, now, why)
    except NotFound:
        return "gone"


def _return_claim(spool: Spool, policies: Policies, claim: Claim, now: datetime, why: str) -> str:
    if claim.stage == policies.pipeline.entry and spool.incomplete_adoption(claim):
        spool.drop_claim(claim)
        return "dropped"
    try:
        sidecar = spool.load(claim)
    except BadJob:
        return (
            "inbox" if spool.requeue(claim) else "failed"
        )  # the next claim fails it with a reason
    attempts = sidecar.attempts + 1
    if attempts >= policies.retry.max_attempts:
        message = f"{why} {attempts} times while working on it; giving up"
        spool.fail(claim, error_record(message, claim=claim, attempts=attempts, now=now))
        spool.emit(job_event(EventKind.STAGE_FAILED, claim, now, attempt=attempts, error=message))
        return "failed"
    spool.rewrite(claim, sidecar.model_copy(update={"attempts": attempts, "last_error": why}))
    spool.emit(job_event(EventKind.JOB_RECOVERED, claim, now, attempt=attempts, reason=why))
    return "inbox" if spool.requeue(claim) else "failed"


def _stem(path: str) -> str:
    """``a/b/X.MP4`` → ``a/b/X`` (the extension of the last part only)."""
    folder, sep, base = path.rpartition("/")
    return f"{folder}{sep}{base.rsplit('.', 1)[0]}" if "." in base[1:] else path


class Worker:
    def __init__(
        self,
        spool: Spool,
        policies: Policies,
        stage: Stage,
        device: str,
        *,
        stop: threading.Event | None = None,
        middleware: Sequence[Middleware] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.spool = spool
        self.policies = policies
        self.stage = stage
        self.name = stage.name
        self.device = device
        self.next_stages = policies.stages[self.name].next
        self.terminal_state = policies.stages[self.name].terminal_state
        self.is_entry = self.name == policies.pipeline.entry
        self.stop = stop or threading.Event()
        self.middleware = list(
            middleware if middleware is not None else [InProcessRetries(policies.retry, self.stop)]
        )
        self.clock = clock
        self.current_job: str | None = None
        self._candidates: list[str] = []
        self._dirty = True
        self._settle: dict[str, tuple[tuple[int, float], datetime]] = {}
        self._drop_names: list[str] = []
        self._companions: dict[str, list[str]] = {}
        self._drops_dirty = True
        self._next_release: datetime | None = None

    # ------------------------------------------------------------------ start
    def start(self, now: datetime | None = None, why: str = "the device stopped") -> int:
        """Take back this device's own claims of this stage (a crash or kill -9 left them, or
        the storage went away in the middle of a job)."""
        now = now or self.clock()
        n = 0
        for claim in self.spool.claims_of(self.device, [self.name]):
            with context(job=claim.job):
                where = return_claim(self.spool, self.policies, claim, now, why)
                log.info("recovered own claim -> %s", where)
            n += 1
        return n

    def mark_dirty(self) -> None:
        self._dirty = self._drops_dirty = True

    # ------------------------------------------------------------------- loop
    def loop_once(self, now: datetime | None = None) -> bool:
        """Claim and handle at most one job. False when there was nothing to do."""
        now = now or self.clock()
        if self.spool.is_paused(self.name):
            return False
        self._release_due(now)
        claim = self._next_claim(now)
        if claim is None:
            return False
        self.handle(claim, now)
        return True

    def _release_due(self, now: datetime) -> None:
        if self._next_release is not None and now < self._next_release:
            return
        self._next_release = now + timedelta(seconds=self.policies.spool.rescan_seconds)
        for job in self.spool.deferred_due(self.name, now):
            if self.spool.release(self.name, job):
                log.info("%s released from deferred", job)
                self._dirty = True

    def _next_claim(self, now: datetime) -> Claim | None:
        for _ in range(2):
            if self._dirty or not self._candidates:
                self._candidates = self.spool.pending(self.name)
                self._dirty = False
            while self._candidates:
                job = self._candidates.pop(0)
                try:
                    claim = self.spool.claim(self.name, job, self.device)
                except BadJob as err:
                    log.warning("%s: %s", job, err)
                    continue
                if claim is not None:
                    return claim
            if self.is_entry:
                claim = self._adopt_drop(now)
                if claim is not None:
                    return claim
            if not self._dirty:
                break
        return None

    def _adopt_drop(self, now: datetime) -> Claim | None:
        """Adopt the oldest settled drop anywhere in the inbox tree. The tree is listed once and
        walked name by name (each looked at afresh before adoption), not listed per adoption.
        Files with one of the stage's companion suffixes (a clip's ``.gpx``) travel with the
        file they belong to; alone, they are drops of their own and go first."""
        settle = self.policies.spool.settle_seconds
        if self._drops_dirty or not self._drop_names:
            age = max(settle, self.policies.spool.prune_empty_after_seconds)
            prune = (now - timedelta(seconds=age)).timestamp()
            listed = self.spool.drops(prune_before=prune)
            names = {e.name for e in listed}
            stems = {_stem(n): n for n in names if not n.lower().endswith(self._suffixes)}
            self._companions = {}
            own = []
            for e in listed:  # oldest first
                owner = self._owner(e.name, names, stems)
                if owner is None:
                    own.append(e.name)
                else:
                    self._companions.setdefault(owner, []).append(e.name)
            # lone companions (a trip's GPX) first, then locked/event clips, then the rest
            own.sort(
                key=lambda n: (not n.lower().endswith(self._suffixes), -self.stage.drop_priority(n))
            )
            self._drop_names = own
            self._drops_dirty = False
            for gone in set(self._settle) - names:
                del self._settle[gone]
        while self._drop_names:
            name = self._drop_names.pop(0)
            entry = self.spool.drop_entry(name)
            if entry is None or entry.kind == "dir":
                continue  # gone
            if entry.kind != "file":
                what = "a symbolic link" if entry.kind == "link" else "not a regular file"
                self._reject(entry, f"not a regular file: {what}", now)
                continue
            if not self._settled(entry, now, settle):
                continue
            companions = [
                c
                for c in map(self.spool.drop_entry, self._companions.get(name, ()))
                if c is not None and c.kind == "file"
            ]
            if not all(self._settled(c, now, settle) for c in companions):
                continue  # its .gpx is still being written: adopt them together later
            try:
                claim = self.spool.adopt(entry, self.name, self.device, now, companions)
            except AlreadyExists as err:
                self.spool.duplicate_drop(entry, str(err), self.device, now)
                continue
            except (StorageUnavailable, OSError):
                raise  # the storage's trouble (full, read-only), not the file's: try again later
            except Exception as err:  # a drop the runtime cannot take: give it back, go on
                log.exception("cannot adopt %r", name)
                self._reject(entry, f"cannot take this file: {err}", now)
                continue
            if claim is None:
                continue
            for done in (entry, *companions):
                self._settle.pop(done.name, None)
            with context(job=claim.job):
                log.info("adopted drop %r", name)
            # not fsynced: every later event of the job carries the same facts
            self.spool.emit(job_event(EventKind.VIDEO_NEW, claim, now), durable=False)
            return claim
        return None

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return tuple(s.lower() for s in self.stage.companion_suffixes)

    def _owner(self, name: str, names: set[str], stems: dict[str, str]) -> str | None:
        """The drop a companion file belongs to (``X.MP4`` for ``X.MP4.gpx`` or ``X.gpx``)."""
        low = name.lower()
        for sfx in self._suffixes:
            if low.endswith(sfx):
                base = name[: -len(sfx)]
                if base in names:
                    return base
                return stems.get(base)
        return None

    def _settled(self, entry: Any, now: datetime, settle: float) -> bool:
        """True once size and mtime have not changed for ``settle`` seconds (a file that is
        still being written never is)."""
        sig = (entry.size, entry.mtime)
        first = self._settle.get(entry.name)
        if first is None or first[0] != sig:
            self._settle[entry.name] = (sig, now)
            return settle <= 0
        return (now - first[1]).total_seconds() >= settle

    def _reject(self, entry: Any, reason: str, now: datetime) -> None:
        dst = self.spool.reject_drop(entry, reason, self.device, now)
        if dst is None:
            return
        log.warning("rejected drop %r: %s", entry.name, reason)
        self.spool.emit(
            Event(
                event_id=Event.random_id(),
                kind=EventKind.DROP_REJECTED,
                at=now,
                device=self.device,
                stage=self.name,
                data={"source_name": entry.name, "reason": reason, "moved_to": dst},
            )
        )

    # ----------------------------------------------------------------- handle
    def handle(self, claim: Claim, now: datetime) -> None:
        self.current_job = claim.job
        try:
            with context(job=claim.job):
                self._handle(claim, now)
        finally:
            self.current_job = None

    def _handle(self, claim: Claim, now: datetime) -> None:
        spool = self.spool
        try:
            sidecar = spool.load(claim)
        except NotFound:
            return
        except BadJob as err:
            self._fail(claim, err, attempts=0, now=now)
            return
        log.info("claimed (attempt %d)", sidecar.attempts + 1)
        attempt = sidecar.attempts + 1
        for nxt in self.next_stages:
            where = spool.locate(nxt, claim.job)
            if where is not None:  # a previous attempt published already: just finish
                log.info("output already in %s/%s; finishing", nxt, where)
                facts = self._published_facts(f"{nxt}/{where}/{claim.job}", sidecar)
                self._complete(claim, now, attempt, nxt, 0.0, already_published=True, **facts)
                return
        # informational: if a power cut loses it, the attempt is redone and says so again
        spool.emit(job_event(EventKind.STAGE_STARTED, claim, now, attempt=attempt), durable=False)
        staging = spool.staging(self.device, claim.job) if self.next_stages else None
        ctx = Context(
            spool=spool,
            claim=claim,
            staging=staging,
            next_stages=self.next_stages,
            now=now,
            log=logging.LoggerAdapter(logging.getLogger(f"stages.{self.name}"), {}),
        )
        t0 = time.monotonic()
        try:
            self._call(ctx)
            duration = time.monotonic() - t0
            route = ctx.routed or (self.next_stages[0] if self.next_stages else None)
            if ctx.final_state is not None:
                route = None
            if spool.backend.stat(claim.rel) is None:  # fenced: reaped while we worked
                log.warning("claim was taken from this device while it worked; dropping result")
                return
            if route is not None and staging is not None:
                out = self._next_sidecar(sidecar, ctx, route, now, duration)
                published = spool.publish(staging, out, route)
                if not published:
                    log.info("output already in %s/inbox", route)
            data: dict[str, Any] = {"facts": ctx.facts}
            new_id = ctx.updates.get("video_id")
            if new_id and new_id != sidecar.video_id:
                data["new_video_id"] = new_id  # the ledger re-keys the video from here on
            if ctx.final_state is not None:
                data["final_state"] = ctx.final_state
            self._complete(claim, now, attempt, route, duration, discard=ctx.consumed, **data)
            log.info(
                "completed in %.3fs -> %s",
                duration,
                route or data.get("final_state") or self.terminal_state,
            )
        except SkipJob as err:
            spool.emit(
                job_event(
                    EventKind.STAGE_SKIPPED,
                    claim,
                    now,
                    attempt=attempt,
                    reason=str(err),
                    final_state=self.terminal_state,
                )
            )
            spool.finish(claim)
            log.info("skipped: %s", err)
        except (Rejected, Duplicate) as err:
            if self.is_entry:
                self._set_aside(claim, err, attempt, now)
            else:  # past the entry there is no person's drop to give back
                self._fail(claim, err, attempts=attempt, now=now)
        except PermanentError as err:
            self._fail(claim, err, attempts=attempt, now=now)
        except RetryLater as err:
            self._defer(claim, sidecar, err, attempt, now, err.delay_seconds)
        except StorageUnavailable as err:
            if spool.storage_away():  # a NAS rebooting: not the job's fault, not counted
                delay = backoff_seconds(self.policies.retry, attempt)
                self._defer(claim, sidecar, err, attempt, now, delay, counted=False)
            elif attempt >= self.policies.retry.max_attempts:  # everything answers: the job's
                self._fail(claim, err, attempts=attempt, now=now)
            else:
                self._defer(claim, sidecar, err, attempt, now, None)
        except Exception as err:  # a stage bug or an exhausted transient error
            if attempt >= self.policies.retry.max_attempts:
                self._fail(claim, err, attempts=attempt, now=now)
            else:
                self._defer(claim, sidecar, err, attempt, now, None)
        finally:
            ctx.cleanup()
            if staging is not None:
                staging.discard()

    def _complete(
        self,
        claim: Claim,
        now: datetime,
        attempt: int,
        route: str | None,
        duration: float,
        discard: Iterable[str] = (),
        **data: Any,
    ) -> None:
        """The completion event (durable), then the claim to ``done/``. The same attempt always
        gets the same event id, so a repeated completion is ingested once. ``discard``: input
        files the stage consumed (moved elsewhere by a hard link), removed from the claim."""
        data.setdefault("final_state", None if route else self.terminal_state)
        self.spool.emit(
            job_event(
                EventKind.STAGE_COMPLETED,
                claim,
                now,
                event_id=Event.stable_id(claim.job, claim.stage, "completed", attempt),
                attempt=attempt,
                route=route,
                duration_seconds=round(duration, 6),
                **data,
            )
        )
        done = self.spool.finish(claim)
        for name in discard:  # after finish: a crash in between leaves a spare link, no more
            self.spool.discard_at(done, name)

    def _published_facts(self, rel: str, sidecar: Sidecar) -> dict[str, Any]:
        """What the completion event of a published attempt carries (its facts, the video id
        it gave), read back from the published sidecar: a crash between publish and event must
        not lose them from the ledger."""
        try:
            out = self.spool.read_sidecar_at(rel)
        except Exception:  # moved on meanwhile, or unreadable: the event goes without them
            return {}
        data: dict[str, Any] = {"facts": out.facts.get(self.name, {})}
        if out.video_id != sidecar.video_id:
            data["new_video_id"] = out.video_id
        return data

    def _set_aside(
        self, claim: Claim, err: Rejected | Duplicate, attempt: int, now: datetime
    ) -> None:
        """Give a refused drop back to people, with its sentence beside it."""
        rejected = isinstance(err, Rejected)
        folder = REJECTED if rejected else DUPLICATES
        kind = EventKind.DROP_REJECTED if rejected else EventKind.DROP_DUPLICATE
        # the event first (stable id: a crash and a second refusal are ingested once), so the
        # ledger never misses a refusal whose files are already set aside
        event_id = Event.stable_id(claim.job, claim.stage, kind.value)
        self.spool.emit(
            job_event(
                kind,
                claim,
                now,
                event_id=event_id,
                attempt=attempt,
                reason=str(err),
                moved_to=folder,
            )
        )
        moved = self.spool.set_aside(claim, folder, str(err), self.device, now)
        log.warning("%s: %s -> %s", "rejected" if rejected else "duplicate", err, ", ".join(moved))

    def _call(self, ctx: Context) -> None:
        def call() -> None:
            self.stage.process(ctx.job, ctx)

        for mw in reversed(self.middleware):
            call = (lambda m, inner: lambda: m.around(ctx, inner))(mw, call)
        call()

    def _next_sidecar(
        self, sidecar: Sidecar, ctx: Context, route: str, now: datetime, duration: float
    ) -> Sidecar:
        facts = dict(sidecar.facts)
        if ctx.facts:
            facts[self.name] = ctx.facts
        entry = HistoryEntry(
            stage=self.name,
            device=self.device,
            finished_at=now,
            duration_seconds=round(duration, 6),
            route=route,
        )
        update: dict[str, Any] = {
            **ctx.updates,
            "stage": route,
            "attempts": 0,
            "not_before": None,
            "last_error": None,
            "facts": facts,
            "refs": ctx.refs,
            "history": (*sidecar.history, entry),
        }
        return sidecar.model_copy(update=update)

    def _defer(
        self,
        claim: Claim,
        sidecar: Sidecar,
        err: BaseException,
        attempt: int,
        now: datetime,
        delay: float | None,
        *,
        counted: bool = True,
    ) -> None:
        """Defer the job; ``counted=False``: this attempt does not count toward max_attempts
        (the storage was away: whatever the job is, it never had its chance)."""
        delay = backoff_seconds(self.policies.retry, attempt) if delay is None else delay
        until = now + timedelta(seconds=delay)
        message = str(err) or type(err).__name__
        attempts = attempt if counted else sidecar.attempts
        self.spool.defer(
            claim,
            sidecar.model_copy(
                update={"attempts": attempts, "not_before": until, "last_error": message}
            ),
        )
        self.spool.emit(
            job_event(
                EventKind.STAGE_DEFERRED,
                claim,
                now,
                attempt=attempt,
                error=message,
                not_before=iso(until),
            )
        )
        log.warning("deferred until %s after attempt %d: %s", iso(until), attempt, message)

    def _fail(self, claim: Claim, err: BaseException, *, attempts: int, now: datetime) -> None:
        record = error_record(err, claim=claim, attempts=attempts, now=now)
        where = self.spool.fail(claim, record)
        self.spool.emit(
            job_event(
                EventKind.STAGE_FAILED,
                claim,
                now,
                attempt=attempts,
                error=record["message"],
                error_type=record["type"],
            )
        )
        log.error("failed -> %s: %s", where, record["message"])
