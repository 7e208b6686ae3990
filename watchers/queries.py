"""Read-only queries behind the web UI, its JSON API and the CLI: trips by day, one trip with
everything seen on it, one clip with its labels, track and the other channels of its moment.

Each takes an open session (``with ledger.reading() as s``), so a page is one read transaction.
Plate, detection and place searches are in :mod:`watchers.labels`; these build on them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from watchers import labels
from watchers.catalog import TrackPoint, Trip
from watchers.errors import NotFound

MAX_LABELS = 5000  # detections or plates on one page (a trip of a few hours has hundreds)
# points drawn for a trip: enough for a smooth line at any screen size; a long trip at 1 Hz has
# tens of thousands, and every one costs the page and the browser
MAX_TRACK_POINTS = 2000


class ClipRow(BaseModel):
    """What a page or API client needs to know about one clip (``videos`` row, public part)."""

    video_id: str
    source_name: str
    state: str
    stage: str | None = None
    recorded_at: str | None = None  # camera-local, from the file name
    start_utc: str | None = None
    end_utc: str | None = None
    duration_seconds: float | None = None
    camera: str | None = None
    channel: str | None = None
    mode: str | None = None
    locked: bool = False
    gps_source: str | None = None
    gps_points: int | None = None
    moment_id: str | None = None
    trip_id: str | None = None
    frames_kept: int | None = None
    heavy_skipped: str | None = None
    archive_path: str | None = None
    archived_at: str | None = None
    last_error: str | None = None

    @classmethod
    def of(cls, video: Any) -> ClipRow:
        data = video.model_dump()
        data["locked"] = bool(data.get("locked"))
        return cls.model_validate({k: data.get(k) for k in cls.model_fields})


class TripRow(BaseModel):
    trip_id: str
    start_utc: str
    end_utc: str
    clips: int
    moments: int
    distance_m: float
    duration_seconds: float

    @classmethod
    def of(cls, trip: Trip) -> TripRow:
        return cls.model_validate(trip.model_dump(exclude={"updated_at"}))


class Point(BaseModel):
    video_id: str
    t: str  # UTC, fixed width
    lat: float
    lon: float
    speed_kmh: float | None = None
    bearing_deg: float | None = None
    alt_m: float | None = None

    @classmethod
    def of(cls, p: TrackPoint) -> Point:
        return cls.model_validate(p.model_dump(exclude={"seq"}))


class TripDetail(BaseModel):
    trip: TripRow
    clips: list[ClipRow]
    points: list[Point]  # at most MAX_TRACK_POINTS, evenly thinned (first and last kept)
    points_total: int  # the trip's GPS fixes before thinning
    detections_total: int  # how many objects the trip has (``detections`` may hold the best)
    detections: list[labels.DetectionHit]
    plates: list[labels.PlateHit]


class ClipDetail(BaseModel):
    clip: ClipRow
    detections: list[labels.DetectionBase]
    plates: list[labels.PlateBase]
    points: list[Point]
    siblings: list[ClipRow]  # the other channels of its moment (front, rear, interior)


def trips(s: Session, limit: int, before: str | None = None) -> list[TripRow]:
    """Trips newest first, those starting before ``before`` (UTC text, such as a day
    ``2024-01-02``) when given: the pages of the trips list."""
    q = select(Trip).order_by(col(Trip.start_utc).desc())
    if before:
        q = q.where(col(Trip.start_utc) < before)
    return [TripRow.of(t) for t in s.exec(q.limit(limit))]


def clips_outside_trips(s: Session, limit: int) -> list[ClipRow]:
    """Clips on no trip (parking mode, no UTC time), newest first by camera time."""
    from watchers.ledger import Video

    q = (
        select(Video)
        .where(Video.kind == "video", col(Video.trip_id).is_(None))
        .order_by(col(Video.recorded_at).desc(), col(Video.video_id))
    )
    return [ClipRow.of(v) for v in s.exec(q.limit(limit))]


def trip_detail(s: Session, trip: str, max_detections: int | None = None) -> TripDetail:
    """One trip (id or unique prefix): clips in time order, track, detections and plates.
    ``max_detections``: only that many objects, the highest-scored (a map of a long drive)."""
    from watchers.ledger import Video

    tid = labels.trip_id(s, trip)
    row = s.get(Trip, tid)
    assert row is not None
    clips = s.exec(
        select(Video).where(Video.trip_id == tid).order_by(col(Video.start_utc), col(Video.channel))
    )
    points, total = trip_track(s, tid)
    return TripDetail(
        trip=TripRow.of(row),
        clips=[ClipRow.of(v) for v in clips],
        points=points,
        points_total=total,
        detections=labels.find_detections(
            s,
            label=None,
            trip=tid,
            since=None,
            until=None,
            limit=MAX_LABELS if max_detections is None else max_detections,
            best=max_detections is not None,
        ),
        detections_total=labels.count_detections(s, tid),
        plates=labels.find_plates(s, None, MAX_LABELS, trip=tid),
    )


def trip_track(
    s: Session, trip_id: str, max_points: int = MAX_TRACK_POINTS
) -> tuple[list[Point], int]:
    """The trip's GPS points in time order, thinned evenly to at most ``max_points``, and how
    many there are. The channels of a moment repeat the same fixes, so each moment's points
    come from one clip (the one with the most); thinning starts in SQL (every n-th point of a
    clip), so a long trip at 1 Hz never loads its tens of thousands of rows."""
    from watchers.ledger import Video

    best: dict[str, tuple[int, str]] = {}  # moment (or the clip itself) -> (points, clip)
    for vid, moment, n in s.execute(
        sa_select(col(Video.video_id), col(Video.moment_id), col(Video.gps_points)).where(
            col(Video.trip_id) == trip_id
        )
    ):
        key = moment or vid
        if (n or 0, vid) > best.get(key, (-1, "")):
            best[key] = (n or 0, vid)
    videos = sorted(vid for _, vid in best.values())
    total = int(
        s.execute(sa_select(func.count()).where(col(TrackPoint.video_id).in_(videos))).scalar_one()
    )
    stride = max(1, -(-total // max_points))  # ceil: at most max_points per clip run
    fields = [c for c in Point.model_fields if c != "video_id"]
    q = (
        sa_select(col(TrackPoint.video_id), *(col(getattr(TrackPoint, f)) for f in fields))
        .where(col(TrackPoint.video_id).in_(videos))
        .order_by(col(TrackPoint.t), col(TrackPoint.video_id))
    )
    if stride > 1:
        q = q.where(col(TrackPoint.seq) % stride == 0)
    rows: list[Any] = []
    for r in s.execute(q).mappings():
        if not rows or r["t"] != rows[-1]["t"]:  # clips of two moments overlapping
            rows.append(r)
    if len(rows) > max_points > 1:
        step = (len(rows) - 1) / (max_points - 1)
        rows = [rows[round(i * step)] for i in range(max_points)]
    return [Point.model_validate(dict(r)) for r in rows], total


def find_clip(s: Session, video: str) -> Any:
    """The ``videos`` row of a video id, or of a prefix (6+ characters) only one clip has."""
    from watchers.ledger import VIDEO_ID_RE, Video

    if not VIDEO_ID_RE.match(video):
        raise NotFound(f"no clip {video!r} (a video id is 6 to 64 hex digits)")
    row = s.get(Video, video)
    if row is not None:
        return row
    q = select(Video).where(col(Video.video_id).startswith(video), Video.kind == "video")
    found = list(s.exec(q.limit(2)))
    if len(found) != 1:
        raise NotFound(f"{'several' if found else 'no'} clips match {video!r}")
    return found[0]


def moment_siblings(s: Session, video: Any) -> list[ClipRow]:
    """The other channels recorded at the same moment (same ``moment_id``), by channel."""
    from watchers.ledger import Video

    if not video.moment_id:
        return []
    q = (
        select(Video)
        .where(Video.moment_id == video.moment_id, Video.video_id != video.video_id)
        .order_by(col(Video.channel), col(Video.video_id))
    )
    return [ClipRow.of(v) for v in s.exec(q)]


def clip_detail(s: Session, video: str) -> ClipDetail:
    """One clip (id or unique prefix) with its detections and plates in time order, its GPS
    points and its moment's other channels."""
    row = find_clip(s, video)
    vid = row.video_id
    dq = (
        select(labels.Detection)
        .where(labels.Detection.video_id == vid)
        .order_by(col(labels.Detection.first_s), col(labels.Detection.track_id))
    )
    pq = (
        select(labels.Plate)
        .where(labels.Plate.video_id == vid)
        .order_by(col(labels.Plate.time_s), col(labels.Plate.track_id))
    )
    tq = select(TrackPoint).where(TrackPoint.video_id == vid).order_by(col(TrackPoint.seq))
    return ClipDetail(
        clip=ClipRow.of(row),
        detections=[labels.DetectionBase.model_validate(d.model_dump()) for d in s.exec(dq)],
        plates=[labels.PlateBase.model_validate(p.model_dump()) for p in s.exec(pq)],
        points=[Point.of(p) for p in s.exec(tq)],
        siblings=moment_siblings(s, row),
    )
