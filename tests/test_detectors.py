"""The light detectors: the real YOLOv8n int8 model on real road images, its I/O pieces on
hand-built data, and every load failure as a ConfigError naming the file."""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from stages.detectors import (
    Detection,
    Detector,
    DetectorSettings,
    EdgeTPUSettings,
    LiteRTSettings,
    NoneSettings,
    build_detector,
    edgetpu,
    yolo,
)
from watchers.errors import ConfigError

WHERE = "policies.toml: stages.preprocess.detector"
VEHICLES = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
CPU_MODEL = "models/yolov8n_full_integer_quant.tflite"
TPU_MODEL = "models/yolov8n_full_integer_quant_edgetpu.tflite"
SETTINGS: TypeAdapter[Any] = TypeAdapter(DetectorSettings)


def build(settings: Any, classes: list[str], base: Path) -> Detector:
    return build_detector(settings, classes=classes, resolve=lambda p: base / p, where=WHERE)


def read_rgb(path: Path) -> NDArray[np.uint8]:
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return w * h / (area - w * h)


def cars(found: list[Detection]) -> list[Detection]:
    """The confident cars, left to right."""
    return sorted((d for d in found if d.label == "car" and d.score >= 0.5), key=lambda d: d.box)


def libedgetpu_present() -> bool:
    try:
        ctypes.CDLL(edgetpu.LIBRARIES["Linux"])
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Detector]]:
    """Detectors built once per module (each load takes a moment), closed at the end."""
    cache: dict[str, Detector] = {}
    yield cache
    for detector in cache.values():
        detector.close()


@pytest.fixture
def vehicles(testdata: Path, built: dict[str, Detector]) -> Detector:
    """litert on the CPU model, reporting the road classes."""
    if "vehicles" not in built:
        built["vehicles"] = build(LiteRTSettings(), VEHICLES, testdata)
    return built["vehicles"]


@pytest.fixture
def udacity(testdata: Path) -> NDArray[np.uint8]:
    return read_rgb(testdata / "images" / "udacity_test1.jpg")


# --- the real model on real images -----------------------------------------------------------


@pytest.mark.testdata
def test_litert_finds_the_two_cars(vehicles: Detector, udacity: NDArray[np.uint8]) -> None:
    assert vehicles.name == "litert"
    assert vehicles.input_size == (640, 640)
    assert vehicles.describe() == "litert yolov8n_full_integer_quant.tflite (CPU, 2 threads)"
    found = vehicles.detect(udacity)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert all(d.label in VEHICLES for d in found)
    two = cars(found)
    assert len(two) >= 2
    for d in two:
        x1, y1, x2, y2 = d.box
        assert d.class_id == 2
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
        assert (y1 + y2) / 2 > 300  # on the road, not in the sky
        assert 40 < x2 - x1 < 400 and 30 < y2 - y1 < 300  # car-sized
    # the two cars of the picture: the white one on the right and the black one further ahead
    assert two[-1].box[0] > 1000 and 780 < two[0].box[0] < 860
    for d in found:  # NMS: no two boxes of a class cover the same object
        for e in found:
            if d is not e and d.label == e.label:
                assert iou(d.box, e.box) < 0.45
    assert two[0].to_json() == {
        "label": "car",
        "score": round(two[0].score, 3),
        "box": [*two[0].box],
    }


@pytest.mark.testdata
def test_classes_filter(testdata: Path, built: dict[str, Detector]) -> None:
    # a street photo with a person beside a car (and a truck)
    street = read_rgb(testdata / "plates" / "eu" / "test_032.jpg")
    built["all"] = every = build(LiteRTSettings(), [], testdata)
    built["person"] = person = build(LiteRTSettings(), ["person"], testdata)
    built["car"] = car = build(LiteRTSettings(), ["car"], testdata)
    labels = {d.label for d in every.detect(street)}
    assert {"person", "car"} <= labels
    assert {d.label for d in person.detect(street)} == {"person"}
    assert {d.label for d in car.detect(street)} == {"car"}
    # what a filtered detector finds is exactly the unfiltered answer for that class
    only_cars = [d for d in every.detect(street) if d.label == "car"]
    assert car.detect(street) == only_cars
    udacity = read_rgb(testdata / "images" / "udacity_test1.jpg")
    assert person.detect(udacity) == []


