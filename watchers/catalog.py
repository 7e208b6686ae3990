"""What the ledger knows about clips: identity, camera, times, GPS points, moments and trips,
and what preprocess saw in them (frames kept, motion, objects, why heavy was skipped).

The ingest stage reports its findings as the ``facts`` of its completion event (see
:class:`ClipFacts`); :func:`apply_clip` turns them into columns of ``videos``, rows of
``track_points``, a shared ``moment_id`` for the channels of one moment, and ``trips``.
Event files come from other machines, so facts are validated and bounded here again.

Times: ``recorded_at`` is the camera-local time from the file name and is only ever compared
with other local times (moments). Trips use UTC (``start_utc``/``end_utc``) only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import text as sql
from sqlmodel import Field as Column
from sqlmodel import Session, SQLModel, col, select

MAX_POINTS = 100_000  # per clip: 18 Hz GoPro for 90 minutes


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PointFact(Loose):
    time: datetime
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    speed_kmh: float | None = None
    bearing_deg: float | None = None
    alt_m: float | None = None


class CameraFact(Loose):
    family: str | None = None
    channel: str | None = Field(None, max_length=8)
    mode: str = "normal"
    locked: bool = False
    sequence: str | None = None


class TimeFact(Loose):
    local: datetime | None = None  # naive, camera-local
    utc_start: datetime | None = None
    utc_end: datetime | None = None
    source: str | None = None


class GpsFact(Loose):
    source: str | None = None
    points: int = Field(0, ge=0)
    track: tuple[PointFact, ...] = Field((), max_length=MAX_POINTS)


class ClipFacts(Loose):
    """The ingest stage's facts as the ledger reads them (unknown keys are ignored)."""

    kind: Literal["video", "track"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int | None = None
    source_path: str | None = Field(None, max_length=4096)
    raw_path: str | None = Field(None, max_length=4096)
    camera: CameraFact = CameraFact()
    time: TimeFact = TimeFact()
    gps: GpsFact = GpsFact()
    media: dict[str, Any] = {}


class ScreeningFacts(Loose):
    """The preprocess stage's facts as the ledger reads them (unknown keys are ignored)."""

    kind: Literal["screening"]
    route: str | None = Field(None, max_length=64)
    heavy_skipped: str | None = Field(None, max_length=2000)
    frames_sampled: int = Field(0, ge=0)
    frames_kept: int = Field(0, ge=0)
    motion_max: float = Field(0.0, ge=0, le=1)
    objects: dict[str, int] = Field({}, max_length=100)


class TrackPoint(SQLModel, table=True):
    __tablename__ = "track_points"
    video_id: str = Column(primary_key=True)
    seq: int = Column(primary_key=True)
    t: str
    lat: float
    lon: float
    speed_kmh: float | None = None
    bearing_deg: float | None = None
    alt_m: float | None = None


class Trip(SQLModel, table=True):
    __tablename__ = "trips"
    trip_id: str = Column(primary_key=True)
    start_utc: str = Column(index=True)
    end_utc: str
    clips: int = 0
    moments: int = 0
    distance_m: float = 0.0
    duration_seconds: float = 0.0
    updated_at: str


MIGRATION = (
    "0002_catalog",
    """
    ALTER TABLE videos ADD COLUMN kind TEXT NOT NULL DEFAULT 'video';
    ALTER TABLE videos ADD COLUMN sha256 TEXT;
    ALTER TABLE videos ADD COLUMN size_bytes INTEGER;
    ALTER TABLE videos ADD COLUMN source_path TEXT;
    ALTER TABLE videos ADD COLUMN raw_path TEXT;
    ALTER TABLE videos ADD COLUMN camera TEXT;
    ALTER TABLE videos ADD COLUMN channel TEXT;
    ALTER TABLE videos ADD COLUMN mode TEXT;
    ALTER TABLE videos ADD COLUMN locked INTEGER;
    ALTER TABLE videos ADD COLUMN start_utc TEXT;
    ALTER TABLE videos ADD COLUMN end_utc TEXT;
    ALTER TABLE videos ADD COLUMN time_source TEXT;
    ALTER TABLE videos ADD COLUMN duration_seconds REAL;
    ALTER TABLE videos ADD COLUMN gps_source TEXT;
    ALTER TABLE videos ADD COLUMN gps_points INTEGER;
    ALTER TABLE videos ADD COLUMN moment_id TEXT;
    ALTER TABLE videos ADD COLUMN trip_id TEXT;
    CREATE INDEX ix_videos_sha256 ON videos (sha256);
    CREATE INDEX ix_videos_recorded_at ON videos (recorded_at);
    CREATE INDEX ix_videos_start_utc ON videos (start_utc);
    CREATE INDEX ix_videos_trip_id ON videos (trip_id);
    CREATE INDEX ix_videos_moment_id ON videos (moment_id);
    CREATE TABLE video_aliases (alias TEXT PRIMARY KEY, video_id TEXT NOT NULL);
    CREATE TABLE track_points (
        video_id TEXT NOT NULL, seq INTEGER NOT NULL, t TEXT NOT NULL,
        lat REAL NOT NULL, lon REAL NOT NULL, speed_kmh REAL, bearing_deg REAL, alt_m REAL,
        PRIMARY KEY (video_id, seq)
    );
    CREATE INDEX ix_track_points_t ON track_points (t);
    CREATE TABLE trips (
        trip_id TEXT PRIMARY KEY, start_utc TEXT NOT NULL, end_utc TEXT NOT NULL,
        clips INTEGER NOT NULL DEFAULT 0, moments INTEGER NOT NULL DEFAULT 0,
        distance_m REAL NOT NULL DEFAULT 0, duration_seconds REAL NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX ix_trips_start_utc ON trips (start_utc)
    """,
)


SCREENING_MIGRATION = (
    "0003_screening",
    """
    ALTER TABLE videos ADD COLUMN frames_sampled INTEGER;
    ALTER TABLE videos ADD COLUMN frames_kept INTEGER;
    ALTER TABLE videos ADD COLUMN motion_max REAL;
    ALTER TABLE videos ADD COLUMN objects TEXT;
    ALTER TABLE videos ADD COLUMN heavy_skipped TEXT
    """,
)


def ts(value: datetime) -> str:
    """Fixed-width UTC text (naive values are taken as UTC), so comparing strings compares times."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def parse_facts(raw: Any) -> ClipFacts | None:
    """The ingest facts of an event, or None when they are absent or malformed."""
    if not isinstance(raw, dict) or raw.get("kind") not in ("video", "track"):
        return None
    try:
        return ClipFacts.model_validate(raw)
    except ValidationError:
        return None


def parse_screening(raw: Any) -> ScreeningFacts | None:
    """The preprocess facts of an event, or None when they are absent or malformed."""
    if not isinstance(raw, dict) or raw.get("kind") != "screening":
        return None
    try:
        return ScreeningFacts.model_validate(raw)
    except ValidationError:
        return None


def apply_screening(video: Any, facts: ScreeningFacts) -> None:
    """Record what preprocess saw on the clip's ``videos`` row (``objects`` as JSON text:
    class name → frames it was seen in)."""
    video.frames_sampled = facts.frames_sampled
    video.frames_kept = facts.frames_kept
    video.motion_max = facts.motion_max
    video.objects = json.dumps(facts.objects, sort_keys=True) if facts.objects else None
    video.heavy_skipped = facts.heavy_skipped


def apply_clip(
    s: Session, video: Any, facts: ClipFacts, at: str, *, trip_gap: float, moment_window: float
) -> None:
    """Record one clip's ingest facts on its ``videos`` row, then its moment and trip."""
    s.flush()  # rows added earlier in this batch must be visible to the queries below
    video.kind = facts.kind
    video.sha256 = facts.sha256
    video.size_bytes = facts.size_bytes
    video.source_path = facts.source_path
    video.raw_path = facts.raw_path
    cam = facts.camera
    video.camera, video.channel, video.mode = cam.family, cam.channel, cam.mode
    video.locked = int(cam.locked)
    t = facts.time
    if t.local is not None:
        video.recorded_at = t.local.replace(tzinfo=None).isoformat(timespec="seconds")
    video.start_utc = ts(t.utc_start) if t.utc_start else None
    video.end_utc = ts(t.utc_end) if t.utc_end else video.start_utc
    video.time_source = t.source
    duration = facts.media.get("duration_seconds")
    video.duration_seconds = float(duration) if isinstance(duration, int | float) else None
    video.gps_source = facts.gps.source
    video.gps_points = len(facts.gps.track) or facts.gps.points
    _store_points(s, video.video_id, facts.gps.track)
    s.add(video)
    s.flush()
    if facts.kind != "video":
        return
    if video.recorded_at and video.channel:
        _join_moment(s, video, moment_window)
    if video.start_utc and video.mode != "parking":
        _join_trip(s, video, trip_gap, at)


