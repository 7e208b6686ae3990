"""What the heavy stage found in clips: tracked objects (``detections``) and the number plates
read on them (``plates``), and the queries over them: plates by text, detections by class,
trip and time, and everything seen near a place.

The heavy stage reports its findings as the ``facts`` of its completion event (see
:class:`LabelFacts`); :func:`apply_labels` replaces the clip's rows with them, so the same event
twice, or a re-run of the stage, leaves one set of rows. Event files come from other machines,
so the facts are validated and bounded here: anything malformed and the clip's labels facts are
ignored as a whole (ingestion carries on).

Plate text is stored as its *key*: upper case, letters and digits only (``m5 xsx``, ``M5-XSX``
→ ``M5XSX``), so a search typed either way finds it with an index range scan. UTC times are
fixed-width text (:func:`watchers.catalog.ts`), so comparing strings compares times; the clip's
``recorded_at`` is camera-local and is only shown, never compared with them.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import ColumnElement, and_, delete, func, insert, literal_column, or_
from sqlalchemy import select as sa_select
from sqlalchemy import text as text_
from sqlmodel import Field as Column
from sqlmodel import Session, SQLModel, col, select

from watchers.catalog import Trip, parse_ts, ts
from watchers.errors import NotFound

log = logging.getLogger(__name__)

MAX_TRACKS = 2000  # per clip
MAX_PLATES = 1000
MAX_SECONDS = 86_400.0  # offsets into a clip, either sign (timestamps may start below 0)
MAX_PIXELS = 100_000  # box corners, either sign
METRES_PER_DEGREE = 6_371_008.8 * math.pi / 180  # stages.gps.track.EARTH_RADIUS_M


class Loose(BaseModel):
    """Untrusted facts: unknown keys ignored, no NaN or infinity."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


Pixel = Annotated[float, Field(ge=-MAX_PIXELS, le=MAX_PIXELS)]


class TrackFact(Loose):
    track_id: int = Field(ge=0, le=2**31 - 1)
    label: str = Field(min_length=1, max_length=64)
    first: float = Field(ge=-MAX_SECONDS, le=MAX_SECONDS)
    last: float = Field(ge=-MAX_SECONDS, le=MAX_SECONDS)
    first_utc: datetime | None = None
    last_utc: datetime | None = None
    score: float = Field(0.0, ge=0, le=1)
    frames: int = Field(0, ge=0, le=10_000_000)
    box: tuple[Pixel, Pixel, Pixel, Pixel] | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    thumbnail: str | None = Field(None, max_length=512)


class PlateFact(Loose):
    track_id: int = Field(ge=0, le=2**31 - 1)
    text: str = Field(min_length=1, max_length=32)
    confidence: float = Field(0.0, ge=0, le=1)
    reads: int = Field(0, ge=0, le=10_000_000)
    time: float = Field(0.0, ge=-MAX_SECONDS, le=MAX_SECONDS)
    utc: datetime | None = None
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    crop: str | None = Field(None, max_length=512)


class LabelFacts(Loose):
    """The heavy stage's facts as the ledger reads them (unknown keys are ignored). One track
    per ``track_id`` and one plate per track: a repeated id makes the facts malformed."""

    kind: Literal["labels"]
    tracks: tuple[TrackFact, ...] = Field((), max_length=MAX_TRACKS)
    plates: tuple[PlateFact, ...] = Field((), max_length=MAX_PLATES)
    gps_source: str | None = Field(None, max_length=64)
    frames_looked_at: int = Field(0, ge=0)


# ------------------------------------------------------------------------------------ tables
class DetectionBase(SQLModel):
    video_id: str = Column(primary_key=True)
    track_id: int = Column(primary_key=True)
    label: str  # lower case
    first_s: float  # seconds from the clip's start
    last_s: float
    first_utc: str | None = None
    last_utc: str | None = None
    score: float
    frames: int
    x1: int | None = None
    y1: int | None = None
    x2: int | None = None
    y2: int | None = None
    lat: float | None = None
    lon: float | None = None
    thumbnail: str | None = None