@pytest.mark.testdata
def test_boxes_map_back_through_the_letterbox(
    vehicles: Detector, udacity: NDArray[np.uint8]
) -> None:
    base = cars(vehicles.detect(udacity))
    # padded with black on the right and bottom: the cars stay where they were
    padded = np.zeros((720 + 200, 1280 + 200, 3), np.uint8)
    padded[:720, :1280] = udacity
    moved = cars(vehicles.detect(padded))
    # twice the size: the boxes double
    doubled = cv2.resize(udacity, (2560, 1440), interpolation=cv2.INTER_LINEAR)
    grown = cars(vehicles.detect(doubled))
    # a tall crop (the letterbox pads left and right instead of top and bottom)
    tall = np.ascontiguousarray(udacity[:, 700:1280])
    cropped = cars(vehicles.detect(tall))
    assert len(base) == len(moved) == len(grown) == len(cropped) >= 2
    for a, b, c, d in zip(base, moved, grown, cropped, strict=True):
        size = max(a.box[2] - a.box[0], a.box[3] - a.box[1])
        tolerance = 4 + 0.06 * size  # pixels: the model sees a slightly different picture
        assert np.abs(np.subtract(a.box, b.box)).max() <= tolerance
        assert np.abs(np.subtract(a.box, np.divide(c.box, 2))).max() <= tolerance
        assert np.abs(np.subtract(a.box, np.add(d.box, [700, 0, 700, 0]))).max() <= tolerance


@pytest.mark.testdata
def test_large_frame_and_odd_inputs(
    testdata: Path, vehicles: Detector, udacity: NDArray[np.uint8]
) -> None:
    big = read_rgb(testdata / "plates" / "eu" / "eu7.jpg")  # 2048x1536: shrunk with INTER_AREA
    found = cars(vehicles.detect(big))
    assert len(found) >= 2
    assert all(0 <= d.box[0] < d.box[2] <= 2048 and 0 <= d.box[1] < d.box[3] <= 1536 for d in found)
    # a non-contiguous view works like a copy of it
    view = udacity[::-1, 100:]
    assert not view.flags.c_contiguous
    assert vehicles.detect(view) == vehicles.detect(view.copy())
    assert vehicles.detect(np.full((10, 10, 3), 114, np.uint8)) == []
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        vehicles.detect(udacity[:, :, 0])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        vehicles.detect(udacity.astype(np.float32))


# --- letterbox, quantisation and decoding without the model ----------------------------------


def test_letterbox_geometry() -> None:
    wide = yolo.fit(1280, 720, (640, 640))
    assert (wide.inner_width, wide.inner_height, wide.left, wide.top) == (640, 360, 0, 140)
    tall = yolo.fit(720, 1280, (640, 640))
    assert (tall.inner_width, tall.inner_height, tall.left, tall.top) == (360, 640, 140, 0)
    small = yolo.fit(320, 200, (640, 640))  # small images are enlarged
    assert (small.inner_width, small.inner_height, small.left, small.top) == (640, 400, 0, 120)
    boxes = np.array([[100, 140, 200, 500], [-10, 100, 700, 600], [0, 0, 640, 140]], np.float32)
    np.testing.assert_allclose(
        wide.to_source(boxes), [[200, 0, 400, 720], [0, 0, 1280, 720], [0, 0, 1280, 0]]
    )


def test_letterbox_pixels_land_where_to_source_says() -> None:
    for height, width in [(720, 1280), (1080, 607), (333, 333), (2160, 3840)]:
        rgb = np.zeros((height, width, 3), np.uint8)
        x1, y1, x2, y2 = width // 4, height // 3, width // 2, height // 2
        rgb[y1:y2, x1:x2] = 255
        image, box = yolo.letterbox(rgb, (640, 640))
        assert image.shape == (640, 640, 3) and image.dtype == np.uint8
        assert image[0, 0, 0] == 114 or (box.top == 0 and box.left == 0)  # grey padding
        ys, xs = np.nonzero(image[:, :, 0] > 128)
        found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        back = box.to_source(found)[0]
        step = max(width, height) / 640  # one input pixel in source pixels
        np.testing.assert_allclose(back, [x1, y1, x2, y2], atol=1.5 * step)


