"""The JSON API under ``/api/`` (its OpenAPI document is ``/openapi.json``). Reads go through
:mod:`watchers.queries` and :mod:`watchers.labels`, the same code as the pages and the CLI; the
three actions need the token (:func:`security.require_token`)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from watchers import actions, labels, queries
from watchers import app as wiring
from watchers.clock import utcnow
from watchers.errors import NotFound
from watchers.web.media import Media, media
from watchers.web.security import require_token
from watchers.web.state import WebState, web


class Problem(BaseModel):
    detail: str


router = APIRouter(
    prefix="/api",
    tags=["api"],
    responses={
        404: {"model": Problem, "description": "no such trip, clip, stage or job"},
        503: {"model": Problem, "description": "the ledger or the spool cannot be read"},
    },
)
ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no token, or the wrong one"},
    403: {"model": Problem, "description": "read-only: the server has no token"},
}
Web = Annotated[WebState, Depends(web)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many rows.")]
VIDEO_ID = r"^[0-9a-f]{6,64}$"
STAGE = r"^[a-z][a-z0-9_-]{0,31}$"
DAY = r"^\d{4}-\d{2}-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d{1,6})?)?)?Z?)?$"
ALERTS_HOURS, ALERTS_SHOWN = 24, 10


class ClipResponse(queries.ClipDetail):
    media: Media


class StageCounts(BaseModel):
    inbox: int
    work: int
    deferred: int
    failed: int
    done: int
    paused: bool
    oldest_pending_age_seconds: float | None


class Device(BaseModel):
    model_config = ConfigDict(extra="allow")

    device_id: str
    stage: Any = None
    host: Any = None
    pid: Any = None
    version: Any = None
    current_job: Any = None
    last_beat: Any = None
    age_seconds: float | None = None
    state: str
    jobs: Any = None  # the scheduler's jobs this device reports (the coordinator's duties)


class AlertRow(BaseModel):
    id: int | None
    at: str
    level: str
    source: str
    message: str


class Failure(BaseModel):
    at: str
    kind: str
    device: str
    stage: str | None
    job: str | None
    video_id: str | None
    reason: str | None


class Status(BaseModel):
    """``dashspool status --json`` (docs/status.schema.json), with the ledger's recent alerts
    and failures; ``ledger_error`` says why those two are empty when the ledger is unreadable."""

    spool: str
    reachable: bool = True  # an unreachable spool answers 503 here (`dashspool status`: exit 5)
    generated_at: str
    drops_pending: int
    ledger_backlog: int
    stages: dict[str, StageCounts]
    devices: list[Device]
    alerts: list[AlertRow] = []
    failures: list[Failure] = []
    ledger_error: str | None = None


class Done(BaseModel):
    stage: str
    paused: bool
    changed: bool


class Requeued(BaseModel):
    job: str
    stage: str
    from_: str = Field(alias="from")  # the queue it left: failed or deferred
    to: str


def _failures(st: WebState, limit: int) -> list[Failure]:
    out = []
    for e in st.ledger.failures(limit):
        data = json.loads(e.data) if e.data else {}
        reason = data.get("error") or data.get("reason") if isinstance(data, dict) else None
        out.append(
            Failure(
                at=e.at,
                kind=e.kind,
                device=e.device,
                stage=e.stage,
                job=e.job or (data.get("source_name") if isinstance(data, dict) else None),
                video_id=e.video_id,
                reason=None if reason is None else str(reason),
            )
        )
    return out


def pipeline_status(st: WebState, failures: int = 20) -> Status:
    """What the pipeline page and ``GET /api/status`` show."""
    from sqlalchemy.exc import SQLAlchemyError

    from watchers import retention
    from watchers.errors import ConfigError

    now = utcnow()
    status = Status.model_validate(wiring.status(st.spool, st.policies, now))
    try:
        since = now - timedelta(hours=ALERTS_HOURS)
        status.alerts = [
            AlertRow.model_validate(a.model_dump())
            for a in retention.alerts(st.ledger, since, ALERTS_SHOWN)
        ]
        status.failures = _failures(st, failures)
    except (ConfigError, SQLAlchemyError) as e:
        status.ledger_error = str(e).splitlines()[0]
    return status


@router.get("/trips", response_model=list[queries.TripRow])
def get_trips(
    st: Web,
    limit: Limit = 100,
    before: Annotated[
        str | None, Query(pattern=DAY, description="Only trips that start before this UTC time.")
    ] = None,
) -> list[queries.TripRow]:
    """Trips, newest first."""
    with st.reading() as s:
        return queries.trips(s, limit, before)


@router.get("/trips/{trip_id}", response_model=queries.TripDetail)
def get_trip(st: Web, trip_id: Annotated[str, Path(max_length=64)]) -> queries.TripDetail:
    """One trip (id or unique prefix): clips, track, detections and plates."""
    with st.reading() as s:
        return queries.trip_detail(s, trip_id)


@router.get("/clips/{video_id}", response_model=ClipResponse)
def get_clip(st: Web, video_id: Annotated[str, Path(pattern=VIDEO_ID)]) -> ClipResponse:
    """One clip (video id or unique prefix): labels, track, its moment's other channels, and
    the URLs of its archived files."""
    with st.reading() as s:
        detail = queries.clip_detail(s, video_id)
    found = media(st.archive_root, detail.clip.video_id, detail.clip.archive_path)
    return ClipResponse(**dict(detail), media=found)


@router.get("/plates", response_model=list[labels.PlateHit])
def get_plates(
    st: Web,
    q: Annotated[
        str | None,
        Query(
            max_length=32,
            pattern=r"[^\W_]",
            description="Plate text (a letter or digit at least); case, spaces, dashes ignored.",
        ),
    ] = None,
    match: Annotated[
        Literal["exact", "prefix", "partial", "fuzzy"],
        Query(description="fuzzy: one OCR confusion (0/O, 8/B, 1/I, 5/S, 2/Z...) allowed."),
    ] = "partial",
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
) -> list[labels.PlateHit]:
    """Where and when a plate was seen, newest first."""
    with st.reading() as s:
        return labels.find_plates(s, q, limit, match=match, since=since, until=until)


@router.get("/detections", response_model=list[labels.DetectionHit])
def get_detections(
    st: Web,
    label: Annotated[str | None, Query(max_length=64)] = None,
    trip: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
) -> list[labels.DetectionHit]:
    """Objects heavy tracked, newest first (in time order within one trip)."""
    with st.reading() as s:
        return labels.find_detections(
            s, label=label, trip=trip, since=since, until=until, limit=limit
        )


@router.get("/near", response_model=list[labels.NearHit])
def get_near(
    st: Web,
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    radius_m: Annotated[float, Query(ge=1, le=100_000, allow_inf_nan=False)] = 200.0,
    limit: Limit = 100,
) -> list[labels.NearHit]:
    """Detections and plates within a radius of a place, nearest first."""
    with st.reading() as s:
        return labels.find_near(s, lat, lon, radius_m, limit)


@router.get("/status", response_model=Status)
def get_status(st: Web) -> Status:
    """Per-stage counts and oldest ages, devices and their scheduled jobs, recent alerts and
    failures (what ``dashspool status`` shows)."""
    return pipeline_status(st)


def _stage(st: WebState, stage: str) -> str:
    if stage not in st.policies.stages:
        raise NotFound(f"no stage named {stage!r}")
    return stage


@router.post(
    "/stages/{stage}/pause",
    response_model=Done,
    dependencies=[Depends(require_token)],
    responses=ACTION_ERRORS,
)
def pause_stage(
    st: Web,
    stage: Annotated[str, Path(pattern=STAGE)],
    reason: Annotated[str, Query(max_length=200)] = "",
) -> Done:
    """Pause a stage (``<stage>/PAUSED``): claims stop, work in hand finishes."""
    actions.pause(st.spool, st.policies, _stage(st, stage), f"web: {reason}".strip())
    return Done(stage=stage, paused=True, changed=True)


@router.post(
    "/stages/{stage}/resume",
    response_model=Done,
    dependencies=[Depends(require_token)],
    responses=ACTION_ERRORS,
)
def resume_stage(st: Web, stage: Annotated[str, Path(pattern=STAGE)]) -> Done:
    """Resume a paused stage."""
    was = actions.resume(st.spool, st.policies, _stage(st, stage))
    return Done(stage=stage, paused=False, changed=was)


@router.post(
    "/clips/{video_id}/requeue",
    response_model=Requeued,
    dependencies=[Depends(require_token)],
    responses=ACTION_ERRORS,
)
def requeue_clip(
    st: Web,
    video_id: Annotated[str, Path(pattern=VIDEO_ID)],
    stage: Annotated[str | None, Query(pattern=STAGE)] = None,
) -> Requeued:
    """Put the clip's failed or deferred job back in its stage's inbox (in ``stage``, or the
    one stage where it failed), attempts reset."""
    if stage is not None:
        _stage(st, stage)
    # a job's name ends in the first 6 hex digits of its video id (watchers.sidecar.job_name)
    done = actions.requeue(st.spool, st.policies, video_id[:6], stage, device="web")
    return Requeued.model_validate(done)
