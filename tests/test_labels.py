"""Heavy's labels in the ledger: its completion facts become ``detections`` and ``plates`` rows
(replaced, never added to, by a second completion; ignored as a whole when malformed), and the
queries over them: plates by text, detections by class and trip, everything near a place."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy import text as sql
from test_cli import dashspool, flat, write_config

from watchers.catalog import parse_ts, ts
from watchers.errors import NotFound
from watchers.labels import parse_labels
from watchers.ledger import MIGRATIONS, Ledger, statements
from watchers.sidecar import Event, EventKind

T0 = datetime(2026, 5, 13, 16, 0, tzinfo=timezone.utc)
A, B = "a1" * 32, "b2" * 32  # content ids of two clips
LAT, LON = 51.5, -0.1
M_PER_DEG = 6_371_008.8 * math.pi / 180


def track(track_id: int = 3, label: str = "car", **over: Any) -> dict[str, Any]:
    return {
        "track_id": track_id,
        "label": label,
        "first": 1.2,
        "last": 9.8,
        "first_utc": "2026-05-13T16:00:01.200Z",
        "last_utc": "2026-05-13T16:00:09.800Z",
        "score": 0.91,
        "frames": 24,
        "box": [812, 440, 1010, 560],
        "lat": LAT,
        "lon": LON,
        "thumbnail": f"track-{track_id:04d}.jpg",
        **over,
    }


def plate(track_id: int = 3, text: str = "M5XSX", **over: Any) -> dict[str, Any]:
    return {
        "track_id": track_id,
        "text": text,
        "confidence": 0.93,
        "reads": 7,
        "time": 4.4,
        "utc": "2026-05-13T16:00:04.400Z",
        "lat": 51.5001,
        "lon": LON,
        "crop": f"plate-{track_id:04d}.jpg",
        **over,
    }


def facts(tracks: list[Any] | None = None, plates: list[Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "labels",
        "tracks": [track()] if tracks is None else tracks,
        "plates": [plate()] if plates is None else plates,
        "gps_source": "novatek",
        "frames_looked_at": 60,
    }


def ev(kind: EventKind, stage: str, video: str, at: datetime, **data: Any) -> Event:
    return Event(
        event_id=Event.random_id(),
        kind=kind,
        at=at,
        device="d1",
        stage=stage,
        job=f"job-{video[:6]}",
        video_id=video,
        attempt=int(data.pop("attempt", 1)),
        data={"source_name": f"{video[:4]}.MP4", **data},
    )


def clip(ledger: Ledger, video: str, start: datetime, channel: str = "F") -> None:
    """A clip through ingest: its row, camera-local time, UTC start and end, and so its trip."""
    ingest = {
        "kind": "video",
        "sha256": video,
        "camera": {"channel": channel},
        "time": {
            "local": (start + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
            "utc_start": start.isoformat(),
            "utc_end": (start + timedelta(seconds=60)).isoformat(),
        },
    }
    ledger.ingest(
        [
            ev(EventKind.VIDEO_NEW, "ingest", video, start),
            ev(EventKind.STAGE_COMPLETED, "ingest", video, start, route="heavy", facts=ingest),
        ],
        T0,
    )


def labelled(video: str, found: Any, at: datetime = T0, attempt: int = 1) -> Event:
    return ev(
        EventKind.STAGE_COMPLETED,
        "heavy",
        video,
        at + timedelta(minutes=5),
        attempt=attempt,
        route=None,
        final_state="done",
        facts=found,
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    clip(led, A, T0)
    yield led
    led.close()


def rows(ledger: Ledger) -> list[dict[str, Any]]:
    return [r.model_dump() for r in [*ledger.detections(), *ledger.plates()]]


# -------------------------------------------------------------------------------- ingest
def test_labels_facts_become_rows(ledger: Ledger) -> None:
    ledger.ingest([labelled(A, facts())], T0)
    (d,) = ledger.detections()
    assert (d.video_id, d.track_id, d.label, d.frames, d.score) == (A, 3, "car", 24, 0.91)
    assert (d.first_s, d.last_s, (d.x1, d.y1, d.x2, d.y2)) == (1.2, 9.8, (812, 440, 1010, 560))
    assert d.first_utc == "2026-05-13T16:00:01.200000Z", "fixed width, like catalog.ts"
    assert (d.lat, d.lon, d.thumbnail) == (LAT, LON, "track-0003.jpg")
    (p,) = ledger.plates()
    assert (p.text, p.confidence, p.reads, p.time_s) == ("M5XSX", 0.93, 7, 4.4)
    assert p.utc == "2026-05-13T16:00:04.400000Z"
    assert (p.source_name, p.recorded_at) == ("a1a1.MP4", "2026-05-13T17:00:00")
    assert p.trip_id is not None and p.trip_id == d.trip_id
    (v,) = ledger.videos()
    assert v.state == "done"


def test_applying_the_same_facts_twice_gives_the_same_rows(ledger: Ledger) -> None:
    event = labelled(A, facts())
    ledger.ingest([event], T0)
    first = rows(ledger)
    assert ledger.ingest([event], T0) == 0, "the same event is ingested once"
    again = labelled(A, facts(), attempt=2)  # a retry that reported the same facts
    assert ledger.ingest([again], T0) == 1
    assert rows(ledger) == first
    with ledger.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM detections")).scalar() == 1


def test_a_second_completion_replaces_the_rows(ledger: Ledger) -> None:
    ledger.ingest([labelled(A, facts([track(3), track(4, "person")], [plate(3)]))], T0)
    assert len(ledger.detections()) == 2
    rerun = facts([track(7, "truck")], [])
    ledger.ingest([labelled(A, rerun, at=T0 + timedelta(hours=1), attempt=2)], T0)
    assert [(d.track_id, d.label) for d in ledger.detections()] == [(7, "truck")]
    assert ledger.plates() == []


def test_labels_in_one_batch_with_the_clip_they_belong_to(tmp_path: Path) -> None:
    led = Ledger(tmp_path / "l.db")
    led.ingest(
        [
            ev(EventKind.VIDEO_NEW, "ingest", B, T0),
            labelled(B, facts()),
            labelled(B, facts([track(3, "bus")], []), attempt=2),
        ],
        T0,
    )
    assert [d.label for d in led.detections()] == ["bus"]
    assert led.plates() == []
    led.close()


MALFORMED = {
    "lat 95": facts([track(lat=95.0)]),
    "10 000 tracks": facts([track(i) for i in range(10_000)]),
    "plate text too long": facts(plates=[plate(text="X" * 200)]),
    "label too long": facts([track(label="c" * 500)]),
    "a track_id twice": facts([track(3), track(3)]),
    "a score of NaN": facts([track(score=float("nan"))]),
    "a box of three": facts([track(box=[1, 2, 3])]),
    "tracks not a list": {**facts(), "tracks": "car"},
    "not a dict": ["labels"],
    "a string": "labels",
}


@pytest.mark.parametrize("bad", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_facts_are_ignored_without_failing_ingestion(ledger: Ledger, bad: Any) -> None:
    ledger.ingest([labelled(A, facts())], T0)
    before = rows(ledger)
    assert parse_labels(bad) is None
    later = labelled(A, bad, at=T0 + timedelta(hours=1), attempt=2)
    assert ledger.ingest([later], T0) == 1
    assert rows(ledger) == before, "malformed facts change nothing"
    attempts, events = ledger.history(A)
    assert [a.outcome for a in attempts if a.stage == "heavy"] == ["completed", "completed"]
    assert events[-1].event_id == later.event_id


def test_unknown_keys_and_unknown_places_are_fine(ledger: Ledger) -> None:
    found = facts(
        [track(lat=None, lon=None, first_utc=None, box=None, thumbnail=None, colour="red")],
        [{"track_id": 3, "text": "ab 12-cde"}],  # only what is required
    )
    assert parse_labels({**found, "model": "yolo11x"}) is not None
    boxed = facts([track(box=[812.4, 440.6, 1010.0, 559.5], best_time=4.0, first=-0.02)])
    ledger.ingest([labelled(A, {**boxed, "problems": [], "detector": {"type": "onnx"}})], T0)
    (d,) = ledger.detections()
    assert ((d.x1, d.y1, d.x2, d.y2), d.first_s) == ((812, 441, 1010, 560), -0.02)
    ledger.ingest([labelled(A, found, attempt=2)], T0)
    (d,) = ledger.detections()
    assert (d.lat, d.lon, d.first_utc, d.x1, d.thumbnail) == (None, None, None, None, None)
    (p,) = ledger.plates()
    assert (p.text, p.lat, p.crop) == ("AB12CDE", None, None)
    (video,) = ledger.videos()
    start = parse_ts(video.start_utc)  # no time from heavy: the clip's start plus the offset
    assert p.utc == ts(start + timedelta(seconds=p.time_s))


def test_a_position_needs_both_latitude_and_longitude(ledger: Ledger) -> None:
    ledger.ingest([labelled(A, facts([track(lon=None)], [plate(lat=None)]))], T0)
    assert (ledger.detections()[0].lat, ledger.plates()[0].lon) == (None, None)
    assert ledger.near(LAT, LON, 1000) == []


# -------------------------------------------------------------------------------- queries
def test_plates_match_a_prefix_ignoring_case_spaces_and_dashes(ledger: Ledger) -> None:
    clip(ledger, B, T0 + timedelta(hours=2))
    ledger.ingest(
        [
            labelled(A, facts([track(3), track(4)], [plate(3), plate(4, "M5 ABC")])),
            labelled(
                B,
                facts([track(1)], [plate(1, "m5-xsx", utc="2026-05-13T18:00:04Z")]),
                at=T0 + timedelta(hours=2),
            ),
        ],
        T0,
    )
    assert [(p.text, p.video_id) for p in ledger.plates("m5 xsx")] == [
        ("M5XSX", B),  # newest first
        ("M5XSX", A),
    ]
    assert {p.text for p in ledger.plates("M5-")} == {"M5XSX", "M5ABC"}
    assert {p.text for p in ledger.plates("m5xsx")} == {"M5XSX"}
    assert ledger.plates("M6") == [] and ledger.plates("5XSX") == []
    assert len(ledger.plates()) == 3 and len(ledger.plates(limit=1)) == 1
    with pytest.raises(ValueError, match="no letter or digit"):
        ledger.plates(" - ")


def test_plates_without_a_time_sort_by_their_clip(ledger: Ledger) -> None:
    clip(ledger, B, T0 + timedelta(hours=2))
    ledger.ingest(
        [labelled(A, facts([], [plate(utc=None)])), labelled(B, facts([], [plate(utc=None)]))],
        T0,
    )
    assert [p.video_id for p in ledger.plates("M5XSX")] == [B, A]


def test_partial_plate_search_uses_the_trigram_index_and_follows_every_change(
    ledger: Ledger,
) -> None:
    clip(ledger, B, T0 + timedelta(hours=2))
    ledger.ingest(
        [
            labelled(A, facts([], [plate(1, "XY 4712"), plate(2, "Q47"), plate(3, "AB12CDE")])),
            labelled(B, facts([], [plate(1, "KL 471 P")]), at=T0 + timedelta(hours=2)),
        ],
        T0,
    )

    def partial(text: str) -> set[str]:
        return {p.text for p in ledger.plates(text, match="partial")}

    assert partial("471") == {"XY4712", "KL471P"}, "3+ characters: through the trigram index"
    assert partial("47") == {"XY4712", "Q47", "KL471P"}, "2 characters: a scan"
    assert partial("12c") == {"AB12CDE"} and partial("ZZZ") == set()
    # heavy ran again on A and read other plates: the index follows the delete and the insert
    ledger.ingest([labelled(A, facts([], [plate(5, "ZZ4719")]), attempt=2)], T0)
    assert partial("471") == {"ZZ4719", "KL471P"} and partial("12C") == set()
    with ledger.reading() as s:
        plan = " ".join(
            str(r[-1])
            for r in s.execute(
                sql(
                    "EXPLAIN QUERY PLAN SELECT rowid FROM plates_trigram "
                    "WHERE plates_trigram MATCH '\"471\"'"
                )
            )
        )
    assert "VIRTUAL TABLE INDEX" in plan


def test_old_plates_get_their_clip_time_when_the_ledger_is_migrated(tmp_path: Path) -> None:
    """A ledger from before 0006: plates without a UTC time get their clip's start plus their
    offset, so the newest-first order can come from the (text, utc) index."""
    path = tmp_path / "old.db"
    led = Ledger(path)
    clip(led, A, T0)
    led.ingest([labelled(A, facts([], [plate(utc=None, time=4.25)]))], T0)
    led.close()
    con = sqlite3.connect(path)
    with con:
        con.execute("UPDATE plates SET utc = NULL")
        con.execute("DROP TRIGGER plates_trigram_ai")
        con.execute("DROP TRIGGER plates_trigram_ad")
        con.execute("DROP TRIGGER plates_trigram_au")
        con.execute("DROP TABLE plates_trigram")
        con.execute("DROP INDEX ix_plates_text_utc")
        con.execute("CREATE INDEX ix_plates_text ON plates (text)")
        con.execute("DELETE FROM schema_migrations WHERE name = '0006_plate_search'")
    con.close()
    led = Ledger(path)
    try:
        (p,) = led.plates()
        assert p.utc == ts(T0 + timedelta(seconds=4.25))
        assert [x.text for x in led.plates("5XS", match="partial")] == ["M5XSX"]
    finally:
        led.close()


def test_migrations_split_at_statement_ends_not_inside_triggers() -> None:
    ddl = """
    CREATE TABLE t (x);
    CREATE TRIGGER t_ai AFTER INSERT ON t BEGIN
        INSERT INTO t2 VALUES (new.x);
        INSERT INTO t3 VALUES (new.x);
    END;
    CREATE INDEX ix ON t (x)
    """
    got = list(statements(ddl))
    assert len(got) == 3 and got[1].count("INSERT INTO") == 2 and got[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        list(statements("CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1;"))


def test_detections_by_label_and_by_trip(ledger: Ledger) -> None:
    later = T0 + timedelta(hours=2)  # well past the trip gap: another trip
    at_20 = {"first": 20.0, "first_utc": "2026-05-13T16:00:20Z"}
    clip(ledger, B, later)
    ledger.ingest(
        [
            labelled(A, facts([track(1), track(2, "truck"), track(3, "truck", **at_20)], [])),
            labelled(
                B,
                facts([track(1, "Truck", first_utc="2026-05-13T18:00:01Z")], []),
                at=later,
            ),
        ],
        T0,
    )
    trucks = ledger.detections(label="TRUCK")
    assert [(d.video_id, d.track_id) for d in trucks] == [(B, 1), (A, 3), (A, 2)]
    assert {d.label for d in trucks} == {"truck"}
    (trip_a,) = {d.trip_id for d in ledger.detections() if d.video_id == A}
    (trip_b,) = {d.trip_id for d in ledger.detections() if d.video_id == B}
    assert trip_a and trip_b and trip_a != trip_b
    on_a = ledger.detections(label="truck", trip=trip_a)
    assert [d.track_id for d in on_a] == [2, 3], "in time order within a trip"
    assert [d.video_id for d in ledger.detections(trip=trip_b[:12])] == [B]
    with pytest.raises(NotFound, match="no trips match"):
        ledger.detections(trip="nosuch")
    since = ledger.detections(since=T0 + timedelta(hours=1))
    assert [d.video_id for d in since] == [B]
    until = ledger.detections(until=T0 + timedelta(hours=1))
    assert {d.video_id for d in until} == {A}
    assert len(ledger.detections(limit=2)) == 2


def test_near_keeps_what_lies_within_the_radius(ledger: Ledger) -> None:
    north_150 = LAT + 150 / M_PER_DEG
    east_300 = LON + 300 / (M_PER_DEG * math.cos(math.radians(LAT)))
    found = facts(
        [track(1, lat=north_150, lon=LON), track(2, lat=LAT, lon=east_300), track(3, lat=None)],
        [plate(1, lat=north_150, lon=LON)],
    )
    ledger.ingest([labelled(A, found)], T0)
    near = ledger.near(LAT, LON, radius_m=200)
    # both 150 m away: the plate read at 4.4 s is newer than the car first seen at 1.2 s
    assert [(h.kind, h.track_id) for h in near] == [("plate", 1), ("detection", 1)]
    assert [h.distance_m for h in near] == [pytest.approx(150, abs=0.5)] * 2
    assert (near[0].what, near[0].image, near[1].what) == ("M5XSX", "plate-0001.jpg", "car")
    assert near[1].source_name == "a1a1.MP4" and near[1].trip_id
    wider = ledger.near(LAT, LON, radius_m=400)
    assert [(h.kind, h.track_id) for h in wider][-1] == ("detection", 2), "nearest first"
    assert wider[-1].distance_m == pytest.approx(300, abs=0.5)
    assert ledger.near(LAT, LON, radius_m=100) == []
    assert len(ledger.near(LAT, LON, radius_m=400, limit=1)) == 1


def test_near_across_the_antimeridian_and_at_a_pole(ledger: Ledger) -> None:
    found = facts([track(1, lat=-16.5, lon=179.9995), track(2, lat=89.9999, lon=10.0)], [])
    ledger.ingest([labelled(A, found)], T0)
    (h,) = ledger.near(-16.5, -179.9995, radius_m=200)
    assert h.track_id == 1 and h.distance_m == pytest.approx(106.6, abs=1)
    (h,) = ledger.near(89.9999, -170.0, radius_m=100)
    assert h.track_id == 2


# ----------------------------------------------------------------------------- migration
def test_a_ledger_from_0003_gains_the_labels_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    names = [name for name, _ in MIGRATIONS]
    for name, ddl in MIGRATIONS[: names.index("0003_screening") + 1]:
        db.executescript(ddl)
        db.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
    db.execute(
        "INSERT INTO videos (video_id, job, source_name, state, created_at, updated_at) "
        f"VALUES ('{A}', 'job-a1a1a1', 'old.MP4', 'processing', 't', 't')"
    )
    db.commit()
    db.close()

    ledger = Ledger(path)
    try:
        with ledger.engine.connect() as c:
            done = {r[0] for r in c.execute(text("SELECT name FROM schema_migrations"))}
        assert "0004_labels" in done
        ledger.ingest([labelled(A, facts())], T0)
        (p,) = ledger.plates("M5XSX")
        assert (p.source_name, p.trip_id, p.recorded_at) == ("old.MP4", None, None)
        assert ledger.migrate() == [], "applied once"
    finally:
        ledger.close()


# ----------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ledger (the configured ``dashspool.db``) with one labelled clip."""
    home = tmp_path_factory.mktemp("labels")
    write_config(home)
    led = Ledger(home / "dashspool.db")
    clip(led, A, T0)
    led.ingest([labelled(A, facts([track(3), track(4, "truck")], [plate(3)]))], T0)
    led.close()
    return home


