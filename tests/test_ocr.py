"""stages.ocr: rapidocr on rendered text (its models ship in the wheel: no download, no test
data), the settings registry, and what can be checked of easyocr without easyocr: the error when
it is missing, the weights check, and the handling of its documented result format."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydantic import TypeAdapter, ValidationError

from stages.ocr import (
    EasyOcrSettings,
    OcrEngine,
    OcrSettings,
    RapidOcrSettings,
    TextRead,
    build_ocr,
    reading_order,
)
from stages.ocr.easyocr import default_model_dir, missing_weights, required_weights
from watchers.errors import ConfigError

WHERE = "policies.toml: stages.heavy.ocr"
SETTINGS: TypeAdapter[Any] = TypeAdapter(OcrSettings)


def resolve(path: str) -> Path:
    return Path("/policies") / path


@pytest.fixture(scope="module")
def rapid() -> Iterator[OcrEngine]:
    """One engine for the module: building one loads two ONNX models (seconds)."""
    with build_ocr(RapidOcrSettings(threads=1), resolve=resolve, where=WHERE) as engine:
        yield engine


def render(lines: list[str], size: int = 32, pad: int = 16, invert: bool = False) -> NDArray[Any]:
    """Black text on white (or the reverse), one line under another, as BGR. Pillow's own
    scalable default font, so no system font is needed."""
    font = ImageFont.load_default(size=size)
    step = round(size * 1.6)
    width = max(round(font.getlength(line)) for line in lines) + 2 * pad
    image = Image.new("L", (width, len(lines) * step + 2 * pad), 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * step), line, fill=0, font=font)
    grey = np.asarray(image)
    return cv2.cvtColor(255 - grey if invert else grey, cv2.COLOR_GRAY2BGR)


@pytest.mark.parametrize(
    ("line", "invert"),
    [
        ("2024-05-17 08:31:42", False),
        ("N 52.52000 E 13.40500 87 km/h", False),
        ("AB 123 CD", False),
        ("2024-05-17 08:31:42", True),  # an overlay: light text on a dark strip
    ],
)
def test_rapidocr_reads_a_rendered_line_exactly(rapid: OcrEngine, line: str, invert: bool) -> None:
    read = rapid.read_line(render([line], invert=invert))
    assert read is not None
    assert read.text == line
    assert 0.9 <= read.confidence <= 1.0
    assert read.box is None  # recognition only: the engine did not locate it


def test_rapidocr_read_line_accepts_grey(rapid: OcrEngine) -> None:
    grey = cv2.cvtColor(render(["VIOFO A129"]), cv2.COLOR_BGR2GRAY)
    read = rapid.read_line(grey)
    assert read is not None and read.text == "VIOFO A129"


def test_rapidocr_reads_nothing_where_there_is_nothing(rapid: OcrEngine) -> None:
    blank = np.full((60, 240, 3), 255, np.uint8)
    assert rapid.read_line(blank) is None
    assert rapid.read(blank) == []
    assert rapid.read_line(np.zeros((0, 10, 3), np.uint8)) is None
    with pytest.raises(ValueError, match="uint8"):
        rapid.read_line(np.zeros((20, 20, 3), np.float32))


def test_rapidocr_read_finds_two_lines_in_order_with_boxes(rapid: OcrEngine) -> None:
    lines = ["2024-05-17 08:31:42", "87 km/h N52.5200 E13.4050"]
    image = np.zeros((400, 700, 3), np.uint8)  # the text somewhere inside a larger frame
    text = render(lines)
    image[200 : 200 + text.shape[0], 100 : 100 + text.shape[1]] = text
    reads = rapid.read(image)
    # Spaces compared loosely: on the detector's tight crops the recogniser sometimes drops the
    # narrow space of this font ("2024-05-1708:31:42"); every other character must be there.
    assert [r.text.replace(" ", "") for r in reads] == [line.replace(" ", "") for line in lines]
    first, second = (r.box for r in reads)
    assert first is not None and second is not None
    # both inside the pasted text, the first above the second, each about a line high
    for x1, y1, x2, y2 in (first, second):
        assert 100 <= x1 < x2 <= 100 + text.shape[1]
        assert 200 <= y1 < y2 <= 200 + text.shape[0]
        assert 20 <= y2 - y1 <= 60
    assert first[3] <= second[1] + 5
    assert all(r.confidence > 0.9 for r in reads)


def test_reading_order_groups_lines_then_goes_left_to_right() -> None:
    right = TextRead("B", 1.0, (200, 12, 260, 40))  # a little lower, same line
    left = TextRead("A", 1.0, (10, 10, 80, 38))
    below = TextRead("C", 1.0, (10, 60, 80, 90))
    unplaced = TextRead("D", 1.0)
    assert [r.text for r in reading_order([unplaced, below, right, left])] == list("ABCD")


def test_rapidocr_describes_itself_and_keeps_quiet(rapid: OcrEngine) -> None:
    assert rapid.name == "rapidocr"
    assert rapid.describe().startswith("rapidocr PP-OCR")
    assert "(onnxruntime CPU, 1 thread)" in rapid.describe()
    # rapidocr's own logger (its own handler, not ours) would log model paths at INFO
    assert logging.getLogger("RapidOCR").getEffectiveLevel() >= logging.ERROR


# -------------------------------------------------------------------- settings


def test_settings_pick_the_backend_by_type() -> None:
    assert isinstance(SETTINGS.validate_python({"type": "rapidocr"}), RapidOcrSettings)
    easy = SETTINGS.validate_python({"type": "easyocr", "languages": ["de", "en"], "gpu": False})
    assert isinstance(easy, EasyOcrSettings)
    assert easy.languages == ("de", "en") and easy.gpu is False and easy.model_dir == ""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "tesseract"}, "tesseract"),
        ({}, "type"),
        ({"type": "rapidocr", "thread": 2}, "thread"),
        ({"type": "rapidocr", "threads": 0}, "threads"),
        ({"type": "easyocr", "model": "x"}, "model"),
        ({"type": "easyocr", "languages": []}, "languages"),
    ],
)
def test_settings_refuse_unknown_types_keys_and_values(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SETTINGS.validate_python(data)


def test_rapidocr_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import rapidocr now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install rapidocr onnxruntime") as e:
        build_ocr(RapidOcrSettings(), resolve=resolve, where=WHERE)
    assert str(e.value).startswith(WHERE)


# -------------------------------------------------------------------- easyocr


def test_easyocr_missing_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "easyocr", None)
    with pytest.raises(ConfigError) as e:
        build_ocr(EasyOcrSettings(), resolve=resolve, where=WHERE)
    message = str(e.value)
    assert message.startswith(WHERE)
    assert "pip install easyocr" in message and 'type = "rapidocr"' in message


def test_easyocr_weights_check_names_the_missing_files(tmp_path: Path) -> None:
    assert missing_weights(tmp_path, ["en"]) == ["craft_mlt_25k.pth", "english_g2.pth"]
    (tmp_path / "craft_mlt_25k.pth").write_bytes(b"x")
    assert missing_weights(tmp_path, ["en"]) == ["english_g2.pth"]
    assert missing_weights(tmp_path, ["de", "en"]) == ["latin_g2.pth"]
    (tmp_path / "english_g2.pth").mkdir()  # a folder is not a weights file
    assert missing_weights(tmp_path, ["en"]) == ["english_g2.pth"]
    # other scripts: easyocr names its recogniser itself; only the detector is checked
    assert required_weights(["ru", "en"]) == ["craft_mlt_25k.pth"]


def test_easyocr_default_folder_follows_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODULE_PATH", raising=False)
    monkeypatch.setenv("EASYOCR_MODULE_PATH", "/opt/easyocr")
    assert default_model_dir() == Path("/opt/easyocr/model")
    monkeypatch.delenv("EASYOCR_MODULE_PATH")
    assert default_model_dir() == Path.home() / ".EasyOCR" / "model"


class FakeReader:
    """Stands in for easyocr.Reader: records how it was made and answers in EasyOCR's
    documented formats. Only our side of the interface is tested with it."""

    made: list[dict[str, Any]] = []

    def __init__(self, langs: list[str], **kwargs: Any) -> None:
        FakeReader.made.append({"langs": langs, **kwargs})
        self.device = "cpu"

    def readtext(self, image: Any, **kwargs: Any) -> list[Any]:
        return [
            ([[300, 52], [420, 50], [420, 80], [300, 82]], "km/h", 0.8),
            ([[10, 10], [200, 10], [200, 40], [10, 40]], " 2024-05-17 ", 0.95),
            ([[10, 50], [120, 50], [120, 80], [10, 80]], "87", np.float64(0.9)),
            ([[0, 90], [50, 90], [50, 99], [0, 99]], "  ", 0.5),
        ]

    def recognize(self, image: Any, **kwargs: Any) -> list[Any]:
        h, w = image.shape[:2]
        return [([[0, 0], [w, 0], [w, h], [0, h]], "AB 123", 1.2)]


@pytest.fixture
def fake_easyocr(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("easyocr")
    module.Reader = FakeReader  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "easyocr", module)
    FakeReader.made = []
    yield


@pytest.mark.usefixtures("fake_easyocr")
def test_easyocr_missing_weights_stop_the_build_before_a_reader_is_made(tmp_path: Path) -> None:
    settings = EasyOcrSettings(model_dir="weights")
    with pytest.raises(ConfigError) as e:
        build_ocr(settings, resolve=lambda p: tmp_path / p, where=WHERE)
    message = str(e.value)
    assert message.startswith(f"{WHERE}.model_dir")
    assert "craft_mlt_25k.pth, english_g2.pth" in message and str(tmp_path / "weights") in message
    assert "internet" in message
    assert FakeReader.made == []


@pytest.mark.usefixtures("fake_easyocr")
def test_easyocr_engine_with_weights_never_downloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("craft_mlt_25k.pth", "english_g2.pth"):
        (tmp_path / name).write_bytes(b"weights")
    engine = build_ocr(EasyOcrSettings(model_dir="w"), resolve=lambda p: tmp_path, where=WHERE)
    (made,) = FakeReader.made
    assert made["download_enabled"] is False and made["gpu"] is True
    assert made["model_storage_directory"] == str(tmp_path) and made["langs"] == ["en"]
    assert engine.name == "easyocr" and str(tmp_path) in engine.describe()
    assert "no CUDA device" in caplog.text  # asked for the GPU, got the CPU
    image = np.zeros((100, 450, 3), np.uint8)
    reads = engine.read(image)
    assert [(r.text, r.box) for r in reads] == [
        ("2024-05-17", (10, 10, 200, 40)),
        ("87", (10, 50, 120, 80)),
        ("km/h", (300, 50, 420, 82)),
    ]
    line = engine.read_line(image[:40, :200])
    assert line == TextRead("AB 123", 1.0)  # confidence kept within 0..1
