"""The ledger: migrations, WAL, idempotent ingestion, and a state that late events cannot roll
back."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from watchers.errors import ConfigError
from watchers.ledger import MIGRATIONS, Ledger
from watchers.sidecar import Event, EventKind

T0 = datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)
JOB = "2024_0101_120000_x-abcdef"


def ev(kind: EventKind, stage: str, seconds: float, attempt: int = 1, **data: Any) -> Event:
    return Event(
        event_id=Event.random_id(),
        kind=kind,
        at=T0 + timedelta(seconds=seconds),
        device="d1",
        stage=stage,
        job=JOB,
        video_id="abcdef" + "0" * 58,
        attempt=attempt,
        data={"source_name": "x.MP4", **data},
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db")


def state(ledger: Ledger) -> tuple[str, str | None]:
    (v,) = ledger.videos()
    return v.state, v.stage


def test_migrations_are_named_recorded_and_run_once(tmp_path: Path) -> None:
    first = Ledger(tmp_path / "l.db")
    with first.engine.connect() as c:
        names = [r[0] for r in c.execute(text("SELECT name FROM schema_migrations"))]
        mode = c.execute(text("PRAGMA journal_mode")).scalar()
    assert names == [name for name, _ in MIGRATIONS]
    assert mode == "wal"
    assert Ledger(tmp_path / "l.db").migrate() == []


def test_reading_a_ledger_that_does_not_exist_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no ledger at .* start `dashspool coordinator`"):
        Ledger(tmp_path / "absent.db", read_only=True)


def test_a_read_only_ledger_cannot_write(ledger: Ledger) -> None:
    ledger.ingest([ev(EventKind.VIDEO_NEW, "a", 0)], T0)
    reader = Ledger(ledger.path, read_only=True)
    assert reader.counts() == {"queued": 1}
    with pytest.raises(Exception, match=r"readonly|read-only|query_only|attempt to write"):
        reader.ingest([ev(EventKind.VIDEO_NEW, "a", 1)], T0)


def test_each_event_is_applied_once(ledger: Ledger) -> None:
    events = [ev(EventKind.VIDEO_NEW, "a", 0), ev(EventKind.STAGE_STARTED, "a", 1)]
    assert ledger.ingest(events, T0) == 2
    assert ledger.ingest(events + events, T0) == 0
    attempts, history = ledger.history("abcdef" + "0" * 58)
    assert len(history) == 2 and [a.outcome for a in attempts] == ["running"]


def test_a_normal_trip(ledger: Ledger) -> None:
    ledger.ingest(
        [
            ev(EventKind.VIDEO_NEW, "a", 0),
            ev(EventKind.STAGE_STARTED, "a", 1),
            ev(EventKind.STAGE_COMPLETED, "a", 2, route="b", duration_seconds=1.0),
            ev(EventKind.STAGE_STARTED, "b", 3),
        ],
        T0,
    )
    assert state(ledger) == ("processing", "b")
    ledger.ingest([ev(EventKind.STAGE_COMPLETED, "b", 4, route=None, final_state="archived")], T0)
    assert state(ledger) == ("archived", "b")


def test_late_recovery_events_do_not_roll_the_state_back(ledger: Ledger) -> None:
    """b published to c and was killed before writing its completion; c finished the job;
    then b's device restarted, recovered the claim and found its output already published."""
    ledger.ingest(
        [
            ev(EventKind.VIDEO_NEW, "a", 0),
            ev(EventKind.STAGE_COMPLETED, "a", 1, route="b"),
            ev(EventKind.STAGE_STARTED, "b", 2),
            ev(EventKind.STAGE_STARTED, "c", 3),
            ev(EventKind.STAGE_COMPLETED, "c", 4, route=None, final_state="done"),
        ],
        T0,
    )
    assert state(ledger) == ("done", "c")
    ledger.ingest(
        [
            ev(EventKind.JOB_RECOVERED, "b", 10, attempt=1, reason="the device stopped"),
            ev(EventKind.STAGE_COMPLETED, "b", 11, attempt=2, route="c", already_published=True),
        ],
        T0,
    )
    assert state(ledger) == ("done", "c")
    attempts, _ = ledger.history("abcdef" + "0" * 58)
    assert [(a.stage, a.attempt, a.outcome) for a in attempts if a.stage == "b"] == [
        ("b", 1, "abandoned"),
        ("b", 2, "completed"),
    ]


def test_a_recovery_at_the_current_stage_requeues(ledger: Ledger) -> None:
    ledger.ingest(
        [
            ev(EventKind.VIDEO_NEW, "a", 0),
            ev(EventKind.STAGE_STARTED, "a", 1),
            ev(EventKind.JOB_RECOVERED, "a", 2, reason="the device stopped"),
        ],
        T0,
    )
    assert state(ledger) == ("queued", "a")


def test_a_recovery_after_the_completion_is_ignored(ledger: Ledger) -> None:
    ledger.ingest(
        [
            ev(EventKind.VIDEO_NEW, "a", 0),
            ev(EventKind.STAGE_COMPLETED, "a", 1, route=None, final_state="done"),
            ev(EventKind.JOB_RECOVERED, "a", 2, reason="killed before finishing"),
        ],
        T0,
    )
    assert state(ledger) == ("done", "a")


def test_older_events_arriving_late_do_not_win(ledger: Ledger) -> None:
    ledger.ingest([ev(EventKind.STAGE_FAILED, "a", 5, error="boom")], T0)
    ledger.ingest([ev(EventKind.STAGE_STARTED, "a", 1)], T0)  # a slow device's older file
    assert state(ledger) == ("failed", "a")
    (v,) = ledger.videos()
    assert v.last_error == "boom"


def test_a_ledger_from_before_the_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    """A database made by the first release (0001 only) gains the catalog and keeps its rows."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0][1])
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    db.execute("INSERT INTO schema_migrations VALUES ('0001_initial', 'then')")
    db.execute(
        "INSERT INTO videos (video_id, job, source_name, state, created_at, updated_at) "
        "VALUES ('abcdef012345', 'x-abcdef', 'x.MP4', 'done', 't', 't')"
    )
    db.commit()
    db.close()

    ledger = Ledger(path)
    try:
        (v,) = ledger.videos()
        assert (v.video_id, v.kind, v.trip_id, v.sha256) == ("abcdef012345", "video", None, None)
        assert ledger.trips() == []
        assert ledger.migrate() == [], "applied once"
    finally:
        ledger.close()


def test_writers_in_two_threads_get_sessions_of_their_own(ledger: Ledger) -> None:
    """The coordinator ingests on one thread while retention writes on the scheduler's: the
    second writer must wait for the first to commit, not slip into its transaction."""
    order: list[str] = []
    b_tried = threading.Event()

    def writer_b() -> None:
        b_tried.set()
        with ledger.transaction() as s:
            s.execute(
                text("INSERT INTO alerts (at, level, source, message) VALUES ('2', 'w', 'b', 'b')")
            )
            order.append("b wrote")

    with ledger.transaction() as s:
        s.execute(
            text("INSERT INTO alerts (at, level, source, message) VALUES ('1', 'w', 'a', 'a')")
        )
        thread = threading.Thread(target=writer_b)
        thread.start()
        b_tried.wait(5)
        thread.join(0.3)  # b is blocked on BEGIN IMMEDIATE while a holds the write lock
        order.append("a commits")
    thread.join(10)
    assert order == ["a commits", "b wrote"]
    with ledger.reading() as s:
        assert s.execute(text("SELECT source FROM alerts ORDER BY at")).scalars().all() == [
            "a",
            "b",
        ]