class Detection(DetectionBase, table=True):
    __tablename__ = "detections"


class PlateBase(SQLModel):
    video_id: str = Column(primary_key=True)
    track_id: int = Column(primary_key=True)
    text: str  # the key: upper case, letters and digits only
    confidence: float
    reads: int
    time_s: float  # seconds from the clip's start
    utc: str | None = None
    lat: float | None = None
    lon: float | None = None
    crop: str | None = None


class Plate(PlateBase, table=True):
    __tablename__ = "plates"


LABELS_MIGRATION = (
    "0004_labels",
    """
    CREATE TABLE detections (
        video_id TEXT NOT NULL, track_id INTEGER NOT NULL, label TEXT NOT NULL,
        first_s REAL NOT NULL, last_s REAL NOT NULL, first_utc TEXT, last_utc TEXT,
        score REAL NOT NULL, frames INTEGER NOT NULL,
        x1 INTEGER, y1 INTEGER, x2 INTEGER, y2 INTEGER, lat REAL, lon REAL, thumbnail TEXT,
        PRIMARY KEY (video_id, track_id)
    );
    CREATE INDEX ix_detections_label ON detections (label);
    CREATE INDEX ix_detections_first_utc ON detections (first_utc);
    CREATE INDEX ix_detections_lat_lon ON detections (lat, lon);
    CREATE TABLE plates (
        video_id TEXT NOT NULL, track_id INTEGER NOT NULL, text TEXT NOT NULL,
        confidence REAL NOT NULL, reads INTEGER NOT NULL, time_s REAL NOT NULL, utc TEXT,
        lat REAL, lon REAL, crop TEXT,
        PRIMARY KEY (video_id, track_id)
    );
    CREATE INDEX ix_plates_text ON plates (text);
    CREATE INDEX ix_plates_utc ON plates (utc)
    """,
)


# Plate search at the scale of years of driving (bench/web.py: 200 k plate readings):
# * every plate gets a UTC time where its clip has one (filled here for older rows; apply_labels
#   fills it on ingest), and (text, utc) is indexed: "newest sightings of this plate" reads the
#   index backwards and stops at the limit, even for a car seen thousands of times;
# * a partial search ("the plate had 47 in it") looks keys up in a trigram index (FTS5, kept in
#   step with plates by triggers) instead of reading every plate.
PLATE_SEARCH_MIGRATION = (
    "0006_plate_search",
    """
    UPDATE plates SET utc = (
        SELECT substr(strftime('%Y-%m-%dT%H:%M:%f', v.start_utc,
                               printf('%+.6f seconds', plates.time_s)), 1, 23) || '000Z'
        FROM videos v WHERE v.video_id = plates.video_id AND v.start_utc IS NOT NULL
    ) WHERE utc IS NULL;
    CREATE INDEX ix_plates_text_utc ON plates (text, utc);
    DROP INDEX ix_plates_text;
    CREATE VIRTUAL TABLE plates_trigram USING fts5(
        text, content='plates', content_rowid='rowid', tokenize='trigram'
    );
    INSERT INTO plates_trigram(plates_trigram) VALUES ('rebuild');
    CREATE TRIGGER plates_trigram_ai AFTER INSERT ON plates BEGIN
        INSERT INTO plates_trigram(rowid, text) VALUES (new.rowid, new.text);
    END;
    CREATE TRIGGER plates_trigram_ad AFTER DELETE ON plates BEGIN
        INSERT INTO plates_trigram(plates_trigram, rowid, text)
        VALUES ('delete', old.rowid, old.text);
    END;
    CREATE TRIGGER plates_trigram_au AFTER UPDATE ON plates BEGIN
        INSERT INTO plates_trigram(plates_trigram, rowid, text)
        VALUES ('delete', old.rowid, old.text);
        INSERT INTO plates_trigram(rowid, text) VALUES (new.rowid, new.text);
    END
    """,
)
TRIGRAM = 3  # the shortest text the trigram index can find; shorter ones scan


