"""The web UI's shared queries at the sizes a long trip reaches: one point per instant however
many channels recorded it, thinned evenly for drawing, first and last kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from test_labels import T0, A, B, clip

from watchers import queries
from watchers.catalog import TrackPoint, ts
from watchers.ledger import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    clip(led, A, T0)
    clip(led, B, T0, channel="R")  # the rear camera of the same moment: the same fixes again
    yield led
    led.close()


def test_a_trip_track_has_one_point_per_instant_thinned_evenly(ledger: Ledger) -> None:
    with ledger.transaction() as s:
        for video in (A, B):
            for i in range(1001):
                t = ts(T0 + timedelta(seconds=i))
                s.add(TrackPoint(video_id=video, seq=i, t=t, lat=51 + i / 1e4, lon=-0.1))
    with ledger.reading() as s:
        (trip,) = queries.trips(s, 10)
        assert trip.moments == 1 and trip.clips == 2
        points, total = queries.trip_track(s, trip.trip_id, max_points=11)
        everything, same = queries.trip_track(s, trip.trip_id, max_points=5000)
    assert total == same == 1001 and len(everything) == 1001, "one clip's points per moment"
    assert [p.t for p in everything] == [ts(T0 + timedelta(seconds=i)) for i in range(1001)]
    assert len(points) == 11 and points[0].lat == pytest.approx(51.0)
    assert [p.t for p in points] == [ts(T0 + timedelta(seconds=91 * k)) for k in range(11)]
    with ledger.reading() as s:
        detail = queries.trip_detail(s, trip.trip_id[:12])
    assert detail.points_total == 1001 and len(detail.points) == 1001