def _store_points(s: Session, video_id: str, track: Sequence[PointFact]) -> None:
    s.execute(sql("DELETE FROM track_points WHERE video_id = :v"), {"v": video_id})
    if track:
        s.execute(
            sql("INSERT INTO track_points VALUES (:v, :seq, :t, :lat, :lon, :spd, :brg, :alt)"),
            [
                {
                    "v": video_id,
                    "seq": i,
                    "t": ts(p.time),
                    "lat": p.lat,
                    "lon": p.lon,
                    "spd": p.speed_kmh,
                    "brg": p.bearing_deg,
                    "alt": p.alt_m,
                }
                for i, p in enumerate(track)
            ],
        )


def _join_moment(s: Session, video: Any, window: float) -> None:
    """Clips of other channels whose file-name (local) times are within ``window`` seconds
    share one moment id: the id the moment already has, else the earliest clip's video id."""
    from watchers.ledger import Video

    local = datetime.fromisoformat(video.recorded_at)
    lo = (local - timedelta(seconds=window)).isoformat(timespec="seconds")
    hi = (local + timedelta(seconds=window)).isoformat(timespec="seconds")
    q = select(Video).where(
        col(Video.recorded_at) >= lo,
        col(Video.recorded_at) <= hi,
        Video.kind == "video",
        Video.video_id != video.video_id,
        col(Video.channel).is_not(None),
        Video.channel != video.channel,
    )
    others = list(s.exec(q).all())
    if not others:
        video.moment_id = video.moment_id or video.video_id[:16]
        return
    ids = [o.moment_id for o in others if o.moment_id]
    moment = min(ids) if ids else min(o.video_id for o in [*others, video])[:16]
    for row in (*others, video):
        row.moment_id = moment
        s.add(row)


