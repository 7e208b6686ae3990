"""The ledger: one SQLite database on the coordinator's own disk, one writer.

Devices never open it; they drop event files that :meth:`Ledger.ingest` applies exactly once
(the event id is the primary key of ``events``). WAL, a busy timeout, ``BEGIN IMMEDIATE`` for
writes, and schema changes as named migrations recorded in ``schema_migrations``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, insert
from sqlalchemy import text as sql
from sqlmodel import Field, Session, SQLModel, col, select

from watchers import archiving, catalog, labels
from watchers.errors import ConfigError, NotFound
from watchers.sidecar import Event, EventKind


class VideoState(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DEFERRED = "deferred"
    FAILED = "failed"
    DONE = "done"
    ARCHIVED = "archived"
    REJECTED = "rejected"  # set aside in inbox/rejected/ by the entry stage
    DUPLICATE = "duplicate"  # the same content was dropped before (see last_error)
    TRACK = "track"  # a GPX file dropped on its own, filed as an external GPS track


class Outcome(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    SKIPPED = "skipped"
    DEFERRED = "deferred"
    FAILED = "failed"
    ABANDONED = "abandoned"


ts = catalog.ts
VIDEO_ID_RE = re.compile(r"^[0-9a-f]{6,64}$")


class Video(SQLModel, table=True):
    __tablename__ = "videos"
    video_id: str = Field(primary_key=True)
    job: str
    source_name: str
    state: str = Field(index=True)
    stage: str | None = None
    priority: int = 0
    recorded_at: str | None = None
    created_at: str
    updated_at: str
    last_error: str | None = None
    # from the ingest stage (watchers/catalog.py)
    kind: str = "video"
    sha256: str | None = None
    size_bytes: int | None = None
    source_path: str | None = None
    raw_path: str | None = None
    camera: str | None = None
    channel: str | None = None
    mode: str | None = None
    locked: int | None = None
    start_utc: str | None = None
    end_utc: str | None = None
    time_source: str | None = None
    duration_seconds: float | None = None
    gps_source: str | None = None
    gps_points: int | None = None
    moment_id: str | None = None
    trip_id: str | None = None
    # from the preprocess stage
    frames_sampled: int | None = None
    frames_kept: int | None = None
    motion_max: float | None = None
    objects: str | None = None  # JSON: class name → frames it was seen in
    heavy_skipped: str | None = None  # why heavy was skipped (None: it was not)
    # from the archive stage and retention (watchers/archiving.py)
    archive_path: str | None = None  # the clip in stores.archive: YYYY/MM/DD/<video id>/<name>
    archive_sha256: str | None = None  # the copy's hash, read back after writing it
    archived_at: str | None = None
    raw_deleted_at: str | None = None  # retention removed the raw clip


class VideoAlias(SQLModel, table=True):
    """A provisional id (the drop's, before its content was hashed) → the video id."""

    __tablename__ = "video_aliases"
    alias: str = Field(primary_key=True)
    video_id: str


class StageAttempt(SQLModel, table=True):
    __tablename__ = "stage_attempts"
    id: int | None = Field(default=None, primary_key=True)
    video_id: str = Field(index=True)
    job: str
    stage: str
    attempt: int
    device: str
    outcome: str
    started_at: str | None = None
    finished_at: str | None = None
    duration_seconds: float | None = None
    route: str | None = None
    error: str | None = None


class EventRow(SQLModel, table=True):
    __tablename__ = "events"
    event_id: str = Field(primary_key=True)
    kind: str
    at: str = Field(index=True)
    device: str
    stage: str | None = None
    job: str | None = None
    video_id: str | None = Field(default=None, index=True)
    attempt: int = 0
    data: str
    ingested_at: str


class DeviceRow(SQLModel, table=True):
    __tablename__ = "devices"
    device_id: str = Field(primary_key=True)
    first_seen: str
    last_seen: str
    last_stage: str | None = None


MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_initial",
        """
        CREATE TABLE videos (
            video_id TEXT PRIMARY KEY, job TEXT NOT NULL, source_name TEXT NOT NULL,
            state TEXT NOT NULL, stage TEXT, priority INTEGER NOT NULL DEFAULT 0,
            recorded_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, last_error TEXT
        );
        CREATE INDEX ix_videos_state ON videos (state);
        CREATE TABLE stage_attempts (
            id INTEGER PRIMARY KEY, video_id TEXT NOT NULL, job TEXT NOT NULL, stage TEXT NOT NULL,
            attempt INTEGER NOT NULL, device TEXT NOT NULL, outcome TEXT NOT NULL,
            started_at TEXT, finished_at TEXT, duration_seconds REAL, route TEXT, error TEXT,
            UNIQUE (job, stage, attempt)
        );
        CREATE INDEX ix_stage_attempts_video_id ON stage_attempts (video_id);
        CREATE TABLE events (
            event_id TEXT PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL, device TEXT NOT NULL,
            stage TEXT, job TEXT, video_id TEXT, attempt INTEGER NOT NULL DEFAULT 0,
            data TEXT NOT NULL, ingested_at TEXT NOT NULL
        );
        CREATE INDEX ix_events_at ON events (at);
        CREATE INDEX ix_events_video_id ON events (video_id);
        CREATE TABLE devices (
            device_id TEXT PRIMARY KEY, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL,
            last_stage TEXT
        );
        """,
    ),
    catalog.MIGRATION,
    catalog.SCREENING_MIGRATION,
    labels.LABELS_MIGRATION,
    archiving.ARCHIVE_MIGRATION,
    labels.PLATE_SEARCH_MIGRATION,
]


