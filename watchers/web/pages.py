"""The server-rendered pages: trips by day, a trip, a clip, search, the pipeline; and the
media files. Every value reaches the HTML through Jinja2's autoescape, and data for the page's
script through ``tojson`` in a ``<script type="application/json">`` block (``<``, ``>``, ``&``
and quotes escaped), which nothing executes."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, cast

import jinja2
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from watchers import labels, queries
from watchers.errors import NotFound
from watchers.web import media as mediafiles
from watchers.web.api import pipeline_status
from watchers.web.state import WebState, web

router = APIRouter(include_in_schema=False)
Web = Annotated[WebState, Depends(web)]
HERE = Path(__file__).parent
DUTIES = ("reaper", "deferred-release", "retention", "backup")  # as `dashspool status` lists
MATCHES = ("fuzzy", "exact", "partial", "prefix")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def _when(value: str | None) -> str:
    """A ledger UTC time as ``2024-01-01 12:34:56 UTC``."""
    return f"{value[:10]} {value[11:19]} UTC" if value and len(value) >= 19 else (value or "-")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(age=_age, clock=_clock, when=_when)
    return env


templates = Jinja2Templates(env=_environment())


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    st: WebState = request.app.state.web
    context.setdefault("tile_url", st.policies.web.tile_url)
    context.setdefault("tile_attribution", st.policies.web.tile_attribution)
    return templates.TemplateResponse(request, name, context, status_code=status_code)


# ----------------------------------------------------------------------------------- pages
@router.get("/", response_class=HTMLResponse)
def index(request: Request, st: Web, before: str | None = None) -> HTMLResponse:
    size = st.policies.web.page_size
    if before is not None and not _is_day(before):
        before = None
    with st.reading() as s:
        trips = queries.trips(s, size, before)
        loose = queries.clips_outside_trips(s, 50) if before is None else []
    days: OrderedDict[str, list[queries.TripRow]] = OrderedDict()
    for t in trips:
        days.setdefault(t.start_utc[:10], []).append(t)
    older = trips[-1].start_utc if len(trips) == size else None
    return render(request, "index.html", days=days, loose=loose, older=older)


def _is_day(value: str) -> bool:
    try:
        datetime.fromisoformat(value.rstrip("Z"))
    except ValueError:
        return False
    return True


TABLE_ROWS = 300  # plates or objects listed on a trip page (more are markers on its map)
MAP_OBJECTS = 1000  # objects on a trip's map, the highest-scored (every plate is on it)


def speed_chart(
    points: list[queries.Point], width: int = 1000, height: int = 160
) -> dict[str, Any]:
    """An SVG polyline of speed over time (km/h as the GPS reported it), drawn by the template
    with no script."""
    fixes = [(p.t, p.speed_kmh) for p in points if p.speed_kmh is not None]
    if len(fixes) < 2:
        return {"points": "", "max_kmh": 0, "seconds": 0}
    t0 = datetime.fromisoformat(fixes[0][0].replace("Z", "+00:00"))
    xs = [(datetime.fromisoformat(t.replace("Z", "+00:00")) - t0).total_seconds() for t, _ in fixes]
    span = max(xs[-1], 1.0)
    top = max(10.0, math.ceil(max(v or 0 for _, v in fixes) / 10) * 10)
    coords = " ".join(
        f"{x / span * width:.1f},{height - (v or 0) / top * height:.1f}"
        for x, (_, v) in zip(xs, fixes, strict=True)
    )
    return {"points": coords, "max_kmh": top, "seconds": span}


@router.get("/trips/{trip_id}", response_class=HTMLResponse)
def trip_page(request: Request, st: Web, trip_id: str) -> HTMLResponse:
    with st.reading() as s:
        detail = queries.trip_detail(s, trip_id, max_detections=MAP_OBJECTS)
    data = {
        "points": [[p.lat, p.lon] for p in detail.points],
        "clips": [
            {"video_id": c.video_id, "name": c.source_name, "channel": c.channel}
            for c in detail.clips
        ],
        "detections": [
            {
                "video_id": d.video_id,
                "t": d.first_s,
                "label": d.label,
                "lat": d.lat,
                "lon": d.lon,
            }
            for d in detail.detections
            if d.lat is not None
        ],
        "plates": [
            {"video_id": p.video_id, "t": p.time_s, "text": p.text, "lat": p.lat, "lon": p.lon}
            for p in detail.plates
            if p.lat is not None
        ],
    }
    return render(
        request,
        "trip.html",
        detail=detail,
        data=data,
        chart=speed_chart(detail.points),
        table_rows=TABLE_ROWS,
    )


@router.get("/clips/{video_id}", response_class=HTMLResponse)
def clip_page(request: Request, st: Web, video_id: str, t: float | None = None) -> HTMLResponse:
    with st.reading() as s:
        detail = queries.clip_detail(s, video_id)
    clip = detail.clip
    files = mediafiles.media(st.archive_root, clip.video_id, clip.archive_path)
    siblings = [
        (c, mediafiles.media(st.archive_root, c.video_id, c.archive_path)) for c in detail.siblings
    ]
    ends = [d.last_s for d in detail.detections] + [p.time_s for p in detail.plates]
    duration = clip.duration_seconds or max([1.0, *ends])
    start = t if t is not None and math.isfinite(t) and 0 <= t <= 86_400 else 0.0
    start_utc = clip.start_utc
    t0 = datetime.fromisoformat(start_utc.replace("Z", "+00:00")) if start_utc else None
    data = {
        "start": start,
        "points": [
            [
                (datetime.fromisoformat(p.t.replace("Z", "+00:00")) - t0).total_seconds(),
                p.lat,
                p.lon,
            ]
            for p in detail.points
            if t0 is not None
        ],
    }
    return render(
        request,
        "clip.html",
        detail=detail,
        clip=clip,
        files=files,
        siblings=siblings,
        duration=duration,
        data=data,
    )


def _day(value: str, errors: list[str], what: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
    except ValueError:
        errors.append(f"{what}: use a date such as 2024-01-31")
        return None


def _number(value: str, lo: float, hi: float, errors: list[str], what: str) -> float | None:
    if not value:
        return None
    try:
        n = float(value)
    except ValueError:
        n = math.nan
    if not (lo <= n <= hi):
        errors.append(f"{what}: a number from {lo:g} to {hi:g}")
        return None
    return n


def _search(
    s: Session, form: dict[str, str], limit: int, errors: list[str]
) -> dict[str, list[Any]]:
    since = _day(form["since"], errors, "from")
    until = _day(form["until"], errors, "to")
    if until is not None:
        until += timedelta(days=1)  # the whole day
    lat = _number(form["lat"], -90, 90, errors, "latitude")
    lon = _number(form["lon"], -180, 180, errors, "longitude")
    radius = _number(form["radius_m"] or "200", 1, 100_000, errors, "radius")
    match = cast(labels.PlateMatch, form["match"] if form["match"] in MATCHES else "fuzzy")
    found: dict[str, list[Any]] = {"plates": [], "detections": [], "near": []}
    if errors:
        return found
    label = form["label"].strip().lower() or None
    if form["plate"]:
        if not labels.plate_key(form["plate"]):
            errors.append("plate: type at least one letter or digit")
        else:
            found["plates"] = labels.find_plates(
                s, form["plate"], limit, match=match, since=since, until=until
            )
    if lat is not None and lon is not None and radius is not None:
        near = labels.find_near(s, lat, lon, radius, limit * 4)
        since_s = queries_ts(since)
        until_s = queries_ts(until)
        found["near"] = [
            h
            for h in near
            if (label is None or (h.kind == "detection" and h.what == label))
            and (since_s is None or (h.utc or "") >= since_s)
            and (until_s is None or (h.utc or "") < until_s)
        ][:limit]
    elif (lat is None) != (lon is None):
        errors.append("near: give both latitude and longitude")
    elif label is not None or (since and not form["plate"]):
        found["detections"] = labels.find_detections(
            s, label=label, trip=None, since=since, until=until, limit=limit
        )
    return found


def queries_ts(value: datetime | None) -> str | None:
    from watchers.catalog import ts

    return None if value is None else ts(value)


@router.get("/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    st: Web,
    plate: str = "",
    match: str = "fuzzy",
    label: str = "",
    since: str = "",
    until: str = "",
    lat: str = "",
    lon: str = "",
    radius_m: str = "",
) -> HTMLResponse:
    form = {
        "plate": plate[:32],
        "match": match,
        "label": label[:64],
        "since": since[:10],
        "until": until[:10],
        "lat": lat[:20],
        "lon": lon[:20],
        "radius_m": radius_m[:10],
    }
    errors: list[str] = []
    asked = any(v for k, v in form.items() if k != "match")
    found: dict[str, list[Any]] = {"plates": [], "detections": [], "near": []}
    if asked:
        with st.reading() as s:
            found = _search(s, form, st.policies.web.page_size, errors)
    return render(
        request,
        "search.html",
        form=form,
        matches=MATCHES,
        errors=errors,
        asked=asked,
        found=found,
    )


@router.get("/pipeline", response_class=HTMLResponse)
def pipeline_page(request: Request, st: Web) -> HTMLResponse:
    status = pipeline_status(st, failures=50)
    jobs = []
    for dev in status.devices:
        reported: dict[str, Any] = dev.jobs if isinstance(dev.jobs, dict) else {}
        expected = DUTIES if dev.stage == "coordinator" else ()
        for name in [*expected, *sorted(set(reported) - set(expected))]:
            info = reported.get(name)
            info = info if isinstance(info, dict) else {}
            jobs.append({"device": dev.device_id, "name": name, **info, "reported": bool(info)})
    return render(
        request,
        "pipeline.html",
        status=status,
        jobs=jobs,
        token_enabled=st.token is not None,
    )


# ----------------------------------------------------------------------------------- media
@router.get("/media/{video_id}/{name:path}")
def media_file(st: Web, video_id: str, name: str) -> FileResponse:
    """A file of an archived clip's folder (HTTP range requests: 206 with Content-Range)."""
    from watchers.ledger import VIDEO_ID_RE, Video

    if not VIDEO_ID_RE.match(video_id):
        raise NotFound(f"no clip {video_id!r}")
    with st.reading() as s:
        row = s.get(Video, video_id)
        archive_path = row.archive_path if row is not None else None
    path = mediafiles.resolve(st.archive_root, archive_path, name)
    return FileResponse(
        path,
        media_type=mediafiles.media_type(path),
        headers={"Cache-Control": "private, max-age=3600"},
        content_disposition_type="inline",
    )