def test_input_table_quantises_like_the_model() -> None:
    scale, zero_point = 0.018658448, -14  # the reference model's input
    table = yolo.input_table(np.int8, (scale, zero_point))
    assert table.dtype == np.int8 and table.shape == (256,)
    x = np.arange(256)
    np.testing.assert_array_equal(table, np.clip(np.round(x / 255 / scale + zero_point), -128, 127))
    assert table[0] == -14 and table[114] == 10 and table[255] == 40
    uint8 = yolo.input_table(np.uint8, (1 / 255, 0))
    np.testing.assert_array_equal(uint8, x)
    floats = yolo.input_table(np.float32, (0.0, 0))
    assert floats.dtype == np.float32 and floats[255] == 1.0 and floats[0] == 0.0
    image, _ = yolo.letterbox(np.full((4, 8, 3), 255, np.uint8), (16, 16), table)
    assert image.dtype == np.int8
    assert image[0, 0, 0] == table[114] and image[8, 8, 0] == table[255]


def head(*anchors: tuple[float, float, float, float, int, float], classes: int = 80) -> Any:
    """A dequantised [4 + classes, 400] YOLOv8 head: one anchor per (cx, cy, w, h, class, score)
    in normalised coordinates, the rest background with every score far below thresholds."""
    pred = np.zeros((4 + classes, 400), np.float32)
    pred[:4] = np.array([[0.5], [0.5], [0.01], [0.01]])
    pred[4:] = 0.01
    for i, (cx, cy, w, h, cls, score) in enumerate(anchors):
        pred[:4, i] = cx, cy, w, h
        pred[4 + cls, i] = score
    return pred


def test_decode_nms_per_class_and_threshold() -> None:
    pred = head(
        (0.5, 0.5, 0.2, 0.2, 2, 0.9),  # car
        (0.51, 0.5, 0.2, 0.2, 2, 0.8),  # the same car again: suppressed
        (0.5, 0.5, 0.2, 0.2, 7, 0.7),  # a truck on the same spot: another class, kept
        (0.8, 0.2, 0.1, 0.1, 0, 0.2),  # a person below min_score: dropped
        (0.1, 0.1, 0.05, 0.05, 2, 0.6),  # another car far away: kept
    )
    args: dict[str, Any] = {"input_size": (640, 640), "min_score": 0.35, "iou": 0.45}
    boxes, scores, classes = yolo.decode(pred, max_detections=100, **args)
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
    assert classes.tolist() == [2, 7, 2]
    np.testing.assert_allclose(boxes[0], [256, 256, 384, 384], atol=1e-3)
    np.testing.assert_allclose(boxes[2], [48, 48, 80, 80], atol=1e-3)
    # at most max_detections, the best ones
    _, scores, _ = yolo.decode(pred, max_detections=2, **args)
    np.testing.assert_allclose(scores, [0.9, 0.7])
    # non-square input: x scales with the width, y with the height
    boxes, _, _ = yolo.decode(pred, max_detections=1, **{**args, "input_size": (320, 640)})
    np.testing.assert_allclose(boxes[0], [128, 256, 192, 384], atol=1e-3)
    # only some class rows (car, truck) with their ids
    rows = pred[[0, 1, 2, 3, 4 + 2, 4 + 7]]
    ids = np.array([2, 7], np.intp)
    _, scores, classes = yolo.decode(rows, max_detections=100, class_ids=ids, **args)
    assert classes.tolist() == [2, 7, 2]
    # nothing above the threshold, and an empty head
    assert yolo.decode(pred, max_detections=9, **{**args, "min_score": 0.95})[0].shape == (0, 4)
    assert yolo.decode(pred[:, :0], max_detections=9, **args)[1].size == 0
    assert yolo.decode(pred[:4], max_detections=9, **args)[1].size == 0


