"""The heavy stage's detector backends (onnx, ultralytics) and tracking (ByteTrack).

No real ONNX or .pt weights exist offline here: the backends' plumbing runs on a random-weight
YOLOv8n built from ``yolov8n.yaml`` (and its ONNX export); accuracy is checked with the real
int8 reference model through the ``litert`` backend, which the heavy stage can use too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torchvision_nms

from stages.detectors import (
    Detection,
    Detector,
    LiteRTSettings,
    OnnxSettings,
    UltralyticsSettings,
    build_detector,
)
from stages.frames import FrameSampler, every_seconds
from stages.tracking import Tracker, TrackerSettings, _Boxes
from watchers.errors import ConfigError

WHERE = "policies.toml: stages.heavy.detector"


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Ultralytics offline, with writable config and caches, and the test-only NMS fallback."""
    home = tmp_path_factory.mktemp("yolo")
    saved = {k: os.environ.get(k) for k in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "MPLCONFIGDIR")}
    os.environ.update(
        YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(home / "cfg"), MPLCONFIGDIR=str(home / "mpl")
    )
    torchvision_nms.install()
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def onnx_model(yolo_env: Path) -> Path:
    """A random-weight YOLOv8n exported to ONNX (about 4 s, no download)."""
    from ultralytics import YOLO

    cwd = Path.cwd()
    os.chdir(yolo_env)
    try:
        out = YOLO("yolov8n.yaml").export(format="onnx", imgsz=640, verbose=False)
    finally:
        os.chdir(cwd)
    return (yolo_env / out).resolve()


def build(settings: Any, classes: list[str] | None = None) -> Detector:
    return build_detector(settings, classes=classes or [], resolve=Path, where=WHERE)


def picture(width: int = 1280, height: int = 720, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------- onnx
def test_onnx_backend_runs_an_ultralytics_export(onnx_model: Path) -> None:
    detector = build(OnnxSettings(model=str(onnx_model), min_score=1e-5, max_detections=20))
    assert detector.name == "onnx" and detector.input_size == (640, 640)
    assert "CPUExecutionProvider" in detector.describe()
    images = [picture(seed=i) for i in range(3)]
    one_by_one = [detector.detect(img) for img in images]
    together = detector.detect_batch(images)
    assert together == one_by_one
    found = one_by_one[0]
    assert 0 < len(found) <= 20, "random weights still score above 1e-5"
    assert all(isinstance(d, Detection) and d.label for d in found)
    for d in found:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_onnx_backend_filters_classes(onnx_model: Path) -> None:
    # a model built from yolov8n.yaml names its 80 classes "0" to "79"
    detector = build(OnnxSettings(model=str(onnx_model), min_score=1e-6), ["2", "7"])
    found = detector.detect(picture())
    assert found and {d.label for d in found} <= {"2", "7"}
    assert {d.class_id for d in found} <= {2, 7}
    with pytest.raises(ConfigError, match="knows no class 'lorry'"):
        build(OnnxSettings(model=str(onnx_model)), ["lorry"])


def test_onnx_backend_refuses_missing_and_broken_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no model file at {tmp_path / 'none.onnx'}"):
        build(OnnxSettings(model=str(tmp_path / "none.onnx")))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match="is not an ONNX model onnxruntime can load"):
        build(OnnxSettings(model=str(junk)))
    with pytest.raises(ConfigError, match="providers: none of"):
        build(OnnxSettings(model=str(junk), providers=("NoSuchExecutionProvider",)))


# --------------------------------------------------------------------------- ultralytics
def test_ultralytics_backend_batches_frames(yolo_env: Path) -> None:
    settings = UltralyticsSettings(model="yolov8n.yaml", min_score=1e-5, max_batch_size=2)
    detector = build(settings, ["2"])
    assert "random weights" in detector.describe()
    images = [picture(seed=i) for i in range(3)]  # two batches: 2 + 1
    results = detector.detect_batch(images)
    assert len(results) == 3
    for found in results:
        assert all(d.label == "2" and d.class_id == 2 for d in found)
        for d in found:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720


def test_ultralytics_backend_refuses_what_cannot_work(yolo_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no weights file at {tmp_path / 'yolov8n.pt'}"):
        build(UltralyticsSettings(model=str(tmp_path / "yolov8n.pt")))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="asks for CUDA, but this PyTorch sees no GPU"):
            build(UltralyticsSettings(model="yolov8n.yaml", device="cuda:0"))


# --------------------------------------------------------------------------- tracking
def test_boxes_adapter_gives_bytetrack_what_it_reads() -> None:
    found = [
        Detection("car", 2, 0.9, (10, 20, 110, 70)),
        Detection("person", 0, 0.3, (0, 0, 4, 8)),
    ]
    boxes = _Boxes.of(found)
    assert boxes.xywh.tolist() == [[60.0, 45.0, 100.0, 50.0], [2.0, 4.0, 4.0, 8.0]]
    high = boxes[boxes.conf > 0.5]
    assert len(high) == 1 and high.cls.tolist() == [2.0]
    assert len(_Boxes.of([])) == 0


@pytest.mark.testdata
def test_the_udacity_clip_yields_a_few_car_tracks(yolo_env: Path, testdata: Path) -> None:
    model = testdata / "models" / "yolov8n_full_integer_quant.tflite"
    detector = build(LiteRTSettings(model=str(model), min_score=0.1), ["car", "truck", "bus"])
    tracker = Tracker(TrackerSettings())
    clip = testdata / "video" / "udacity_test_video.mp4"
    frames = detections = 0
    for sample in FrameSampler(clip, snap_to_keyframes=False).sample(every_seconds(2, 25)):
        found = detector.detect(sample.frame.to_ndarray(format="rgb24"))
        tracker.update(sample.time, found)
        frames, detections = frames + 1, detections + len(found)
    tracks = tracker.tracks()
    assert frames == 38 and detections >= 60
    assert 2 <= len(tracks) <= 4, [(t.track_id, len(t.seen)) for t in tracks]
    long = [t for t in tracks if len(t.seen) >= 30]
    assert len(long) >= 2, "both cars are followed through the clip"
    for t in long:
        assert t.label == "car"
        assert t.first == 0.0 and t.last == pytest.approx(1.48)
        assert t.best.detection.score >= 0.8
        xs = [(s.detection.box[0] + s.detection.box[2]) / 2 for s in t.seen]
        assert max(xs) - min(xs) < 400, "one car, not boxes jumping across the road"