# ------------------------------------------------------------------------------------ ingest
def plate_key(text: str) -> str:
    """How plates are stored and searched: upper case, letters and digits only."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def parse_labels(raw: Any) -> LabelFacts | None:
    """The heavy facts of an event, or None when they are absent or malformed."""
    if not isinstance(raw, dict) or raw.get("kind") != "labels":
        return None
    try:
        facts = LabelFacts.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(map(str, first["loc"]))
        log.warning(
            "labels facts ignored: %d problems, first %s: %s", e.error_count(), where, first["msg"]
        )
        return None
    for name, ids in (
        ("tracks", [t.track_id for t in facts.tracks]),
        ("plates", [p.track_id for p in facts.plates]),
    ):
        if len(set(ids)) != len(ids):
            log.warning("labels facts ignored: a track_id repeats in %s", name)
            return None
    return facts


def _where(lat: float | None, lon: float | None) -> tuple[float | None, float | None]:
    return (lat, lon) if lat is not None and lon is not None else (None, None)


def apply_labels(s: Session, video: Any, facts: LabelFacts) -> None:
    """Replace the clip's detections and plates with these (a plate whose text has no letter
    or digit is left out: nothing could find it)."""
    vid = video.video_id
    s.execute(delete(Detection).where(col(Detection.video_id) == vid))
    s.execute(delete(Plate).where(col(Plate.video_id) == vid))
    tracks = []
    for t in facts.tracks:
        x1, y1, x2, y2 = (round(v) for v in t.box) if t.box else (None,) * 4
        lat, lon = _where(t.lat, t.lon)
        tracks.append(
            {
                "video_id": vid,
                "track_id": t.track_id,
                "label": t.label.strip().lower(),
                "first_s": t.first,
                "last_s": t.last,
                "first_utc": ts(t.first_utc) if t.first_utc else None,
                "last_utc": ts(t.last_utc) if t.last_utc else None,
                "score": t.score,
                "frames": t.frames,
                **{"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                "lat": lat,
                "lon": lon,
                "thumbnail": t.thumbnail,
            }
        )
    plates = []
    start = parse_ts(video.start_utc) if getattr(video, "start_utc", None) else None
    for p in facts.plates:
        if not (key := plate_key(p.text)):
            continue
        lat, lon = _where(p.lat, p.lon)
        utc = p.utc or (start + timedelta(seconds=p.time) if start is not None else None)
        plates.append(
            {
                "video_id": vid,
                "track_id": p.track_id,
                "text": key,
                "confidence": p.confidence,
                "reads": p.reads,
                "time_s": p.time,
                "utc": ts(utc) if utc else None,
                "lat": lat,
                "lon": lon,
                "crop": p.crop,
            }
        )
    if tracks:
        s.execute(insert(Detection), tracks)
    if plates:
        s.execute(insert(Plate), plates)


def fill_plate_times(s: Session, video: Any) -> None:
    """Plates that came before their clip's UTC start did (events ingested out of order) get
    their time from it now: searches sort and filter plates by ``utc``."""
    if not getattr(video, "start_utc", None):
        return
    start = parse_ts(video.start_utc)
    q = select(Plate).where(Plate.video_id == video.video_id, col(Plate.utc).is_(None))
    for plate in s.exec(q):
        plate.utc = ts(start + timedelta(seconds=plate.time_s))
        s.add(plate)


# ----------------------------------------------------------------------------------- queries
# The hits are plain pydantic models with the tables' fields (a test keeps them in step): a
# search or a long trip returns thousands, and validating a plain model from a row costs a
# third of building an SQLModel one.
class ClipOf(BaseModel):
    """The clip a detection or a plate was found in."""

    source_name: str
    channel: str | None = None
    trip_id: str | None = None
    recorded_at: str | None = None  # camera-local start of the clip


class PlateHit(ClipOf):
    """A plate row (:class:`PlateBase`) with the clip it was read in."""

    video_id: str
    track_id: int
    text: str
    confidence: float
    reads: int
    time_s: float
    utc: str | None = None
    lat: float | None = None
    lon: float | None = None
    crop: str | None = None


class DetectionHit(ClipOf):
    """A detection row (:class:`DetectionBase`) with the clip it was seen in."""

    video_id: str
    track_id: int
    label: str
    first_s: float
    last_s: float
    first_utc: str | None = None
    last_utc: str | None = None
    score: float
    frames: int
    x1: int | None = None
    y1: int | None = None
    x2: int | None = None
    y2: int | None = None
    lat: float | None = None
    lon: float | None = None
    thumbnail: str | None = None


class NearHit(BaseModel):
    """A detection or a plate near a place, and how far from it."""

    distance_m: float
    kind: Literal["detection", "plate"]
    what: str  # the detection's label, or the plate's text
    score: float  # the detection's score, or the plate's confidence
    video_id: str
    track_id: int
    time_s: float  # seconds from the clip's start (a detection: when it was first seen)
    utc: str | None
    lat: float
    lon: float
    image: str | None  # the detection's thumbnail, or the plate's crop
    source_name: str
    channel: str | None = None
    trip_id: str | None = None
    recorded_at: str | None = None


class _Point(NamedTuple):
    lat: float
    lon: float


CLIP_FIELDS = tuple(ClipOf.model_fields)


def _hits(table: Any, base: type[SQLModel], video: Any) -> Any:
    """``SELECT <the row's columns>, <its clip's>`` joined on the clip: plain rows that become
    hits without building ORM objects (a search or a long trip returns thousands)."""
    own = [col(getattr(table, f)) for f in base.model_fields]
    clip = [col(getattr(video, f)) for f in CLIP_FIELDS]
    return sa_select(*own, *clip).join(video, col(video.video_id) == col(table.video_id))


def _clip(video: Any) -> dict[str, Any]:
    return {
        "source_name": video.source_name,
        "channel": video.channel,
        "trip_id": video.trip_id,
        "recorded_at": video.recorded_at,
    }


PlateMatch = Literal["exact", "prefix", "partial", "fuzzy"]
# characters OCR mistakes for each other on plates: a fuzzy search tries each swap
CONFUSABLE = ("0ODQ", "1IL", "2Z", "5S", "6G", "8B")
_SWAPS = {ch: group.replace(ch, "") for group in CONFUSABLE for ch in group}
MAX_VARIANTS = 200  # a 32-character key of confusable characters: 32 x 3 + 1


def plate_variants(key: str) -> list[str]:
    """``key`` and every key that differs from it in one confusable character (``AB12`` →
    ``AB12``, ``A812``, ``ABI2``, ``ABL2``, ``AB1Z``): what a fuzzy search looks up."""
    out = [key]
    for i, ch in enumerate(key):
        out += [key[:i] + other + key[i + 1 :] for other in _SWAPS.get(ch, "")]
    return out[:MAX_VARIANTS]


def find_plates(
    s: Session,
    text: str | None,
    limit: int,
    *,
    match: PlateMatch = "prefix",
    since: datetime | None = None,
    until: datetime | None = None,
    trip: str | None = None,
    video_id: str | None = None,
) -> list[PlateHit]:
    """Plates whose key matches ``text``'s key (all plates when None), newest first by the
    plate's UTC time (which ingest sets from its clip's start when heavy had none); plates of
    clips with no UTC time last, by local time.

    ``match``: ``exact`` (the whole key), ``prefix`` (keys that start with it), ``partial``
    (keys that contain it), ``fuzzy`` (the whole key, or one that differs in one character OCR
    confuses, such as 0/O or 8/B: each variant is one lookup on the key index, never a scan).
    ``since``/``until`` bound the plate's UTC time (plates without one are left out then);
    ``trip`` (id or unique prefix) and ``video_id`` narrow it to one trip or one clip."""
    from watchers.ledger import Video

    q = _hits(Plate, PlateBase, Video)
    if text is not None:
        key = plate_key(text)
        if not key:
            raise ValueError(f"{text!r} has no letter or digit to search for")
        if match == "exact":
            q = q.where(Plate.text == key)
        elif match == "fuzzy":
            q = q.where(col(Plate.text).in_(plate_variants(key)))
        elif match == "partial":
            q = q.where(func.instr(col(Plate.text), key) > 0)
            if len(key) >= TRIGRAM:  # narrowed on the trigram index first
                found = text_(
                    "SELECT rowid FROM plates_trigram WHERE plates_trigram MATCH :phrase"
                ).bindparams(phrase=f'"{key}"')  # a key is letters and digits: a plain phrase
                q = q.where(literal_column("plates.rowid").in_(found))
        else:  # a range on the index: every key that starts with ``key`` sorts inside it
            q = q.where(col(Plate.text) >= key, col(Plate.text) < key + "\U0010ffff")
    if since is not None:
        q = q.where(col(Plate.utc) >= ts(since))
    if until is not None:
        q = q.where(col(Plate.utc) < ts(until))
    if trip is not None:
        q = q.where(Video.trip_id == trip_id(s, trip))
    if video_id is not None:
        q = q.where(Plate.video_id == video_id)
    # NULLs sort first in SQLite, so last when descending: no separate "is null" term, which
    # would keep the (text, utc) index from giving the order
    q = q.order_by(
        col(Plate.utc).desc(),
        col(Video.recorded_at).desc(),
        col(Plate.video_id),
        col(Plate.time_s),
    )
    return [PlateHit.model_validate(dict(r)) for r in s.execute(q.limit(limit)).mappings()]


def trip_id(s: Session, prefix: str) -> str:
    """A trip id given it or a prefix that only one trip has."""
    if s.get(Trip, prefix) is not None:
        return prefix
    found = list(s.exec(select(Trip.trip_id).where(col(Trip.trip_id).startswith(prefix))).all())
    if len(found) != 1:
        raise NotFound(f"{len(found) or 'no'} trips match {prefix!r}")
    return found[0]


def find_detections(
    s: Session,
    *,
    label: str | None,
    trip: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    best: bool = False,
) -> list[DetectionHit]:
    """Detections of a class (any when None), on one trip (an id or unique prefix), first seen
    at or after ``since`` and before ``until`` (UTC; detections without a UTC time are left out
    when either is given). Newest first, or in time order within one trip. ``best``: the
    ``limit`` highest-scored ones (still returned in that order)."""
    from watchers.ledger import Video

    when = func.coalesce(col(Detection.first_utc), col(Video.start_utc))
    q = _hits(Detection, DetectionBase, Video)
    if label is not None:
        q = q.where(Detection.label == label.strip().lower())
    if trip is not None:
        q = q.where(Video.trip_id == trip_id(s, trip))
        q = q.order_by(when, col(Video.channel), col(Detection.first_s), col(Detection.track_id))
    else:
        q = q.order_by(
            when.is_(None),
            when.desc(),
            col(Video.recorded_at).desc(),
            col(Detection.video_id),
            col(Detection.first_s),
        )
    if since is not None:
        q = q.where(col(Detection.first_utc) >= ts(since))
    if until is not None:
        q = q.where(col(Detection.first_utc) < ts(until))
    if not best:
        return [DetectionHit.model_validate(dict(r)) for r in s.execute(q.limit(limit)).mappings()]
    top = q.order_by(None).order_by(col(Detection.score).desc(), col(Detection.video_id))
    hits = [DetectionHit.model_validate(dict(r)) for r in s.execute(top.limit(limit)).mappings()]
    if trip is not None:  # a trip's clips all have a UTC start, and so their detections
        hits.sort(key=lambda d: (d.first_utc or "", d.channel or "", d.first_s, d.track_id))
    else:
        hits.sort(key=lambda d: (d.first_utc is None, d.first_utc or ""), reverse=True)
    return hits


def count_detections(s: Session, trip: str) -> int:
    """How many objects were tracked on a trip (its id)."""
    from watchers.ledger import Video

    q = (
        sa_select(func.count())
        .select_from(Detection)
        .join(Video, col(Video.video_id) == col(Detection.video_id))
        .where(col(Video.trip_id) == trip)
    )
    return int(s.execute(q).scalar_one())


def _box(lat_col: Any, lon_col: Any, at: _Point, radius_m: float) -> ColumnElement[bool]:
    """A latitude/longitude box holding every point within ``radius_m`` of ``at`` (with a 1%
    margin), across the antimeridian too; over a pole, a band of latitude."""
    dlat = radius_m / METRES_PER_DEGREE * 1.01
    lo, hi = at.lat - dlat, at.lat + dlat
    band = and_(lat_col.is_not(None), lon_col.is_not(None), lat_col >= lo, lat_col <= hi)
    if lo <= -90 or hi >= 90:
        return band
    dlon = dlat / math.cos(math.radians(max(abs(lo), abs(hi))))
    if dlon >= 180:
        return band
    west, east = at.lon - dlon, at.lon + dlon
    if west < -180:
        return and_(band, or_(lon_col >= west + 360, lon_col <= east))
    if east > 180:
        return and_(band, or_(lon_col >= west, lon_col <= east - 360))
    return and_(band, lon_col >= west, lon_col <= east)


def find_near(s: Session, lat: float, lon: float, radius_m: float, limit: int) -> list[NearHit]:
    """Detections and plates with a position within ``radius_m`` metres (great circle) of
    ``lat``, ``lon``, nearest first (then newest)."""
    from stages.gps.track import haversine_m  # the one great-circle formula
    from watchers.ledger import Video

    at = _Point(lat, lon)
    hits: list[NearHit] = []
    dq = select(Detection, Video).join(Video, col(Video.video_id) == col(Detection.video_id))
    for d, video in s.exec(dq.where(_box(col(Detection.lat), col(Detection.lon), at, radius_m))):
        assert d.lat is not None and d.lon is not None
        distance = haversine_m(at, _Point(d.lat, d.lon))
        if distance <= radius_m:
            hits.append(
                NearHit(
                    distance_m=round(distance, 1),
                    kind="detection",
                    what=d.label,
                    score=d.score,
                    video_id=d.video_id,
                    track_id=d.track_id,
                    time_s=d.first_s,
                    utc=d.first_utc,
                    lat=d.lat,
                    lon=d.lon,
                    image=d.thumbnail,
                    **_clip(video),
                )
            )
    pq = select(Plate, Video).join(Video, col(Video.video_id) == col(Plate.video_id))
    for p, video in s.exec(pq.where(_box(col(Plate.lat), col(Plate.lon), at, radius_m))):
        assert p.lat is not None and p.lon is not None
        distance = haversine_m(at, _Point(p.lat, p.lon))
        if distance <= radius_m:
            hits.append(
                NearHit(
                    distance_m=round(distance, 1),
                    kind="plate",
                    what=p.text,
                    score=p.confidence,
                    video_id=p.video_id,
                    track_id=p.track_id,
                    time_s=p.time_s,
                    utc=p.utc,
                    lat=p.lat,
                    lon=p.lon,
                    image=p.crop,
                    **_clip(video),
                )
            )
    # nearest first; at one distance newest first, unknown times last (the sorts are stable)
    hits.sort(key=lambda h: (h.video_id, h.track_id, h.kind))
    hits.sort(key=lambda h: h.utc or "", reverse=True)
    hits.sort(key=lambda h: h.distance_m)
    return hits[:limit]