class FakeInterpreter:
    """A float32 model with the transposed [1, anchors, 4 + nc] output some exports have."""

    def __init__(self, in_shape: list[int], out_shape: list[int], output: Any = None) -> None:
        self.in_shape, self.out_shape, self.output = in_shape, out_shape, output
        self.fed: Any = None

    def allocate_tensors(self) -> None:
        pass

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"index": 0, "shape": np.array(self.in_shape), "dtype": np.float32,
                 "quantization": (0.0, 0)}]  # fmt: skip

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{"index": 1, "shape": np.array(self.out_shape), "dtype": np.float32,
                 "quantization": (0.0, 0)}]  # fmt: skip

    def set_tensor(self, index: int, value: Any) -> None:
        self.fed = value

    def invoke(self) -> None:
        pass

    def get_tensor(self, index: int) -> Any:
        return self.output


def test_float_transposed_model_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "plain.tflite"
    path.write_bytes(b"\0\0\0\0TFL3")  # no metadata zip: the 80 COCO names are assumed
    pred = head((0.5, 0.5, 0.25, 0.25, 2, 0.9), (0.25, 0.5, 0.1, 0.1, 0, 0.8))
    fake = FakeInterpreter([1, 320, 320, 3], [1, 400, 84], pred.T[np.newaxis])
    model = yolo.YoloModel.open(
        fake, path=path, where=WHERE, classes=["car"], min_score=0.3, iou=0.5, max_detections=9
    )
    assert model.input_size == (320, 320)
    found = model.detect(np.zeros((100, 200, 3), np.uint8))  # letterboxed at 320x160, top 80
    assert fake.fed.dtype == np.float32 and fake.fed.shape == (1, 320, 320, 3)
    assert fake.fed[0, 0, 0, 0] == pytest.approx(114 / 255)
    # cx 160, cy 160, 80x80 input pixels: x 120..200, y 120..200 less the top 40, / 1.6
    assert [(d.label, d.class_id, d.box) for d in found] == [("car", 2, (75, 25, 125, 75))]
    assert found[0].score == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("in_shape", "out_shape"),
    [([1, 224, 224, 3], [1, 1001, 1]), ([1, 3, 640, 640], [1, 84, 8400]), ([1, 640, 640, 3], [84])],
)
def test_not_a_yolo_head(tmp_path: Path, in_shape: list[int], out_shape: list[int]) -> None:
    path = tmp_path / "other.tflite"
    path.write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(ConfigError, match="is not a YOLOv8 detection model") as e:
        yolo.YoloModel.open(
            FakeInterpreter(in_shape, out_shape),
            path=path,
            where=WHERE,
            classes=[],
            min_score=0.3,
            iou=0.5,
            max_detections=9,
        )
    assert str(e.value).startswith(f"{WHERE}.model: {path} ")


def test_class_count_without_names_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.tflite"
    path.write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(ConfigError, match="has 3 classes but no class names"):
        yolo.YoloModel.open(
            FakeInterpreter([1, 640, 640, 3], [1, 7, 8400]),
            path=path,
            where=WHERE,
            classes=[],
            min_score=0.3,
            iou=0.5,
            max_detections=9,
        )


def test_detection_json() -> None:
    d = Detection("car", 2, 0.91234, (1, 2, 3, 4))
    assert d.to_json() == {"label": "car", "score": 0.912, "box": [1, 2, 3, 4]}


# --- configuration errors --------------------------------------------------------------------


def test_missing_model_names_the_absolute_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build(LiteRTSettings(model="models/nope.tflite"), [], tmp_path)
    assert str(e.value).startswith(f"{WHERE}.model: no model file at {tmp_path}/models/nope.tflite")
    (tmp_path / "folder.tflite").mkdir()
    with pytest.raises(ConfigError, match="a folder, not a model file"):
        build(LiteRTSettings(model="folder.tflite"), [], tmp_path)


def test_not_a_tflite_file(tmp_path: Path) -> None:
    (tmp_path / "model.tflite").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ConfigError, match="is not a TensorFlow Lite model") as e:
        build(LiteRTSettings(model="model.tflite"), [], tmp_path)
    assert str(tmp_path / "model.tflite") in str(e.value)
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a TensorFlow Lite model"):
        build(EdgeTPUSettings(model="empty.tflite"), [], tmp_path)


