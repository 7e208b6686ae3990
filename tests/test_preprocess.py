"""The preprocess stage end to end: clips dropped in a real spool go through real ingest, real
PyAV decoding, the real motion filter and the real YOLOv8 int8 model, to heavy or to archive."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import gpxpy.gpx
import pytest
from conftest import Pipeline, chain_settings, dropped, write_settings
from mediagen import scramble_samples
from scenegen import make_scene
from test_cli import dashspool, flat

from stages import clip as clipfacts
from stages.gps.track import haversine_m
from stages.preprocess import _thin
from watchers import app
from watchers.config import parse
from watchers.errors import ConfigError
from watchers.spool import Spool

MODEL = "models/yolov8n_full_integer_quant.tflite"
T0 = datetime(2026, 5, 13, 16, 0, 0, tzinfo=timezone.utc)


def settings(**preprocess: Any) -> dict[str, Any]:
    data = chain_settings(("ingest", "preprocess", "heavy", "archive"))
    stages = data["stages"]
    stages["ingest"].update(type="ingest", timezone="UTC")
    stages["preprocess"] = {"type": "preprocess", "next": ["heavy", "archive"], **preprocess}
    stages["heavy"]["next"] = []
    return data


def litert(testdata: Path) -> dict[str, Any]:
    return {"type": "litert", "model": str(testdata / MODEL), "threads": 2}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """``run(clips, **preprocess settings)``: drop the clips, drain the pipeline, return it."""
    made: list[Pipeline] = []

    def go(clips: dict[str, Path | bytes], **preprocess: Any) -> Pipeline:
        p = dropped(tmp_path, settings(**preprocess), clips)
        made.append(p)
        p.drain()
        return p

    yield go
    for p in made:
        p.close()


def finished(spool: Spool, stage: str) -> list[tuple[Path, dict[str, Any]]]:
    root = spool.backend.local_root
    assert root is not None
    done = root / stage / "done"
    return [(d, json.loads((d / "job.json").read_text())) for d in sorted(done.iterdir())]


def only(spool: Spool, stage: str) -> tuple[Path, dict[str, Any]]:
    (job,) = finished(spool, stage)
    other = "archive" if stage == "heavy" else "heavy"
    assert finished(spool, other) == [], f"nothing may reach {other}"
    return job


def frames(folder: Path) -> list[dict[str, Any]]:
    """The per-frame records preprocess wrote beside the JPEGs."""
    records: list[dict[str, Any]] = json.loads((folder / "frames.json").read_text())["frames"]
    return records


# --------------------------------------------------------------------------- routing
@pytest.mark.parametrize("detector", ["none", "litert"])
def test_a_static_scene_skips_heavy_with_the_reason(
    run: Any, tmp_path: Path, request: pytest.FixtureRequest, detector: str
) -> None:
    clip = make_scene(tmp_path / "static.mp4", seconds=60, fps=10, noise=3)
    det = {"type": "none"}
    if detector == "litert":
        det = litert(request.getfixturevalue("testdata"))
    p = run({"2026_0513_170000_000100F.MP4": clip}, detector=det)

    folder, job = only(p.spool, "archive")
    facts = job["facts"]["preprocess"]
    assert facts["route"] == "archive"
    assert facts["frames_sampled"] == 60 and facts["frames_kept"] == 0
    assert facts["heavy_skipped"].startswith("nothing to look at: no motion above 0.02")
    if detector == "litert":
        assert "no person, bicycle, car" in facts["heavy_skipped"]
        assert facts["detector"].startswith("litert")
    assert not list(folder.glob("*.jpg"))
    assert facts["decode"]["decoded"] == 60, "1 fps on 1 s GOPs: keyframes only"

    (video,) = p.coordinator.ledger.videos()
    assert (video.state, video.stage) == ("done", "archive")
    assert (video.frames_kept, video.frames_sampled) == (0, 60)
    assert video.heavy_skipped == facts["heavy_skipped"]

    write_settings(tmp_path / "policies.toml", settings(detector=det))
    shown = dashspool("ledger", "video", video.video_id[:8], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "preprocess: 0 of 60 frames kept" in shown.stdout
    assert flat(f"heavy skipped: {facts['heavy_skipped']}") in flat(shown.stdout)


def test_only_the_frames_of_a_short_event_are_kept(run: Any, tmp_path: Path) -> None:
    clip = make_scene(tmp_path / "event.mp4", seconds=60, fps=10, event=(30.0, 35.0), noise=3)
    p = run({"2026_0513_170000_000101F.MP4": clip})

    folder, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    records = frames(folder)
    times = [f["time"] for f in records]
    assert len(times) >= 4
    assert all(30.0 <= t <= 36.0 for t in times), times
    assert all(f["motion"] >= 0.02 for f in records)
    assert facts["frames_moving"] == len(times) == facts["frames_kept"]
    assert facts["frames_file"] == "frames.json"
    jpegs = sorted(folder.glob("frame-*.jpg"))
    assert [j.name for j in jpegs] == sorted(f["file"] for f in records)
    picture = cv2.imread(str(jpegs[1]))
    assert picture.shape == (180, 320, 3), "full-size frames"
    assert "motion in" in facts["reason"]


def test_a_locked_clip_goes_to_heavy_even_when_nothing_happens(run: Any, tmp_path: Path) -> None:
    clip = make_scene(tmp_path / "static.mp4", seconds=20, fps=10, noise=3)
    p = run({"DCIM/Movie/RO/2026_0513_170000_000102F.MP4": clip})
    _, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    assert facts["reason"].startswith("locked or event clip")
    assert facts["frames_kept"] == 1, "the rest are near-duplicates of the first"
    assert facts["frames_duplicate"] == 19


def test_frames_per_clip_are_capped_evenly(run: Any, tmp_path: Path) -> None:
    clip = make_scene(tmp_path / "drive.mp4", seconds=30, fps=10, drive=True)
    p = run({"2026_0513_170000_000103F.MP4": clip}, max_frames=5)
    folder, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    times = [f["time"] for f in frames(folder)]
    assert (facts["frames_kept"], facts["frames_capped"]) == (5, 24)
    assert times[0] == 1.0 and times[-1] == 29.0, "spread over the whole clip"
    assert len(list(folder.glob("frame-*.jpg"))) == 5


@pytest.mark.parametrize("drive", [False, True])
def test_track_files_travel_on_either_way(run: Any, tmp_path: Path, drive: bool) -> None:
    clip = make_scene(tmp_path / "clip.mp4", seconds=10, fps=10, drive=drive)
    gpx = gpx_track([(T0 + timedelta(seconds=i), 10.0) for i in range(11)])
    p = run({"2026_0513_160000_000104F.MP4": clip, "2026_0513_160000_000104F.MP4.gpx": gpx})
    folder, _ = only(p.spool, "heavy" if drive else "archive")
    assert (folder / "track.gpx").is_file() and (folder / "track.geojson").is_file()
    assert (folder / "frames.json").is_file() == drive


# --------------------------------------------------------------------------- real footage
@pytest.mark.testdata
@pytest.mark.parametrize("name", ["udacity_test_video.mp4", "udacity_solidWhiteRight.mp4"])
def test_real_highway_footage_goes_to_heavy_with_cars(run: Any, testdata: Path, name: str) -> None:
    p = run({name: testdata / "video" / name}, fps=2, detector=litert(testdata))
    folder, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    with_cars = [f for f in frames(folder) if any(d["label"] == "car" for d in f["detections"])]
    assert with_cars, "the litert detector sees the cars"
    assert facts["objects"].get("car", 0) == len(with_cars)
    frame = with_cars[0]
    width, height = frame["width"], frame["height"]
    for d in frame["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, "boxes in frame pixels"
        assert d["score"] >= 0.35
    assert cv2.imread(str(folder / frame["file"])).shape[:2] == (height, width)
    (video,) = p.coordinator.ledger.videos()
    assert video.frames_kept == facts["frames_kept"] and "car" in json.loads(video.objects)


@pytest.mark.testdata
def test_smaller_jpegs_carry_boxes_in_their_own_pixels(run: Any, testdata: Path) -> None:
    name = "udacity_test_video.mp4"  # 1280x720
    p = run(
        {name: testdata / "video" / name}, fps=2, jpeg_max_side_px=640, detector=litert(testdata)
    )
    folder, _ = only(p.spool, "heavy")
    records = frames(folder)
    boxes = [d["box"] for f in records for d in f["detections"] if d["label"] == "car"]
    assert boxes
    for f in records:
        assert (f["width"], f["height"]) == (640, 360)
        assert cv2.imread(str(folder / f["file"])).shape[:2] == (360, 640)
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
    assert any(x2 > 400 for _, _, x2, _ in boxes), "the car on the right stays on the right"


def test_a_clip_that_no_longer_decodes_fails_instead_of_skipping_heavy(
    tmp_path: Path,
) -> None:
    """The raw file went bad after ingest (a failing disk): preprocess must not report it as
    'nothing to look at'."""
    clip = make_scene(tmp_path / "ok.mp4", seconds=10, fps=10, drive=True)
    policies = parse(settings(), source=None, base_dir=tmp_path)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    name = "2026_0513_160000_000107F.MP4"
    (tmp_path / "spool" / "inbox" / name).write_bytes(clip.read_bytes())
    p = Pipeline(spool, policies)
    p.start()
    try:
        assert p.workers[0].loop_once(), "ingest filed the clip"
        (filed,) = (tmp_path / "raw").rglob(name)
        broken = scramble_samples(clip, dest=tmp_path / "broken.mp4")
        filed.unlink()  # the raw file is a hard link: replace it, do not write through it
        filed.write_bytes(broken.read_bytes())
        p.drain()
        assert finished(spool, "heavy") == [] and finished(spool, "archive") == []
        (error,) = (tmp_path / "spool" / "preprocess" / "failed").glob("*.error.json")
        assert json.loads(error.read_text())["message"].startswith("unreadable:")
    finally:
        p.close()


# --------------------------------------------------------------------------- distance
def gpx_track(points: list[tuple[datetime, float]]) -> bytes:
    """Heading north from 51.5 N at the given speed (m/s) for each one-second step."""
    gpx = gpxpy.gpx.GPX()
    seg = gpxpy.gpx.GPXTrackSegment()
    lat = 51.5
    for when, speed in points:
        seg.points.append(gpxpy.gpx.GPXTrackPoint(lat, -0.1, time=when, speed=speed))
        lat += speed / 111_195.0
    track = gpxpy.gpx.GPXTrack()
    track.segments.append(seg)
    gpx.tracks.append(track)
    return gpx.to_xml(version="1.0").encode()


@pytest.mark.parametrize("snap", [False, True])
def test_distance_sampling_takes_no_frames_while_stopped(
    run: Any, tmp_path: Path, snap: bool
) -> None:
    # 40 s: driving 0-15 s at 10 m/s, standing 15-30 s, driving 30-40 s
    speeds = [10.0 if i < 15 or i >= 30 else 0.0 for i in range(41)]
    gpx = gpx_track([(T0 + timedelta(seconds=i), v) for i, v in enumerate(speeds)])
    clip = make_scene(tmp_path / "trip.mp4", seconds=40, fps=10, drive=[(0, 15), (30, 40)])
    name = "2026_0513_160000_000105F.MP4"  # local time = UTC here: the GPX starts with the clip
    p = run(
        {name: clip, f"{name}.gpx": gpx},
        sample_by="distance",
        every_m=25,
        snap_to_keyframes=snap,
    )

    folder, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    assert facts["sampling"]["by"] == "distance"
    records = frames(folder)
    times = [f["time"] for f in records]
    assert times, "frames while driving"
    assert not [t for t in times if 15.5 < t < 30.0], f"no frame while standing: {times}"
    assert facts["frames_sampled"] == pytest.approx(250 / 25 + 1, abs=1)
    positions = [f["position"] for f in records]
    assert all(pos is not None for pos in positions)
    steps = [haversine_m(_LL(**a), _LL(**b)) for a, b in itertools.pairwise(positions)]
    steps = [s for s in steps if s < 60]  # not across the stop
    if snap:  # the nearest keyframe (1 s apart at 10 m/s): within half a second of each 25 m
        assert all(15 - 0.5 <= s <= 35 + 0.5 for s in steps), steps
        assert sum(steps) / len(steps) == pytest.approx(25, abs=3)
    else:  # the first frame at or after each 25 m (frames are 1 m apart at 10 m/s)
        assert all(24 - 0.1 <= s <= 26 + 0.1 for s in steps), steps


def test_a_locked_clip_standing_still_is_sampled_by_time(run: Any, tmp_path: Path) -> None:
    gpx = gpx_track([(T0 + timedelta(seconds=i), 0.0) for i in range(21)])
    clip = make_scene(tmp_path / "ro.mp4", seconds=20, fps=10, event=(8.0, 12.0))
    name = "2026_0513_160000_000106F.MP4"
    p = run({f"RO/{name}": clip, f"RO/{name}.gpx": gpx}, sample_by="distance", every_m=25)
    folder, job = only(p.spool, "heavy")
    facts = job["facts"]["preprocess"]
    assert facts["sampling"]["by"] == "time" and "locked" in facts["sampling"]["note"]
    assert facts["frames_sampled"] == 20
    assert any(8.0 <= f["time"] <= 13.0 for f in frames(folder))


class _LL:
    def __init__(self, lat: float, lon: float, **_: Any) -> None:
        self.lat, self.lon = lat, lon


# --------------------------------------------------------------------------- config and input
def build(tmp_path: Path, data: dict[str, Any]) -> None:
    policies = parse(data, source=None, base_dir=tmp_path)
    app.build_workers(app.open_spool(policies), policies, ["preprocess"], "d1", threading.Event())


def test_a_missing_model_stops_the_watcher_at_start(tmp_path: Path) -> None:
    data = settings(detector={"type": "litert", "model": "models/nope.tflite"})
    missing = tmp_path / "models" / "nope.tflite"
    with pytest.raises(ConfigError, match=f"no model file at {missing}"):
        build(tmp_path, data)

    write_settings(tmp_path / "policies.toml", data)
    result = dashspool(
        "watch", "preprocess", "--device-id", "jetson-1", "--until-idle", cwd=tmp_path
    )
    assert result.returncode == 3, result.stderr  # EXIT_CONFIG
    assert flat(str(missing)) in flat(result.stderr)
    assert "Traceback" not in result.stderr


def test_routes_must_be_next_stages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="skip_stage: 'trash' is not one of"):
        build(tmp_path, settings(skip_stage="trash"))


def test_ingest_facts_from_another_machine_are_checked_part_by_part() -> None:
    problems: list[str] = []
    track = [
        {"time": "2026-05-13T16:00:00Z", "lat": 91, "lon": 0},  # impossible
        "junk",
        {"time": "2026-05-13T15:00:00Z", "lat": 51.5, "lon": -0.1},  # an hour before the clip
        *(
            {"time": f"2026-05-13T16:00:{i:02d}Z", "lat": 51.5 + i * 1e-4, "lon": -0.1}
            for i in range(10)
        ),
        {"time": "2026-05-13T16:00:10Z", "lat": -51.5, "lon": 100.0},  # a jump round the globe
    ]
    sidecar = {"filed-by-nas": {"kind": "video", "camera": "front", "gps": {"track": track}}}
    facts = clipfacts.IngestFacts.find(
        sidecar, problems
    )  # found by kind, whatever the stage's name
    assert facts.camera == {} and "camera is not an object" in problems[0]
    fixes = clipfacts.track(facts, T0, 60.0, problems)
    assert [f.lat for f in fixes] == pytest.approx([51.5 + i * 1e-4 for i in range(10)])
    assert any("lat" in p for p in problems) and any("not str" in p for p in problems)
    assert clipfacts.track(clipfacts.IngestFacts(gps={"track": "x"}), T0, 60.0, problems) == []
    assert clipfacts.IngestFacts.find({}, problems) == clipfacts.IngestFacts()
    assert problems[-1].startswith("no ingest facts")


def test_thinning_keeps_the_ends() -> None:
    items = list(range(10))
    dropped = _thin(items, 4)  # type: ignore[arg-type]
    assert [i for i in items if i not in dropped] == [0, 3, 6, 9]
    assert _thin(items, 10) == []  # type: ignore[arg-type]