class Ledger:
    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_seconds: float = 30.0,
        read_only: bool = False,
        trip_gap_seconds: float = 300.0,
        moment_window_seconds: float = 2.0,
    ):
        self.path = Path(path)
        self.trip_gap_seconds = trip_gap_seconds
        self.moment_window_seconds = moment_window_seconds
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise ConfigError(
                f"no ledger at {self.path} yet: start `dashspool coordinator` or `dashspool run`"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = self._engine(busy_timeout_seconds)
        # the open write session of each thread (the coordinator ingests on its main thread
        # while retention and backups run on the scheduler's): nesting is per thread
        self._local = threading.local()
        if not read_only:
            self.migrate()

    def _engine(self, busy: float) -> Engine:
        engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": busy, "check_same_thread": False},
        )
        read_only = self.read_only

        @event.listens_for(engine, "connect")
        def _connect(dbapi: sqlite3.Connection, _record: object) -> None:
            dbapi.isolation_level = None  # transactions are begun explicitly below
            cur = dbapi.cursor()
            if not read_only:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """The one way to write: ``BEGIN IMMEDIATE`` outermost, a savepoint when nested in the
        same thread. Threads get sessions of their own; SQLite serialises their writes."""
        current: Session | None = getattr(self._local, "session", None)
        if current is not None:
            with current.begin_nested():
                yield current
            return
        with Session(self.engine, expire_on_commit=False) as session:
            self._local.session = session
            try:
                with session.begin():
                    yield session
            finally:
                self._local.session = None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def migrate(self) -> list[str]:
        """Apply the named migrations not yet recorded; returns their names."""
        applied: list[str] = []
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {r[0] for r in conn.exec_driver_sql("SELECT name FROM schema_migrations")}
        for name, ddl in MIGRATIONS:
            if name in done:
                continue
            with self.engine.begin() as conn:  # each migration is one transaction
                for statement in statements(ddl):
                    conn.exec_driver_sql(statement)
                conn.execute(
                    sql("INSERT INTO schema_migrations VALUES (:n, :t)"),
                    {"n": name, "t": ts(datetime.now(timezone.utc))},
                )
            applied.append(name)
        return applied

    def close(self) -> None:
        self.engine.dispose()

    # ----------------------------------------------------------------- ingest
    def ingest(self, events: Sequence[Event], now: datetime) -> int:
        """Apply events once each (by id), in order, in one transaction. Returns how many were
        new. Already-ingested ids are found with one query per batch, new ones inserted with one
        executemany, and state is applied without autoflush (attempt rows cached per batch)."""
        fresh: dict[str, Event] = {}
        for ev in events:
            fresh.setdefault(ev.event_id, ev)
        with self.transaction() as s:
            ids = list(fresh)
            for i in range(0, len(ids), 500):
                q = select(EventRow.event_id).where(col(EventRow.event_id).in_(ids[i : i + 500]))
                for seen in s.exec(q):
                    fresh.pop(seen, None)
            if not fresh:
                return 0
            s.info.update(attempts={}, pending={}, aliases={}, ledger=self)
            s.execute(
                insert(EventRow),
                [
                    {
                        "event_id": ev.event_id,
                        "kind": ev.kind.value,
                        "at": ts(ev.at),
                        "device": ev.device,
                        "stage": ev.stage,
                        "job": ev.job,
                        "video_id": _resolve(s, ev.video_id),
                        "attempt": ev.attempt,
                        "data": json.dumps(ev.data, default=str),
                        "ingested_at": ts(now),
                    }
                    for ev in fresh.values()
                ],
            )
            with s.no_autoflush:
                for ev in fresh.values():
                    self._apply(s, ev)
        return len(fresh)

    def _apply(self, s: Session, ev: Event) -> None:
        at = ts(ev.at)
        self._seen_device(s, ev, at)
        handler = _APPLY.get(ev.kind)
        video_id = _resolve(s, ev.video_id)
        if handler is None or video_id is None or ev.job is None:
            return
        video = _get(s, Video, video_id)
        if video is None:
            video = Video(
                video_id=video_id,
                job=ev.job,
                source_name=str(ev.data.get("source_name") or ev.job),
                state=VideoState.QUEUED.value,
                stage=ev.stage,
                priority=int(ev.data.get("priority") or 0),
                recorded_at=ev.data.get("recorded_at"),
                created_at=at,
                updated_at="",
            )
            _add(s, video, video_id)
        s.add(handler(s, ev, video, at))

    @staticmethod
    def _seen_device(s: Session, ev: Event, at: str) -> None:
        row = _get(s, DeviceRow, ev.device)
        if row is None:
            new = DeviceRow(device_id=ev.device, first_seen=at, last_seen=at, last_stage=ev.stage)
            _add(s, new, ev.device)
        elif at >= row.last_seen:
            row.last_seen, row.last_stage = at, ev.stage or row.last_stage
            s.add(row)

    # ---------------------------------------------------------------- queries
    def videos(
        self, *, state: str | None = None, limit: int = 100, kind: str | None = "video"
    ) -> list[Video]:
        with self.reading() as s:
            q = select(Video).order_by(col(Video.created_at).desc()).limit(limit)
            if state:
                q = q.where(Video.state == state)
            if kind:
                q = q.where(Video.kind == kind)
            return list(s.exec(q).all())

    def find_video(self, prefix: str) -> list[Video]:
        with self.reading() as s:
            q = select(Video).where(
                (col(Video.video_id).startswith(prefix))
                | (Video.job == prefix)
                | (col(Video.job).endswith(f"-{prefix}"))
            )
            return list(s.exec(q.limit(20)).all())

    def history(self, video_id: str) -> tuple[list[StageAttempt], list[EventRow]]:
        with self.reading() as s:
            attempts = s.exec(
                select(StageAttempt)
                .where(StageAttempt.video_id == video_id)
                .order_by(col(StageAttempt.id))
            ).all()
            events = s.exec(
                select(EventRow).where(EventRow.video_id == video_id).order_by(col(EventRow.at))
            ).all()
            return list(attempts), list(events)

    def failures(self, limit: int = 100) -> list[EventRow]:
        kinds = (EventKind.STAGE_FAILED.value, EventKind.DROP_REJECTED.value)
        with self.reading() as s:
            q = select(EventRow).where(col(EventRow.kind).in_(kinds))
            return list(s.exec(q.order_by(col(EventRow.at).desc()).limit(limit)).all())

    def events_since(self, since: datetime, limit: int = 1000) -> list[EventRow]:
        with self.reading() as s:
            q = select(EventRow).where(EventRow.at >= ts(since)).order_by(col(EventRow.at))
            return list(s.exec(q.limit(limit)).all())

    def trips(self, limit: int = 100) -> list[catalog.Trip]:
        with self.reading() as s:
            q = select(catalog.Trip).order_by(col(catalog.Trip.start_utc).desc()).limit(limit)
            return list(s.exec(q).all())

    def trip(self, prefix: str) -> tuple[catalog.Trip, list[Video], list[catalog.TrackPoint]]:
        """One trip (id or unique prefix): its clips in time order and its GPS points."""
        with self.reading() as s:
            found = list(
                s.exec(
                    select(catalog.Trip).where(col(catalog.Trip.trip_id).startswith(prefix))
                ).all()
            )
            if len(found) != 1:
                raise NotFound(f"{len(found) or 'no'} trips match {prefix!r}")
            trip = found[0]
            clips = s.exec(
                select(Video)
                .where(Video.trip_id == trip.trip_id)
                .order_by(col(Video.start_utc), col(Video.channel))
            ).all()
            return trip, list(clips), catalog.trip_points(s, trip.trip_id)

    # labels (watchers/labels.py): what heavy found
    def plates(
        self, text: str | None = None, limit: int = 100, match: labels.PlateMatch = "prefix"
    ) -> list[labels.PlateHit]:
        """Plates matching ``text`` (case, spaces and dashes ignored; ``match``: exact, prefix,
        partial or fuzzy, see :func:`labels.find_plates`), newest first."""
        with self.reading() as s:
            return labels.find_plates(s, text, limit, match=match)

    def detections(
        self,
        *,
        label: str | None = None,
        trip: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[labels.DetectionHit]:
        """Detections of a class, on a trip (id or unique prefix), first seen in [since, until)."""
        with self.reading() as s:
            return labels.find_detections(
                s, label=label, trip=trip, since=since, until=until, limit=limit
            )

    def near(
        self, lat: float, lon: float, radius_m: float = 200.0, limit: int = 100
    ) -> list[labels.NearHit]:
        """Detections and plates within ``radius_m`` metres of a place, nearest first."""
        with self.reading() as s:
            return labels.find_near(s, lat, lon, radius_m, limit)

    def counts(self) -> dict[str, int]:
        with self.reading() as s:
            rows = s.execute(sql("SELECT state, count(*) FROM videos GROUP BY state")).all()
            return {str(r[0]): int(r[1]) for r in rows}


M = TypeVar("M", bound=SQLModel)


def statements(ddl: str) -> Iterator[str]:
    """The SQL statements of a migration, split at the semicolons that end one (not those
    inside a trigger's BEGIN ... END)."""
    buf = ""
    for part in ddl.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                yield buf.strip()
            buf = ""
    if buf.strip(" \n;"):
        raise ValueError(f"an incomplete SQL statement in a migration: {buf.strip()[:80]!r}")


def _get(s: Session, model: type[M], key: str) -> M | None:
    """``Session.get`` that also sees rows added earlier in this batch (autoflush is off)."""
    pending: dict[tuple[type, str], Any] = s.info.setdefault("pending", {})
    found = pending.get((model, key))
    return found if found is not None else s.get(model, key)


def _add(s: Session, row: SQLModel, key: str) -> None:
    s.info.setdefault("pending", {})[(type(row), key)] = row
    s.add(row)


def _attempt(s: Session, ev: Event) -> StageAttempt:
    assert ev.video_id and ev.job and ev.stage
    cache: dict[tuple[str, str, int], StageAttempt] = s.info.setdefault("attempts", {})
    key = (ev.job, ev.stage, ev.attempt)
    if key in cache:
        return cache[key]
    row = s.exec(
        select(StageAttempt).where(
            StageAttempt.job == ev.job,
            StageAttempt.stage == ev.stage,
            StageAttempt.attempt == ev.attempt,
        )
    ).first()
    if row is None:
        row = StageAttempt(
            video_id=_resolve(s, ev.video_id) or ev.video_id,
            job=ev.job,
            stage=ev.stage,
            attempt=ev.attempt,
            device=ev.device,
            outcome=Outcome.RUNNING.value,
        )
    cache[key] = row
    return row


def _completed(s: Session, ev: Event) -> bool:
    cache: dict[tuple[str, str, int], StageAttempt] = s.info.get("attempts", {})
    if any(
        k[:2] == (ev.job, ev.stage) and r.outcome == Outcome.COMPLETED.value
        for k, r in cache.items()
    ):
        return True
    q = select(StageAttempt.id).where(
        StageAttempt.job == ev.job,
        StageAttempt.stage == ev.stage,
        StageAttempt.outcome == Outcome.COMPLETED.value,
    )
    return s.exec(q).first() is not None


def _set_state(video: Video, at: str, state: VideoState | str, stage: str | None) -> None:
    if at >= video.updated_at:  # events may arrive out of order across devices
        video.state = state.value if isinstance(state, VideoState) else state
        video.stage = stage
        video.updated_at = at


Handler = Callable[[Session, Event, Video, str], Video]


def _new(s: Session, ev: Event, video: Video, at: str) -> Video:
    video.source_name = str(ev.data.get("source_name") or video.source_name)
    _set_state(video, at, VideoState.QUEUED, ev.stage)
    return video


def _started(s: Session, ev: Event, video: Video, at: str) -> Video:
    row = _attempt(s, ev)
    row.started_at, row.device = at, ev.device
    if row.outcome == Outcome.RUNNING.value:
        s.add(row)
    _set_state(video, at, VideoState.PROCESSING, ev.stage)
    return video


def _finished(outcome: Outcome) -> Handler:
    def apply(s: Session, ev: Event, video: Video, at: str) -> Video:
        if outcome is Outcome.ABANDONED and _completed(s, ev):
            return video  # the stage finished before its device stopped: nothing was abandoned
        row = _attempt(s, ev)
        row.outcome, row.finished_at, row.device = outcome.value, at, ev.device
        row.duration_seconds = ev.data.get("duration_seconds")
        row.route = ev.data.get("route")
        row.error = ev.data.get("error") or ev.data.get("reason")
        s.add(row)
        # A recovery, or a retry that found its output already published, may be stamped later
        # than the next stage's own events (the job moved on before this device restarted):
        # those two only move the state while the video is still at this stage.
        late = outcome is Outcome.ABANDONED or bool(ev.data.get("already_published"))
        if late and video.stage != ev.stage:
            return video
        if outcome is Outcome.COMPLETED:
            video = _identify(s, ev, video, at)
        if outcome in (Outcome.COMPLETED, Outcome.SKIPPED):
            route, final = ev.data.get("route"), ev.data.get("final_state")
            if route:
                _set_state(video, at, VideoState.QUEUED, route)
            else:
                _set_state(video, at, final or VideoState.DONE, ev.stage)
        elif outcome is Outcome.DEFERRED:
            video.last_error = row.error
            _set_state(video, at, VideoState.DEFERRED, ev.stage)
        elif outcome is Outcome.FAILED:
            video.last_error = row.error
            _set_state(video, at, VideoState.FAILED, ev.stage)
        elif outcome is Outcome.ABANDONED:
            _set_state(video, at, VideoState.QUEUED, ev.stage)
        return video

    return apply


def _requeued(s: Session, ev: Event, video: Video, at: str) -> Video:
    _set_state(video, at, VideoState.QUEUED, ev.stage)
    return video


def _set_aside(state: VideoState) -> Handler:
    def apply(s: Session, ev: Event, video: Video, at: str) -> Video:
        video.last_error = str(ev.data.get("reason") or "")[:2000] or None
        _set_state(video, at, state, ev.stage)
        return video

    return apply


def _identify(s: Session, ev: Event, video: Video, at: str) -> Video:
    """A completion: re-key the video from its provisional drop id to the content id (ingest),
    then record the stage's facts (catalog: ingest's clip facts, preprocess's screening;
    labels: heavy's detections and plates; archiving: the archive's verified copy)."""
    new_id = ev.data.get("new_video_id")
    if isinstance(new_id, str) and new_id != video.video_id and VIDEO_ID_RE.match(new_id):
        video = _rekey(s, video, new_id)
    facts = catalog.parse_facts(ev.data.get("facts"))
    if facts is not None:
        led: Ledger = s.info["ledger"]
        catalog.apply_clip(
            s,
            video,
            facts,
            at,
            trip_gap=led.trip_gap_seconds,
            moment_window=led.moment_window_seconds,
        )
        labels.fill_plate_times(s, video)  # plates ingested before their clip's own facts
    screening = catalog.parse_screening(ev.data.get("facts"))
    if screening is not None:
        catalog.apply_screening(video, screening)
    found = labels.parse_labels(ev.data.get("facts"))
    if found is not None:
        labels.apply_labels(s, video, found)
    archived = archiving.parse_archive(ev.data.get("facts"))
    if archived is not None:
        archiving.apply_archive(video, archived)
    return video


def _rekey(s: Session, old: Video, new_id: str) -> Video:
    """Move a video row, its attempts and events to ``new_id``; the old id becomes an alias.
    When ``new_id`` already has a row (a later stage's events were ingested first), the two
    rows are merged, keeping the newer state."""
    old_id = old.video_id
    row = _get(s, Video, new_id)
    if row is None:
        row = Video.model_validate({**old.model_dump(), "video_id": new_id})
        _add(s, row, new_id)
    else:
        row.created_at = min(row.created_at, old.created_at)
        if old.updated_at > row.updated_at:
            row.state, row.stage, row.updated_at = old.state, old.stage, old.updated_at
    s.flush()
    s.execute(
        sql("UPDATE stage_attempts SET video_id = :n WHERE video_id = :o"),
        {"n": new_id, "o": old_id},
    )
    s.execute(
        sql("UPDATE events SET video_id = :n WHERE video_id = :o"), {"n": new_id, "o": old_id}
    )
    for attempt in s.info.get("attempts", {}).values():
        if attempt.video_id == old_id:
            attempt.video_id = new_id
    s.info["pending"].pop((Video, old_id), None)
    s.delete(old)
    s.merge(VideoAlias(alias=old_id, video_id=new_id))
    s.info["aliases"][old_id] = new_id
    return row


def _resolve(s: Session, video_id: str | None) -> str | None:
    """The video id an event's id stands for now (a drop id becomes the content id)."""
    if video_id is None:
        return None
    cache: dict[str, str | None] = s.info.setdefault("aliases", {})
    if video_id not in cache:
        alias = s.get(VideoAlias, video_id)
        cache[video_id] = alias.video_id if alias else None
    return cache[video_id] or video_id


_APPLY: dict[EventKind, Handler] = {
    EventKind.VIDEO_NEW: _new,
    EventKind.STAGE_STARTED: _started,
    EventKind.STAGE_COMPLETED: _finished(Outcome.COMPLETED),
    EventKind.STAGE_SKIPPED: _finished(Outcome.SKIPPED),
    EventKind.STAGE_DEFERRED: _finished(Outcome.DEFERRED),
    EventKind.STAGE_FAILED: _finished(Outcome.FAILED),
    EventKind.JOB_RECOVERED: _finished(Outcome.ABANDONED),
    EventKind.JOB_REQUEUED: _requeued,
    EventKind.DROP_REJECTED: _set_aside(VideoState.REJECTED),
    EventKind.DROP_DUPLICATE: _set_aside(VideoState.DUPLICATE),
}