def query(home: Path, *args: str) -> Any:
    r = dashspool("--config", str(home / "policies.toml"), "ledger", *args, cwd=home)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout) if "--json" in args else r.stdout


def test_cli_plates(home: Path) -> None:
    table = flat(query(home, "plates", "m5 xsx"))
    assert "M5XSX" in table and "a1a1.MP4" in table and "4.4s" in table
    (p,) = query(home, "plates", "M5-X", "--json")
    assert (p["text"], p["source_name"], p["recorded_at"]) == (
        "M5XSX",
        "a1a1.MP4",
        "2026-05-13T17:00:00",
    )
    assert query(home, "plates", "ZZZ", "--json") == []


def test_cli_detections(home: Path) -> None:
    (d,) = query(home, "detections", "--label", "truck", "--json")
    assert (d["label"], d["track_id"], d["source_name"]) == ("truck", 4, "a1a1.MP4")
    table = flat(query(home, "detections", "--trip", d["trip_id"][:10]))
    assert "truck" in table and "car" in table
    r = dashspool(
        "--config",
        str(home / "policies.toml"),
        "ledger",
        "detections",
        "--trip",
        "nosuch",
        cwd=home,
    )
    assert r.returncode == 4 and "nosuch" in r.stderr


def test_cli_search(home: Path) -> None:
    hits = query(home, "search", "--near", f"{LAT},{LON}", "--radius-m", "50", "--json")
    assert [(h["kind"], h["what"], h["distance_m"]) for h in hits] == [
        ("detection", "car", 0.0),
        ("detection", "truck", 0.0),
        ("plate", "M5XSX", pytest.approx(11.1, abs=0.1)),
    ]
    assert "M5XSX" in flat(query(home, "search", "--near", f"{LAT}, {LON}"))
    assert query(home, "search", "--near=-33.86,151.21", "--json") == []
    for bad in ("51.5", "north,west", "95,0", "nan,0"):
        r = dashspool(
            "--config", str(home / "policies.toml"), "ledger", "search", "--near", bad, cwd=home
        )
        assert r.returncode == 2, (bad, r.stderr)
        assert "--near" in r.stderr, r.stderr
        assert "LAT,LON" in r.stderr or "within ±90" in r.stderr, r.stderr


def test_hits_carry_every_column_of_their_table_and_their_clip() -> None:
    """The hits are plain models for speed; they must keep every field of the table rows."""
    from watchers.labels import ClipOf, DetectionBase, DetectionHit, PlateBase, PlateHit

    for hit, base in ((PlateHit, PlateBase), (DetectionHit, DetectionBase)):
        assert set(hit.model_fields) == set(base.model_fields) | set(ClipOf.model_fields)
        for name, field in base.model_fields.items():
            assert hit.model_fields[name].annotation == field.annotation, name


def test_plates_that_came_before_their_clip_get_its_time_later(tmp_path: Path) -> None:
    """Events out of order: heavy's plates are ingested before ingest's clip facts."""
    led = Ledger(tmp_path / "ledger.db")
    try:
        led.ingest([labelled(B, facts([], [plate(utc=None, time=2.5)]))], T0)
        (p,) = led.plates()
        assert p.utc is None
        clip(led, B, T0)
        (p,) = led.plates()
        assert p.utc == ts(T0 + timedelta(seconds=2.5))
    finally:
        led.close()
