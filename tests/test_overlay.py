"""stages.overlay: the overlay grammar, the track built from readings, and real OCR (rapidocr,
recognition only) on rendered overlays (tests/overlaygen.py) over a grid of fonts, sizes, scenes,
noise and JPEG qualities: an exact-parse rate, and never a wrong value."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import overlaygen
import pytest
from numpy.typing import NDArray
from overlaygen import Look
from pydantic import ValidationError

from stages.frames import FrameSampler, every_seconds
from stages.gps import Fix
from stages.gps.track import haversine_m
from stages.overlay import (
    KINK_M,
    MAX_PROBLEM_LINES,
    OverlayReading,
    OverlaySettings,
    ReadLine,
    build_track,
    crop_strip,
    overlay_track,
    parse_overlay,
    read_overlay,
    read_strip,
    text_box,
)

UTC = timezone.utc
EXAMPLE = "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32"


def values(r: OverlayReading | None) -> tuple[Any, ...] | None:
    """What a reading says (the model name is free text: not a value)."""
    return None if r is None else (r.local_time, r.lat, r.lon, r.speed_kmh)


# --- the grammar ----------------------------------------------------------------------------


def test_parse_the_example_line() -> None:
    r = parse_overlay(EXAMPLE)
    assert r == OverlayReading(
        datetime(2026, 1, 28, 18, 13, 32), 9.2985, -75.3856, 45.0, "VIOFO A229"
    )
    assert r is not None and r.local_time.tzinfo is None  # the camera's local time


def test_parse_mph_and_southern_eastern_hemispheres() -> None:
    r = parse_overlay("062MPH S:33.8688 E:151.2093 VIOFO A129 PRO 2026/05/13 07:02:09")
    assert values(r) == (datetime(2026, 5, 13, 7, 2, 9), -33.8688, 151.2093, 99.779)
    assert r is not None and r.model == "VIOFO A129 PRO"


@pytest.mark.parametrize(
    "text",
    [
        "045KMH N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # no slash
        "045KM H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",
        "045km/h n:9.2985 w:75.3856 viofo a229 28-01-2026 18:13:32",  # lower case
        "O45KM/H N:9.2985 W:75.3856 VIOFO A229 28-O1-2026 18:13:32",  # letter O in numbers
        "045KM/H N9.2985 W75.3856 VIOFO A229 28-01-2026 18:13:32",  # colons lost
        "045KM/H N;9.2985 W:75,3856 VIOFO A229 28-01-2026 18;13.32",  # ; , . for : and .
        "045KM/HN:9.2985W:75.3856VIOFOA22928-01-202618:13:32",  # spaces lost
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28=01=2026 18:13:32",  # = for -
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28\u201301\u20132026 18:13:32",  # en dash
        "'045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32.",  # specks at the ends
        "045KM/H N:09.2985 W:075.3856 VIOFO A229 2026-01-28 18:13:32",  # padded, year first
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 2026/01/28 18:13:32",
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28/01/2026 18:13:32",  # 28 can only be a day
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 01/28/2026 18:13:32",  # ... here too
        "045KM/H N:9.2985 W:75.3856 28-01-2026 18:13:32",  # no model name
    ],
)
def test_parse_tolerates_unambiguous_ocr_slips(text: str) -> None:
    assert values(parse_overlay(text)) == (datetime(2026, 1, 28, 18, 13, 32), 9.2985, -75.3856, 45)


def test_parse_slash_dates_in_the_configured_order() -> None:
    line = "045KM/H N:9.2985 W:75.3856 VIOFO A229 {} 18:13:32"
    assert parse_overlay(line.format("02/01/2026")) is None  # 2 Jan or 1 Feb: ambiguous
    dmy = parse_overlay(line.format("02/01/2026"), slash_date_order="dmy")
    mdy = parse_overlay(line.format("02/01/2026"), slash_date_order="mdy")
    assert dmy is not None and dmy.local_time.date() == datetime(2026, 1, 2).date()
    assert mdy is not None and mdy.local_time.date() == datetime(2026, 2, 1).date()
    assert parse_overlay(line.format("13/01/2026"), slash_date_order="mdy") is None  # month 13


@pytest.mark.parametrize(
    "text",
    [
        "045KM/H N:95.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # latitude over 90
        "045KM/H N:9.2985 W:181.3856 VIOFO A229 28-01-2026 18:13:32",  # longitude over 180
        "045KM/H N:0.0000 E:0.0000 VIOFO A229 28-01-2026 18:13:32",  # no fix
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:61:32",  # minute 61
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 24:13:32",  # hour 24
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:60",  # leap second
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 31-02-2026 18:13:32",  # 31 February
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 29-02-2025 18:13:32",  # not a leap year
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-13-2026 18:13:32",  # month 13
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-1999 18:13:32",  # a reset clock's year
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01/2026 18:13:32",  # mixed separators
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 02/01/2026 18:13:32",  # ambiguous day/month
        "045KM/H W:75.3856 N:9.2985 VIOFO A229 28-01-2026 18:13:32",  # longitude first
        "N:9.2985 W:75.3856 045KM/H VIOFO A229 28-01-2026 18:13:32",  # speed moved
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 18:13:32 28-01-2026",  # time before date
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026",  # no time
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 18:13:32",  # no date
        "045KM/H 9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # hemisphere missing
        "045KM/H N:9.2985 :75.3856 VIOFO A229 28-01-2026 18:13:32",
        "045KM/H N:9.2985 X:75.3856 VIOFO A229 28-01-2026 18:13:32",
        "045KM/H N:9.2I85 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # I is not 1
        "045KM/H N:9.2985 W:7S.3856 VIOFO A229 28-01-2026 18:13:32",  # S is not 5
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 2B-01-2026 18:13:32",  # B is not 8
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 1l:13:32",  # l is not 1
        "45KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # a digit lost
        "0450KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # a digit too many
        "045KM/H N:9.298 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # 3 decimals
        "045KM/H N:9.29855 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # 5 decimals
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:321",  # a digit after
        "045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:3",
        "X045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # a letter before
        "450KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # over 300 km/h
        "045KPH N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32",  # unknown unit
        "045KM/H N:9.2985 W:75.3856 VIO:FO 28-01-2026 18:13:32",  # a colon in the model
        "271M7111.41.2O75L.122.0227V1010A2232001202022.O0.2",  # what OCR made of a bad strip
        "",
        "VIOFO A229",
    ],
)
def test_parse_rejects(text: str) -> None:
    assert parse_overlay(text) is None


# --- the track ------------------------------------------------------------------------------

START = datetime(2026, 1, 28, 18, 13, 30)  # the clip's local start (from its name)


def drive(
    seconds: int, *, fps: float = 1.0, start: datetime = START
) -> list[tuple[float, OverlayReading]]:
    """Readings of a car going north at 54 km/h (15 m/s), as a camera shows them: the overlay
    time is the camera clock truncated to the second, the position its 1 Hz GPS fix."""
    out = []
    for i in range(round(seconds * fps)):
        t = i / fps
        whole = int(t)
        lat = round(45.0 + whole * 15 / 111_195, 4)
        out.append((t, OverlayReading(start + timedelta(seconds=whole), lat, 5.0, 54.0)))
    return out


def misread(reading: OverlayReading, **changes: Any) -> OverlayReading:
    return dataclasses.replace(reading, **changes)


def test_track_converts_local_time_to_utc_with_the_zone() -> None:
    paris, _ = build_track(drive(5), clip_local_start=START, timezone="Europe/Paris")
    assert [f.time for f in paris] == [
        datetime(2026, 1, 28, 17, 13, 30 + i, tzinfo=UTC) for i in range(5)
    ]
    bogota, _ = build_track(drive(2), clip_local_start=START, timezone="America/Bogota")
    assert bogota[0].time == datetime(2026, 1, 28, 23, 13, 30, tzinfo=UTC)
    summer = datetime(2026, 7, 14, 12, 0, 0)
    fixes, _ = build_track(drive(2, start=summer), clip_local_start=summer, timezone="Europe/Paris")
    assert fixes[0].time == datetime(2026, 7, 14, 10, 0, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        build_track(drive(2), clip_local_start=START, timezone="Europe/Atlantis")


def test_track_in_the_hour_a_dst_change_repeats() -> None:
    repeated = datetime(2026, 10, 25, 2, 30, 0)  # Paris: 00:30 or 01:30 UTC
    fixes, problems = build_track(
        drive(3, start=repeated), clip_local_start=repeated, timezone="Europe/Paris"
    )
    assert fixes[0].time == datetime(2026, 10, 25, 0, 30, 0, tzinfo=UTC)  # summer time assumed
    assert problems == ["3 overlay times fall in a DST change: first offset assumed"]
    aware = repeated.replace(tzinfo=UTC) - timedelta(hours=2)  # the clip's start, given in UTC
    fixes, problems = build_track(
        drive(3, start=repeated), clip_local_start=aware, timezone="Europe/Paris"
    )
    assert len(fixes) == 3


def test_track_keeps_one_fix_per_overlay_second() -> None:
    fixes, problems = build_track(drive(4, fps=3), clip_local_start=START, timezone="UTC")
    assert len(fixes) == 4 and problems == []
    assert [f.time.second for f in fixes] == [30, 31, 32, 33]


def test_track_rejects_jumps_and_a_wrong_date_with_reasons() -> None:
    readings = drive(12)
    for i, lat in ((4, 0.05), (8, 0.05), (9, 0.07), (11, -0.05)):  # alone, two in a row, last
        t, r = readings[i]
        readings[i] = (t, misread(r, lat=r.lat + lat))
    t, r = readings[6]
    readings[6] = (t, misread(r, local_time=r.local_time.replace(month=2)))
    fixes, problems = build_track(readings, clip_local_start=START, timezone="UTC")
    assert [f.time.second - 30 for f in fixes] == [0, 1, 2, 3, 5, 7, 10]
    for t in (4, 8, 9, 11):
        assert any(f"at {t}.0 s" in p and "implausible jump" in p for p in problems), problems
    assert any("at 6.0 s" in p and "from the clip's time" in p for p in problems), problems

    # without the clip's start, the other frames' times give the wrong date away
    fixes, problems = build_track(readings, clip_local_start=None, timezone="UTC")
    assert [f.time.second - 30 for f in fixes] == [0, 1, 2, 3, 5, 7, 10]
    assert any("at 6.0 s" in p and "off the other frames'" in p for p in problems), problems


def test_track_rejects_a_misread_second_the_skew_allows() -> None:
    readings = drive(10)
    t, r = readings[5]  # 18:13:35 read as 18:13:39: near the clip's time, not the frame's
    readings[5] = (t, OverlayReading(r.local_time + timedelta(seconds=4), r.lat, r.lon, 54.0))
    fixes, problems = build_track(readings, clip_local_start=START, timezone="UTC")
    assert len(fixes) == 9
    assert problems and "at 5.0 s" in problems[0] and "+4.0 s off" in problems[0]


@pytest.mark.parametrize("clip_start", [START, None])
def test_track_removes_the_misreads_real_ocr_made(clip_start: datetime | None) -> None:
    """The wrong values rapidocr read from small, heavily compressed overlays (8 for 3, 3 for
    8, 5 for 3 or 6, one digit each), none of which the grammar can see."""
    readings = drive(24)
    bad = {
        2: {"local_time": readings[2][1].local_time.replace(month=8)},  # 01-03 read 01-08
        5: {"local_time": readings[5][1].local_time.replace(year=2025, hour=13)},  # 2025, 13:
        8: {"local_time": readings[8][1].local_time.replace(hour=13)},  # 18:13 read 13:13
        11: {"lat": readings[11][1].lat - 2},  # 45.0 read 43.0
        14: {"lon": 5.2},  # 5.0000 read 5.2000
        17: {"lat": round(readings[17][1].lat + 0.0002, 4)},  # 22 m off: the last digit
        20: {"local_time": readings[20][1].local_time + timedelta(seconds=5)},  # :52 read :57
    }
    for i, changes in bad.items():
        readings[i] = (readings[i][0], misread(readings[i][1], **changes))
    fixes, problems = build_track(readings, clip_local_start=clip_start, timezone="UTC")
    assert [f.time.second - 30 for f in fixes] == [i for i in range(24) if i not in bad]
    assert len(problems) >= len(bad)
    for i in bad:
        assert any(f"at {i}.0 s" in p for p in problems), (i, problems)
    assert any("22 m off the line" in p for p in problems), problems


def test_track_keeps_a_tight_turn() -> None:
    """A 25 m radius turn at 43 km/h, one fix a second, rounded to 4 decimals like the overlay:
    no fix is taken for a misread."""
    readings = []
    for i in range(12):
        angle = i * 12 / 25  # radians: 12 m/s on a 25 m circle
        lat = 45.0 + 25 * math.sin(angle) / 111_195
        lon = 5.0 + 25 * (1 - math.cos(angle)) / (111_195 * math.cos(math.radians(45)))
        when = START + timedelta(seconds=i)
        readings.append((float(i), OverlayReading(when, round(lat, 4), round(lon, 4), 43.0)))
    fixes, problems = build_track(readings, clip_local_start=START, timezone="UTC")
    assert len(fixes) == 12 and problems == []


def test_track_replaces_a_misread_speed_and_keeps_hard_braking() -> None:
    readings = drive(8)
    t, r = readings[4]
    readings[4] = (t, misread(r, speed_kmh=94.0))  # 054 read 094
    fixes, problems = build_track(readings, clip_local_start=START, timezone="UTC")
    assert len(fixes) == 8
    assert fixes[4].speed_kmh is not None and abs(fixes[4].speed_kmh - 54) < 25
    assert problems == [
        "overlay at 4.0 s (2026-01-28 18:13:34 45.0005,5.0000 94 km/h) rejected: "
        "speed 94 km/h, its neighbours' 54: dropped"
    ]

    braking = []  # steady, then as hard as a car can (1 g: 35 km/h a second)
    for i, speed in enumerate((100, 100, 100, 65, 30, 0, 0)):
        when = START + timedelta(seconds=i)
        braking.append((float(i), OverlayReading(when, 45.0 + i * 0.0002, 5.0, float(speed))))
    fixes, problems = build_track(braking, clip_local_start=START, timezone="UTC")
    assert [f.speed_kmh for f in fixes] == [100, 100, 100, 65, 30, 0, 0] and problems == []


def test_track_a_second_misread_by_one_loses_to_the_frame_that_shows_it() -> None:
    readings = drive(6)
    t, r = readings[2]  # :32 read as :33, at the position of :32
    readings[2] = (t, misread(r, local_time=r.local_time + timedelta(seconds=1)))
    fixes, _ = build_track(readings, clip_local_start=START, timezone="UTC")
    assert [(f.time.second, f.lat) for f in fixes] == [
        (30 + i, r.lat) for i, (_, r) in enumerate(drive(6)) if i != 2
    ]


@pytest.mark.parametrize(("off_seconds", "kept"), [(60, 5), (-110, 5), (200, 0), (-3600, 0)])
def test_track_rejects_overlay_times_far_from_the_clips(off_seconds: int, kept: int) -> None:
    readings = drive(5, start=START + timedelta(seconds=off_seconds))
    fixes, problems = build_track(
        readings, clip_local_start=START, timezone="UTC", max_clock_skew_seconds=120
    )
    assert len(fixes) == kept
    assert len(problems) == 5 - kept
    assert all("over 120 s" in p for p in problems)


def test_track_rejects_impossible_speeds_and_conflicting_readings() -> None:
    readings = drive(6, fps=2)
    t, r = readings[4]  # 18:13:32, first frame: a speed no car drives
    readings[4] = (t, OverlayReading(r.local_time, r.lat, r.lon, 280.0))
    for i in (1, 7):  # 18:13:30 and :33, second frames: 11 km from the first (one each)
        t, r = readings[i]
        readings[i] = (t, misread(r, lat=r.lat + 0.1))
    fixes, problems = build_track(
        readings, clip_local_start=START, timezone="UTC", max_speed_kmh=200
    )
    assert [f.time.second for f in fixes] == [31, 32, 33, 34, 35]  # :30 cannot be told
    assert all(f.speed_kmh == 54.0 for f in fixes) and fixes[2].lat == drive(4)[3][1].lat
    assert any("at 2.0 s" in p and "speed over 200" in p for p in problems), problems
    assert any("at 3.5 s" in p and "disagrees with the other" in p for p in problems), problems
    assert sum("the frames of 18:13:30 disagree" in p for p in problems) == 2, problems


def test_track_orders_by_frame_time_and_bounds_problems() -> None:
    readings = drive(8)
    shuffled = readings[::2] + readings[1::2]
    fixes, _ = build_track(shuffled, clip_local_start=START, timezone="UTC")
    assert [f.time.second for f in fixes] == list(range(30, 38))

    far = START + timedelta(days=3)
    wrong = [(float(i), OverlayReading(far, 45.0, 5.0, 50.0)) for i in range(30)]
    fixes, problems = build_track(wrong, clip_local_start=START, timezone="UTC")
    assert fixes == ()
    assert len(problems) == MAX_PROBLEM_LINES + 1
    assert problems[-1] == "and 10 more overlay readings rejected"


def survives(truth: OverlayReading, wrong: OverlayReading) -> bool:
    """Whether a misread, among true readings of the 3 seconds either side of it (a car going
    north at the line's speed), leaves a fix at a wrong time or further than KINK_M from the
    truth."""
    north = truth.speed_kmh / 3.6 / 111_195  # degrees a second
    expected, readings = {}, []
    for k in range(-3, 4):
        when = truth.local_time + timedelta(seconds=k)
        lat = max(-90.0, min(90.0, round(truth.lat + k * north, 4)))
        expected[when] = Fix(when.replace(tzinfo=UTC), lat, truth.lon)
        shown = wrong if k == 0 else dataclasses.replace(truth, local_time=when, lat=lat)
        readings.append((k + 3.0, shown))
    start = truth.local_time - timedelta(seconds=3)
    fixes, _ = build_track(readings, clip_local_start=start, timezone="UTC")
    return any(
        (want := expected.get(f.time.replace(tzinfo=None))) is None or haversine_m(f, want) > KINK_M
        for f in fixes
    )


# what rapidocr read from rendered lines where this was written: one digit for another, each a
# valid line that the grammar cannot refuse
SEEN_MISREADS = [
    (
        "129KM/H S:4.8517 W:9.4087 VIOFO A229 29-12-2024 17:57:38",
        "129kM H S:4.8517 W:0.4087 VI0FO A229 29-12-2024 17:57:38",
    ),
    (
        "070KM/H S:3.6528 W:127.2488 VIOFO A229 23-07-2026 20:03:14",
        "070KM/H S3.6528 W:127.2438 VIOFO A229 23-07-2026 20:03:14",
    ),
    (
        "074KM/H N:86.2260 E:168.0165 VIOFO A229 04-02-2023 09:36:45",
        "074KM/H N:86.2260 E:163.0165 VIOF0 A229 04-02-2023 09:36:45",
    ),
    (
        "050KM/H N:48.8583 E:2.3542 VIOFO A229 01-03-2026 08:00:17",
        "050KM/H N:48.8585 E:2.3542 VIOF0 A229 01-03\u20132026 08:00:17",
    ),
    (
        "050KM/H N:48.8574 E:2.3532 VIOFO A229 01-03-2026 08:00:08",
        "050KM/H N43.8574 E2.3532 VIOFO A229 01-03-2026 08:00:08",
    ),
    (
        "050KM/H N:48.8572 E:2.3529 VIOFO A229 01-03-2026 08:00:06",
        "050KM/H N:48.8572 E2.3529 VIOF0 A229 01-03-2026 08:00:05",
    ),
    (
        "050KM/H N:48.8566 E:2.3522 VIOFO A229 01-03-2026 08:00:00",
        "050KM/H N:48.8566 E2.3522 VIOFO A229 01-03-2026 03:00:00",
    ),
    (
        "050KM/H N:48.8577 E:2.3535 VIOFO A229 01-03-2026 08:00:11",
        "050KM/H N48.8577 E2.3535 VIOFO A229 01-08-2026 08:00:11",
    ),
]


@pytest.mark.parametrize(("shown", "read"), SEEN_MISREADS)
def test_track_removes_the_misreads_ocr_made_on_rendered_lines(shown: str, read: str) -> None:
    truth, wrong = parse_overlay(shown), parse_overlay(read)
    assert truth is not None and wrong is not None and values(wrong) != values(truth)
    assert not survives(truth, wrong)


# --- settings and pixels --------------------------------------------------------------------


def test_settings_reject_unknown_keys_and_are_frozen() -> None:
    s = OverlaySettings()
    assert (s.enabled, s.strip_height_fraction, s.fps) == (True, 0.08, 1.0)
    assert (s.max_clock_skew_seconds, s.min_confidence) == (120, 0.5)
    with pytest.raises(ValidationError):
        OverlaySettings(strip_height=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        OverlaySettings(strip_height_fraction=0)
    with pytest.raises(ValidationError):
        s.fps = 2  # type: ignore[misc]


def test_crop_strip_takes_the_bottom_rows() -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[-86:] = 255
    strip = crop_strip(frame)
    assert strip.shape == (86, 1920, 3) and strip.min() == 255
    assert crop_strip(frame, height_fraction=0.25).shape == (270, 1920, 3)
    with pytest.raises(ValueError):
        crop_strip(frame, height_fraction=0)


def test_text_box_fits_the_line_and_finds_nothing_in_a_plain_scene() -> None:
    for background in overlaygen.BACKGROUNDS:
        look = Look("pil", text_px=20, background=background, x_px=300)
        strip = overlaygen.render_strip(EXAMPLE, 1920, 86, look)
        scene = overlaygen.background(1920, 86, background)
        ys, xs = np.nonzero(np.abs(strip.astype(int) - scene).max(axis=2) > 40)  # the glyphs
        box = text_box(strip)
        assert box is not None
        top, bottom, left, right = box
        assert top <= ys.min() and bottom > ys.max() and left <= xs.min() and right > xs.max()
        height = ys.max() - ys.min()
        assert ys.min() - top <= height and bottom - ys.max() <= height
        assert xs.min() - left <= 2 * height and right - xs.max() <= 2 * height
        assert text_box(scene) is None

    # a bright outlined patch beside the line (a lane marking, a reflection) stays outside
    strip[30:50, 1700:1712] = 0
    strip[32:48, 1702:1710] = 255
    box = text_box(strip)
    assert box is not None and box[3] < 1600


def test_read_overlay_gives_up_on_a_clip_without_overlay() -> None:
    calls = []

    def nothing(crop: NDArray[Any]) -> tuple[str, float] | None:
        calls.append(crop.shape)
        return ("Il", 0.2)

    scene = overlaygen.render_frame("", width=640, height=360)
    frames = ((float(t), scene) for t in range(60))
    readings, problems = read_overlay(frames, nothing, OverlaySettings(give_up_after_frames=5))
    assert readings == [] and len(calls) == 5
    assert problems == [
        "overlay unread in 5 of 5 frames (5 confidence under 0.5)",
        "no overlay in the first 5 frames: gave up",
    ]


# --- real OCR on rendered overlays ----------------------------------------------------------


@pytest.fixture(scope="module")
def read_line() -> Iterator[ReadLine]:
    """rapidocr's recognition alone (PP-OCR models inside the wheel; no download), the angle
    classifier off (it turned an overlay line upside down), one thread (a shared 2-core box)."""
    try:
        from rapidocr import RapidOCR
    except ImportError:
        if os.environ.get("DASHSPOOL_REQUIRE_TESTDATA") == "1":
            pytest.fail("rapidocr required but missing: pip install rapidocr onnxruntime")
        pytest.skip("rapidocr missing (pip install rapidocr onnxruntime)")
    engine = RapidOCR(
        params={
            "Global.use_cls": False,
            "Global.log_level": "warning",
            "EngineConfig.onnxruntime.intra_op_num_threads": 1,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )

    def read(crop: NDArray[Any]) -> tuple[str, float] | None:
        out: Any = engine(crop, use_det=False, use_cls=False, use_rec=True)
        if not out.txts:
            return None
        return str(out.txts[0]), float(out.scores[0])

    yield read


SIZES = {"small": 0.2, "mid": 0.33, "large": 0.45}  # digit height / strip height
JPEG = {"none": None, "q50": 50, "q20": 20}


def random_line(rng: np.random.Generator) -> str:
    when = datetime(2020, 1, 1) + timedelta(seconds=int(rng.integers(0, 10 * 365 * 86_400)))
    lat = round(float(rng.uniform(-89.9, 89.9)), 4)
    lon = round(float(rng.uniform(-179.9, 179.9)), 4)
    unit = "MPH" if rng.random() < 0.2 else "KM/H"
    date_format = "%Y/%m/%d" if rng.random() < 0.25 else "%d-%m-%Y"
    speed = int(rng.integers(0, 180))
    return overlaygen.overlay_text(when, lat, lon, speed, unit=unit, date_format=date_format)


def test_ocr_reads_rendered_strips_exactly_and_never_wrong(read_line: ReadLine) -> None:
    """Every font x size x JPEG quality, each on two strips (scene, noise and resolution
    cycling): the exact-parse rate, per condition, and no strip ever parsed to a wrong value."""
    rng = np.random.default_rng(11)
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    wrong: list[tuple[OverlayReading, OverlayReading]] = []
    scenes = itertools.cycle(itertools.product(overlaygen.BACKGROUNDS, (0, 8), (1080, 720)))
    for i, (font, size, jpeg, _) in enumerate(
        itertools.product(overlaygen.FONTS, SIZES, JPEG, range(2))
    ):
        background, noise, height = next(scenes)
        strip_h = round(height * 0.08)
        look = Look(
            font,
            max(8, round(strip_h * SIZES[size])),
            background,
            noise=noise,
            blur=0.6 if JPEG[jpeg] else 0.0,
            jpeg_quality=JPEG[jpeg],
        )
        text = random_line(rng)
        strip = overlaygen.render_strip(text, height * 16 // 9, strip_h, look, seed=i)
        result = read_strip(strip, read_line)
        got = parse_overlay(result[0]) if result and result[1] >= 0.5 else None
        truth = parse_overlay(text)
        assert truth is not None
        exact = values(got) == values(truth)
        if got is not None and not exact:
            wrong.append((truth, got))
        for condition in (("font", font), ("size", size), ("jpeg", jpeg), ("scene", background)):
            counts[condition][0] += 1
            counts[condition][1] += exact
    rates = {c: ok / n for c, (n, ok) in counts.items()}
    print("\nexact parses per condition:")
    for (kind, name), (n, ok) in sorted(counts.items()):
        print(f"  {kind:6} {name:16} {ok:3}/{n:3} {ok / n:6.0%}")

    print(f"  {len(wrong)} parsed to a wrong value")
    assert not [w for w in wrong if survives(*w)]  # a wrong value is worse than none
    total = sum(ok for (kind, _), (_, ok) in counts.items() if kind == "font") / 72
    assert total >= 0.85, rates
    assert min(rates[("font", f)] for f in overlaygen.FONTS) >= 0.7, rates
    assert rates[("size", "mid")] >= 0.9 and rates[("size", "large")] >= 0.9, rates


def test_ocr_track_from_an_h264_clip(read_line: ReadLine, tmp_path: Path) -> None:
    """A 12 s H.264 clip with a burned-in overlay, sampled at 1 fps by stages.frames, through
    read -> parse -> track: every fix is the truth, in UTC."""
    start = datetime(2026, 1, 28, 18, 13, 30)  # Bogota: UTC-5
    lines, truth = [], {}
    for i in range(12):
        when = start + timedelta(seconds=i)
        lat, lon = round(4.6097 + i * 0.0001, 4), round(-74.0817 - i * 0.0001, 4)
        lines.append(overlaygen.overlay_text(when, lat, lon, 40 + i))
        truth[when + timedelta(hours=5)] = (lat, lon, 40.0 + i)
    look = Look("pil", 18, noise=3)
    clip = overlaygen.write_clip(tmp_path / "2026_0128_181330_000120F.MP4", lines, look=look)

    settings = OverlaySettings()
    sampler = FrameSampler(clip).sample(every_seconds(12.0, settings.fps))
    frames = ((s.time, s.frame.to_ndarray(format="bgr24")) for s in sampler)
    track = overlay_track(
        frames, read_line, settings, clip_local_start=start, timezone="America/Bogota"
    )
    assert track.source == "overlay"
    assert len(track.fixes) >= 11, track.problems
    for fix in track.fixes:
        assert (fix.lat, fix.lon, fix.speed_kmh) == truth[fix.time.replace(tzinfo=None)]
    assert all(f.bearing_deg is not None for f in track.fixes)


def test_ocr_misreads_under_stress_never_reach_the_track(read_line: ReadLine) -> None:
    """12 px digits, JPEG quality 15, a bright road: OCR reads many lines to wrong values the
    grammar cannot see, often the same slip frame after frame (N:48.85 read N:43.85, 08:00 read
    03:00; 9 of the 16 lines it parsed, where this was written). What comes out of build_track
    is still the truth, within KINK_M (a last-digit slip of 11 m can stay)."""
    look, width, height = Look("pil", 12, "bright", noise=4, jpeg_quality=15), 1280, 720
    start = datetime(2026, 3, 1, 8, 0, 0)
    truth, readings, wrong = {}, [], 0
    for i in range(24):
        when = start + timedelta(seconds=i)
        lat, lon = round(48.8566 + i * 0.0001, 4), round(2.3522 + i * 0.00012, 4)
        truth[when - timedelta(hours=1)] = (lat, lon)  # Paris in winter: UTC+1
        text = overlaygen.overlay_text(when, lat, lon, 50)
        frame = overlaygen.render_frame(text, width=width, height=height, look=look, seed=i)
        result = read_strip(crop_strip(frame), read_line)
        got = parse_overlay(result[0]) if result and result[1] >= 0.5 else None
        if got is not None:
            wrong += values(got) != (when, lat, lon, 50.0)
            readings.append((i + 0.3, got))
    print(f"\n{len(readings)} of 24 parsed, {wrong} to a wrong value")

    fixes, problems = build_track(readings, clip_local_start=start, timezone="Europe/Paris")
    assert len(fixes) >= 4, problems
    for fix in fixes:
        lat, lon = truth[fix.time.replace(tzinfo=None)]
        assert haversine_m(fix, Fix(fix.time, lat, lon)) <= KINK_M, (fix, problems)
