"""The heavy stage end to end: a video made from real plate photos goes through ingest and
heavy (the real int8 YOLOv8n through LiteRT, ByteTrack, the OpenCV plate cascade, rapidocr)
to archive, and the ledger's plates are compared with the photos' truth."""

from __future__ import annotations

import json
from pathlib import Path

import av
import av.video
import cv2
import numpy as np
import pytest
from conftest import Pipeline, chain_settings

from stages.heavy import _window
from watchers import app
from watchers.config import parse

MODEL = "models/yolov8n_full_integer_quant.tflite"
PHOTOS = 16  # seconds of video, one photo each


def photo_video(testdata: Path, path: Path, count: int, fps: int = 4) -> list[str]:
    """A 1280x720 H.264 clip showing ``count`` EU plate photos for one second each, each in
    another quarter of the frame than the one before (a cut between two cars must not look like
    one car moving); returns their plate texts in order."""
    folder = testdata / "plates" / "eu"
    notes = sorted(folder.glob("*.txt"))[:count]
    assert len(notes) == count
    truth = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        assert isinstance(stream, av.video.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"crf": "18", "g": str(fps), "bf": "0"}
        for i, note in enumerate(notes):
            line = note.read_text().split()
            truth.append(line[-1].upper())
            img = cv2.imread(str(folder / line[0]))
            h, w = img.shape[:2]
            scale = min(640 / w, 360 / h)
            small = cv2.resize(
                img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
            canvas = np.zeros((720, 1280, 3), np.uint8)
            top, left = ((0, 0), (360, 640), (0, 640), (360, 0))[i % 4]
            canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
            frame = av.VideoFrame.from_ndarray(canvas[:, :, ::-1].copy(), format="rgb24")
            for _ in range(fps):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return truth


@pytest.fixture
def yolo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    return tmp_path


@pytest.mark.testdata
def test_plates_from_a_video_of_real_photos_reach_the_ledger(
    testdata: Path, tmp_path: Path, yolo_home: Path
) -> None:
    clip = tmp_path / "made.mp4"
    truth = photo_video(testdata, clip, PHOTOS)
    data = chain_settings(("ingest", "heavy", "archive"))
    data["stages"]["ingest"].update(type="ingest", timezone="UTC")
    data["stages"]["heavy"] = {
        "type": "heavy",
        "next": ["archive"],
        "window_fps": 4,  # ByteTrack confirms a new object on its second frame
        "detector": {"type": "litert", "model": str(testdata / MODEL)},
        "tracker": {"lost_frames": 1},
    }
    policies = parse(data, source=None, base_dir=tmp_path)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    (tmp_path / "spool" / "inbox" / "2026_0513_160000_000300F.MP4").write_bytes(clip.read_bytes())
    p = Pipeline(spool, policies)
    p.start()
    try:
        p.drain()
        (folder,) = (tmp_path / "spool" / "archive" / "done").iterdir()
        job = json.loads((folder / "job.json").read_text())
        facts = job["facts"]["heavy"]
        assert facts["kind"] == "labels" and facts["frames_looked_at"] == 4 * PHOTOS
        tracks = facts["tracks"]
        cars = [t for t in tracks if t["label"] in ("car", "truck", "bus")]
        assert PHOTOS // 2 <= len(cars) <= 2 * PHOTOS, [(t["label"], t["first"]) for t in tracks]
        for t in tracks:
            assert t["thumbnail"] and (folder / t["thumbnail"]).is_file()
        read = {pl["text"] for pl in facts["plates"]}
        exact = [text for text in truth if text in read]
        print(f"\nplates read exactly: {len(exact)}/{len(truth)}; read: {sorted(read)}")
        assert len(exact) >= PHOTOS * 0.4, (sorted(read), truth)
        for pl in facts["plates"]:
            assert (folder / pl["crop"]).is_file()
            second = int(pl["time"])  # one photo per second: the plate belongs to that photo
            assert 0 <= second < PHOTOS

        led = p.coordinator.ledger
        assert {row.text for row in led.plates(None, limit=100)} == read
        assert len(led.detections(label="car", limit=1000)) == len(
            [t for t in tracks if t["label"] == "car"]
        )
    finally:
        p.close()


def test_window_adds_frames_around_the_kept_ones_within_the_clip_and_cap() -> None:
    assert _window([5.0], 10.0, 1.0, 2.0, 100) == [4.0, 4.5, 5.0, 5.5, 6.0]
    assert _window([0.0, 9.8], 10.0, 0.5, 4.0, 100) == [0.0, 0.25, 0.5, 9.3, 9.55, 9.8]
    capped = _window([float(t) for t in range(10)], 10.0, 1.0, 10.0, 15)
    assert len(capped) == 15 and all(float(t) in capped for t in range(10))
    assert _window([], 3.0, 1.0, 2.0, 100) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_the_commented_heavy_example_in_policies_toml_is_valid() -> None:
    """The example users uncomment must be accepted as written (settings only: the model file
    named there does not exist on this machine)."""
    import tomllib

    from stages.heavy import HeavySettings

    text = (Path(__file__).resolve().parents[1] / "policies.toml").read_text()
    start = text.index("# heavy (GPU machine)")
    lines = text[start:].split("\n[stages.heavy]")[0].splitlines()
    block = [ln[4:] for ln in lines if ln.startswith("#   ")]
    data = tomllib.loads("\n".join(block))
    table = data["stages"]["heavy"]
    assert table.pop("type") == "heavy" and table.pop("next") == ["archive"]
    settings = HeavySettings.model_validate(table)
    assert settings.detector.type == "ultralytics" and settings.ocr.type == "rapidocr"


def test_a_track_stops_being_read_once_readings_agree() -> None:
    from stages.heavy import _settled
    from stages.plates import PlateRead

    def r(text: str) -> PlateRead:
        return PlateRead(text=text, raw_text=text, confidence=0.9)

    assert not _settled([r("AB123"), r("AB128")], 2)
    assert _settled([r("AB123"), r("AB128"), r("AB123")], 2)
    assert not _settled([r("PEUGEOT"), r("PEUGEOT")], 2), "a badge never settles a track"
    assert _settled([r("AB123")], 1)