def _join_trip(s: Session, video: Any, gap: float, at: str) -> None:
    """Consecutive clips form one trip until a time gap longer than ``gap`` seconds; a clip that
    bridges two trips merges them (the earlier trip's id stays)."""

    start, end = parse_ts(video.start_utc), parse_ts(video.end_utc or video.start_utc)
    lo, hi = ts(start - timedelta(seconds=gap)), ts(end + timedelta(seconds=gap))
    near = list(
        s.exec(select(Trip).where(col(Trip.start_utc) <= hi, col(Trip.end_utc) >= lo)).all()
    )
    if near:
        near.sort(key=lambda t: t.start_utc)
        trip = near[0]
        for other in near[1:]:
            s.execute(
                sql("UPDATE videos SET trip_id = :keep WHERE trip_id = :gone"),
                {"keep": trip.trip_id, "gone": other.trip_id},
            )
            s.delete(other)
    else:
        trip_id = f"{start:%Y%m%d-%H%M%S}-{video.video_id[:4]}"
        trip = Trip(
            trip_id=trip_id, start_utc=video.start_utc, end_utc=video.end_utc or "", updated_at=at
        )
        s.add(trip)
    video.trip_id = trip.trip_id
    s.add(video)
    s.flush()
    refresh_trip(s, trip, at)


def refresh_trip(s: Session, trip: Trip, at: str) -> None:
    from stages.gps.track import length_m  # the one great-circle formula
    from watchers.ledger import Video

    clips = list(s.exec(select(Video).where(Video.trip_id == trip.trip_id)).all())
    trip.start_utc = min(c.start_utc for c in clips if c.start_utc)
    trip.end_utc = max((c.end_utc or c.start_utc) for c in clips if c.start_utc)
    trip.clips = len(clips)
    trip.moments = len({c.moment_id or c.video_id for c in clips})
    trip.duration_seconds = (parse_ts(trip.end_utc) - parse_ts(trip.start_utc)).total_seconds()
    trip.distance_m = round(length_m(trip_points(s, trip.trip_id)), 1)
    trip.updated_at = at
    s.add(trip)


def trip_points(s: Session, trip_id: str) -> list[TrackPoint]:
    """The trip's GPS points in time order, one per instant (channels of a moment repeat the
    same fixes)."""
    from watchers.ledger import Video

    rows = s.exec(
        select(TrackPoint)
        .join(Video, col(Video.video_id) == col(TrackPoint.video_id))
        .where(Video.trip_id == trip_id)
        .order_by(col(TrackPoint.t), col(TrackPoint.video_id))
    ).all()
    out: list[TrackPoint] = []
    for p in rows:
        if out and out[-1].t == p.t:
            continue
        out.append(p)
    return out
