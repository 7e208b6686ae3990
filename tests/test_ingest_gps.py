"""Ingest with GPS: embedded tracks into sidecar, files and ledger; moments; trips; the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import gpxpy
import pytest
from conftest import Pipeline
from gpsgen import base_mp4, novatek_mp4
from test_cli import dashspool
from test_ingest import out_jobs, policies, put  # noqa: F401 - policies: the ingest fixture

from stages.gps.track import length_m
from watchers import app
from watchers.spool import Spool

UTC = timezone.utc


def camera_clip(utc: datetime, *, count: int = 60, fps: int = 10, seed: int = 1, **kw: Any) -> Any:
    """A Novatek clip whose fixes start at ``utc``, one per second."""
    return novatek_mp4(base_mp4(fps=fps), count=count, start=utc, seed=seed, **kw)


def test_embedded_track_reaches_sidecar_outputs_and_ledger(
    pipeline: Pipeline, spool: Spool, inbox: Path
) -> None:
    made = camera_clip(datetime(2026, 5, 13, 16, 21, 52, tzinfo=UTC), count=12, south=True)
    put(inbox, "2026-05-13/2026_0513_172152_000120F.MP4", made.data)
    pipeline.drain()

    (job,) = out_jobs(spool)
    facts = job["facts"]["ingest"]
    assert (facts["gps"]["source"], facts["gps"]["points"]) == ("novatek", 12)
    for got, want in zip(facts["gps"]["track"], made.fixes, strict=True):
        assert abs(got["lat"] - want.lat) < 1e-6 and abs(got["lon"] - want.lon) < 1e-6
        assert got["time"] == want.time.isoformat().replace("+00:00", "Z")
    assert (facts["time"]["source"], facts["time"]["utc_start"]) == ("gps", "2026-05-13T16:21:52Z")
    assert facts["time"]["local"] == "2026-05-13T17:21:52", "the name's local time, kept apart"

    root = spool.backend.local_root
    assert root is not None
    folder = root / "out" / "done" / job["job"]
    gpx = gpxpy.parse((folder / "track.gpx").read_text())
    points = [p for t in gpx.tracks for s in t.segments for p in s.points]
    assert [round(p.latitude, 6) for p in points] == [round(f.lat, 6) for f in made.fixes]
    geo = json.loads((folder / "track.geojson").read_text())
    assert geo["geometry"]["type"] == "LineString" and len(geo["geometry"]["coordinates"]) == 12
    assert geo["geometry"]["coordinates"][0][:2] == pytest.approx(
        [made.fixes[0].lon, made.fixes[0].lat], abs=1e-6
    )

    v = pipeline.coordinator.ledger.find_video(job["video_id"])[0]
    assert (v.gps_source, v.gps_points, v.start_utc) == (
        "novatek",
        12,
        "2026-05-13T16:21:52.000000Z",
    )
    assert v.end_utc is not None and v.end_utc > v.start_utc


def test_channels_share_a_moment_and_gaps_split_trips(
    pipeline: Pipeline, spool: Spool, inbox: Path, tmp_path: Path
) -> None:
    t0 = datetime(2026, 5, 13, 16, 21, 52, tzinfo=UTC)
    front1 = camera_clip(t0)
    rear1 = camera_clip(t0, fps=12)  # same GPS module, other video: other content
    front2 = camera_clip(t0 + timedelta(seconds=60), origin=(48.8644, 2.3034), seed=2)
    later = camera_clip(t0 + timedelta(hours=2), origin=(48.9, 2.4), seed=3)
    put(inbox, "2026-05-13/2026_0513_172152_000120F.MP4", front1.data)
    put(inbox, "2026-05-13/2026_0513_172153_000121R.MP4", rear1.data)
    put(inbox, "2026-05-13/2026_0513_172252_000122F.MP4", front2.data)
    put(inbox, "2026-05-13/2026_0513_192152_000150F.MP4", later.data)
    pipeline.drain()

    ledger = pipeline.coordinator.ledger
    rows = {v.source_name[:22]: v for v in ledger.videos(limit=10)}
    assert len(rows) == 4 and all(v.state == "done" for v in rows.values())
    f1, r1 = rows["2026_0513_172152_00012"], rows["2026_0513_172153_00012"]
    f2, f3 = rows["2026_0513_172252_00012"], rows["2026_0513_192152_00015"]
    assert f1.moment_id == r1.moment_id is not None, "front and rear of one moment"
    assert f2.moment_id not in (None, f1.moment_id)

    trips = ledger.trips()
    assert len(trips) == 2
    first = next(t for t in trips if t.trip_id == f1.trip_id)
    assert f1.trip_id == r1.trip_id == f2.trip_id != f3.trip_id
    assert (first.clips, first.moments) == (3, 2)
    track = [*front1.fixes, *front2.fixes]  # the rear clip repeats the front's fixes
    expected = length_m(track)
    assert first.distance_m == pytest.approx(expected, rel=1e-3)
    assert first.start_utc.startswith("2026-05-13T16:21:52")

    cfg = tmp_path / "policies.toml"
    cfg.write_text(f'[spool]\npath = "{tmp_path / "spool"}"\n[ledger]\npath = "{ledger.path}"\n')
    listed = dashspool("--config", str(cfg), "ledger", "trips", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert {t["trip_id"] for t in json.loads(listed.stdout)} == {t.trip_id for t in trips}
    out = tmp_path / "trip.gpx"
    shown = dashspool(
        "--config",
        str(cfg),
        "ledger",
        "trip",
        first.trip_id[:-1],
        "--gpx",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert len(data["clips"]) == 3 and data["points"] == len(track)
    gpx = gpxpy.parse(out.read_text())
    points = [p for t in gpx.tracks for s in t.segments for p in s.points]
    assert len(points) == len(track)
    assert points[0].time == track[0].time and points[-1].time == track[-1].time
    missing = dashspool("--config", str(cfg), "ledger", "trip", "nope", cwd=tmp_path)
    assert missing.returncode == 4 and "no trips match" in missing.stderr


def test_parking_clips_do_not_join_trips(pipeline: Pipeline, inbox: Path) -> None:
    t0 = datetime(2026, 5, 13, 16, 21, 52, tzinfo=UTC)
    put(inbox, "DCIM/Movie/Parking/2026_0513_172152_000120PF.MP4", camera_clip(t0).data)
    pipeline.drain()
    (v,) = pipeline.coordinator.ledger.videos()
    assert (v.mode, v.trip_id) == ("parking", None)
    assert pipeline.coordinator.ledger.trips() == []


@pytest.mark.testdata
def test_gopro_clip_gets_its_gpmf_track(
    pipeline: Pipeline, spool: Spool, inbox: Path, testdata: Path
) -> None:
    put(inbox, "GOPR0001.MP4", testdata / "video" / "gopro_max-heromode.mp4")
    pipeline.drain()
    (job,) = out_jobs(spool)
    facts = job["facts"]["ingest"]
    assert facts["gps"]["source"] == "gpmf"
    assert facts["gps"]["points"] >= 180, "191 fixes in the sample; a few may be glitches"
    assert facts["time"]["source"] == "gps"
    assert facts["time"]["utc_start"].startswith("2019-11-18T23:45:1")
    first = facts["gps"]["track"][0]
    assert first["lat"] == pytest.approx(33.12677, abs=1e-4)
    assert first["lon"] == pytest.approx(-117.32734, abs=1e-4)


def test_ledger_re_keys_the_drop_to_the_content_id(
    pipeline: Pipeline, spool: Spool, inbox: Path
) -> None:
    """Events before ingest finished carry the drop's provisional id; afterwards the video,
    its attempts and events all live under the content id."""
    made = camera_clip(datetime(2026, 5, 13, 16, 21, 52, tzinfo=UTC), count=3)
    put(inbox, "2026_0513_172152_000120F.MP4", made.data)
    pipeline.drain()
    ledger = pipeline.coordinator.ledger
    (v,) = ledger.videos(kind=None)
    attempts, events = ledger.history(v.video_id)
    assert {a.stage for a in attempts} == {"ingest", "out"}
    assert {e.kind for e in events} >= {"video.new", "stage.started", "stage.completed"}
    assert all(e.video_id == v.video_id for e in events)
    assert ledger.find_video(v.job.rsplit("-", 1)[1]) == [v], "the job's short hash still finds it"
    assert app.open_ledger(pipeline.policies, read_only=True).find_video(v.video_id[:8])