@pytest.mark.testdata
def test_truncated_model(testdata: Path, tmp_path: Path) -> None:
    (tmp_path / "cut.tflite").write_bytes((testdata / CPU_MODEL).read_bytes()[:100_000])
    with pytest.raises(ConfigError, match="is not a valid TensorFlow Lite model"):
        build(LiteRTSettings(model="cut.tflite"), [], tmp_path)


@pytest.mark.testdata
def test_unknown_class_names(testdata: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build(LiteRTSettings(), ["car", "cars", "unicorn"], testdata)
    text = str(e.value)
    assert text.startswith(f"{WHERE}: the model yolov8n_full_integer_quant.tflite knows no class")
    assert "'cars', 'unicorn'" in text and "did you mean 'car'?" in text
    assert "'person', 'bicycle'" in text


@pytest.mark.testdata
def test_edgetpu_model_on_the_cpu(testdata: Path) -> None:
    with pytest.raises(ConfigError, match="is an Edge TPU model") as e:
        build(LiteRTSettings(model=TPU_MODEL), VEHICLES, testdata)
    assert str(testdata / TPU_MODEL) in str(e.value)
    assert 'type = "edgetpu"' in str(e.value)


# --- edgetpu: no Coral here ------------------------------------------------------------------


needs_no_coral = pytest.mark.skipif(libedgetpu_present(), reason="libedgetpu is installed here")


@pytest.mark.testdata
@needs_no_coral
def test_edgetpu_without_runtime_refuses_to_start(testdata: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build(EdgeTPUSettings(device="usb:0"), VEHICLES, testdata)
    text = str(e.value)
    assert text.startswith(f"{WHERE}: the Edge TPU runtime or device could not be opened")
    assert "libedgetpu" in text and "fallback_model" in text


@pytest.mark.testdata
@needs_no_coral
def test_edgetpu_falls_back_to_the_cpu_model(
    testdata: Path,
    built: dict[str, Detector],
    udacity: NDArray[np.uint8],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="stages.detectors.edgetpu"):
        detector = build(EdgeTPUSettings(fallback_model=CPU_MODEL), VEHICLES, testdata)
    built["fallback"] = detector
    assert "running" in caplog.text and "on the CPU instead" in caplog.text
    assert "fell back to CPU: libedgetpu.so.1" in detector.describe()
    assert detector.input_size == (640, 640)
    assert len(cars(detector.detect(udacity))) >= 2


def test_edgetpu_checks_model_files_before_the_device(tmp_path: Path) -> None:
    (tmp_path / "m.tflite").write_bytes(b"\0\0\0\0TFL3")
    with pytest.raises(ConfigError, match=r"detector\.model: no model file at"):
        build(EdgeTPUSettings(fallback_model="m.tflite"), [], tmp_path)
    with pytest.raises(ConfigError, match=r"detector\.fallback_model: no model file at"):
        build(EdgeTPUSettings(model="m.tflite", fallback_model="cpu.tflite"), [], tmp_path)


@pytest.mark.testdata
def test_edgetpu_passes_the_device_to_the_delegate(
    testdata: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, dict[str, str]]] = []

    def load_delegate(litert: Any, library: str, options: dict[str, str]) -> Any:
        calls.append((library, options))
        raise ValueError("Failed to load delegate from libedgetpu.so.1\nno Edge TPU found")

    monkeypatch.setattr(edgetpu, "load_delegate", load_delegate)
    monkeypatch.setattr(edgetpu, "pycoral_make_interpreter", lambda: None)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    with pytest.raises(
        ConfigError, match=r"\(Failed to load delegate from libedgetpu\.so\.1 no Edge"
    ):
        build(EdgeTPUSettings(device="pci:1"), [], testdata)
    with pytest.raises(ConfigError):
        build(EdgeTPUSettings(), [], testdata)
    assert calls == [("libedgetpu.so.1", {"device": "pci:1"}), ("libedgetpu.so.1", {})]


@pytest.mark.testdata
def test_edgetpu_through_corals_pycoral(
    testdata: Path, monkeypatch: pytest.MonkeyPatch, udacity: NDArray[np.uint8]
) -> None:
    """Coral's pycoral makes the interpreter when installed (here a stand-in that runs the CPU
    model); PyPI's unrelated pycoral, which lacks make_interpreter, is ignored."""
    litert = importlib.import_module("ai_edge_litert.interpreter")
    asked: list[tuple[str, str | None]] = []

    def make_interpreter(model: str, device: str | None = None) -> Any:
        asked.append((model, device))
        return litert.Interpreter(model_path=str(testdata / CPU_MODEL))

    def install(module: types.ModuleType) -> None:
        utils = types.ModuleType("pycoral.utils")
        utils.edgetpu = module  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pycoral", types.ModuleType("pycoral"))
        monkeypatch.setitem(sys.modules, "pycoral.utils", utils)
        monkeypatch.setitem(sys.modules, "pycoral.utils.edgetpu", module)

    coral = types.ModuleType("pycoral.utils.edgetpu")
    coral.make_interpreter = make_interpreter  # type: ignore[attr-defined]
    install(coral)
    with build(EdgeTPUSettings(device="usb"), ["car"], testdata) as detector:
        assert detector.name == "edgetpu"
        assert detector.describe().endswith("(Edge TPU usb, pycoral)")
        assert len(cars(detector.detect(udacity))) >= 2
    assert asked == [(str(testdata / TPU_MODEL), "usb")]

    install(types.ModuleType("pycoral.utils.edgetpu"))  # the PyPI namesake: no make_interpreter
    assert edgetpu.pycoral_make_interpreter() is None


# --- none and settings -----------------------------------------------------------------------


def test_none_detector(tmp_path: Path) -> None:
    detector = build(NoneSettings(), ["unicorn"], tmp_path)
    assert detector.name == "none" and detector.input_size is None
    assert detector.detect(np.zeros((4, 4, 3), np.uint8)) == []
    assert "none" in detector.describe()
    detector.close()


def test_settings_pick_the_backend_by_type() -> None:
    litert = SETTINGS.validate_python({"type": "litert", "threads": 4})
    assert isinstance(litert, LiteRTSettings)
    assert (litert.model, litert.threads, litert.min_score) == (CPU_MODEL, 4, 0.35)
    assert (litert.iou, litert.max_detections) == (0.45, 100)
    tpu = SETTINGS.validate_python({"type": "edgetpu", "device": "usb:0"})
    assert isinstance(tpu, EdgeTPUSettings)
    assert (tpu.model, tpu.fallback_model) == (TPU_MODEL, "")
    assert isinstance(SETTINGS.validate_python({"type": "none"}), NoneSettings)
    with pytest.raises(ValidationError, match="frozen"):
        litert.threads = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"type": "litert", "modle": "x.tflite"}, "Extra inputs are not permitted"),
        ({"type": "none", "model": "x.tflite"}, "Extra inputs are not permitted"),
        ({"type": "tensorrt"}, "does not match any of the expected tags"),
        ({"model": "x.tflite"}, "Unable to extract tag"),
        ({"type": "litert", "threads": 0}, "greater than or equal to 1"),
        ({"type": "litert", "min_score": 1.5}, "less than or equal to 1"),
        ({"type": "edgetpu", "device": "usb0"}, "should match pattern"),
        ({"type": "edgetpu", "fallback": "x.tflite"}, "Extra inputs are not permitted"),
    ],
)
def test_settings_refuse(data: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        SETTINGS.validate_python(data)


def test_importing_the_detectors_is_light() -> None:
    """The detector modules import numpy, OpenCV and ai-edge-litert only when a backend is built,
    so settings can be parsed where they are missing. (``stages/__init__`` is bypassed: it
    imports every stage.)"""
    stages = Path(__file__).resolve().parents[1] / "stages"
    code = (
        "import sys, types; pkg = types.ModuleType('stages'); "
        f"pkg.__path__ = [{str(stages)!r}]; sys.modules['stages'] = pkg; "
        "import stages.detectors; "
        "heavy = {'cv2', 'numpy', 'ai_edge_litert'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=stages.parent)
