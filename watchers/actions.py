"""The operator's actions on the spool, shared by the CLI (``requeue``, ``pause``, ``resume``)
and the web UI's buttons: each checks its stage, changes the spool, and says what it did."""

from __future__ import annotations

import logging
from typing import Any

from watchers.clock import iso, utcnow
from watchers.config import Policies
from watchers.errors import ConfigError, NotFound
from watchers.sidecar import JOB_NAME_RE, Event, EventKind
from watchers.spool import Spool

log = logging.getLogger(__name__)


def check_stage(policies: Policies, stage: str) -> None:
    if stage not in policies.stages:
        raise ConfigError(f"{policies.label}: no stage named {stage!r}")


def requeue(
    spool: Spool, policies: Policies, video: str, stage: str | None, *, device: str = "cli"
) -> dict[str, Any]:
    """Put a failed or deferred job back in its stage's inbox, attempts reset. ``video`` is a
    video id prefix, short hash or job name; ``stage`` None looks in every stage (one job must
    match). Raises NotFound when none or several match."""
    if stage is not None:
        check_stage(policies, stage)
    stages = [stage] if stage else policies.order()
    # only job folders: find_job also yields the ``<job>.error.json.requeued`` notes an earlier
    # requeue left in failed/ (a spool.py matter, reported), which must never move
    found = [m for m in spool.find_job(stages, video) if JOB_NAME_RE.match(m[2])]
    matches = [m for m in found if m[1] in ("failed", "deferred")]
    where = stage or "any stage"
    if not matches:
        done = sorted(
            (m for m in found if m[1] in ("inbox", "done")), key=lambda m: m[1] != "inbox"
        )
        hint = f" (it is in {done[0][0]}/{done[0][1]}/)" if done else ""
        raise NotFound(f"no failed or deferred job matching {video!r} in {where}{hint}")
    if len(matches) > 1:
        jobs = ", ".join(f"{m[0]}/{m[2]}" for m in matches)
        raise NotFound(f"{video!r} matches {len(matches)} jobs: {jobs}")
    found_stage, queue, job = matches[0]
    rel = f"{found_stage}/{queue}/{job}"
    sidecar = None
    try:
        sidecar = spool.read_sidecar_at(rel)
        spool.write_sidecar_at(rel, sidecar.model_copy(update={"attempts": 0, "not_before": None}))
    except Exception as e:  # a broken job still goes back; its claim will fail it again
        log.warning("%s: sidecar not reset: %s", job, e)
    spool.move_to_inbox(found_stage, queue, job)
    spool.emit(
        Event(
            event_id=Event.random_id(),
            kind=EventKind.JOB_REQUEUED,
            at=utcnow(),
            device=device,
            stage=found_stage,
            job=job,
            video_id=sidecar.video_id if sidecar else None,
            data={"from": queue},
        )
    )
    return {"job": job, "stage": found_stage, "from": queue, "to": "inbox"}


def pause(spool: Spool, policies: Policies, stage: str, reason: str = "") -> None:
    """Pause a stage: ``<stage>/PAUSED`` with when and why; claims stop, work in hand ends."""
    check_stage(policies, stage)
    spool.pause(stage, f"paused {iso(utcnow())} {reason}".strip())


def resume(spool: Spool, policies: Policies, stage: str) -> bool:
    """Resume a stage; False when it was not paused."""
    check_stage(policies, stage)
    return spool.resume(stage)
