"""stages.plates on real photos: the 108 cars of the openalpr EU benchmark (shared test data),
read from their true plate boxes and from the whole photo (cascade, crops, OCR, vote), with
floors a little under what was measured; plus normalising and voting.

Run with ``-s`` to see the rates."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ValidationError

from stages import plates
from stages.ocr import OcrEngine, RapidOcrSettings, TextRead, build_ocr
from stages.plates import (
    PlateFinder,
    PlateFinderSettings,
    PlateRead,
    best_plate,
    find_plates,
    normalise_plate,
    read_plate,
    vote,
)
from watchers.errors import ConfigError

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Photo:
    name: str
    image: NDArray[Any]
    box: Box  # the plate, x1, y1, x2, y2
    plate: str


@pytest.fixture(scope="module")
def ocr() -> Iterator[OcrEngine]:
    """One engine for the module: building one loads two ONNX models (seconds)."""
    with build_ocr(RapidOcrSettings(threads=1), resolve=Path, where="test") as engine:
        yield engine


@pytest.fixture(scope="module")
def finder() -> PlateFinder:
    return PlateFinder()


@pytest.fixture(scope="module")
def cache() -> dict[str, Any]:
    """Results shared by this module's tests (``testdata`` itself is per test)."""
    return {}


@pytest.fixture
def photos(testdata: Path, cache: dict[str, Any]) -> list[Photo]:
    """The EU set: each ``NAME.jpg`` with ``NAME.txt`` = ``NAME.jpg x y w h PLATE``."""
    if "photos" not in cache:
        folder = testdata / "plates" / "eu"
        out = []
        for txt in sorted(folder.glob("*.txt")):
            name, x, y, w, h, plate = txt.read_text().split()
            image = cv2.imread(str(folder / name))
            assert image is not None, name
            x1, y1 = int(x), int(y)
            out.append(Photo(name, image, (x1, y1, x1 + int(w), y1 + int(h)), plate))
        assert len(out) == 108
        cache["photos"] = out
    photos: list[Photo] = cache["photos"]
    return photos


def iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rate(hits: int, total: int) -> str:
    return f"{hits}/{total} ({100 * hits / total:.0f} %)"


# -------------------------------------------------------------------- real photos


@pytest.mark.testdata
def test_true_plate_boxes_are_read_exactly(photos: list[Photo], ocr: OcrEngine) -> None:
    """Measured: 87 of 108 (81 %); the issue asks for 60 %. Most misses are O/0 mix-ups (the
    truth itself writes "RKO99AN" for a Slovak RK-099AN) and a first letter from the EU band."""
    exact = 0
    for p in photos:
        x1, y1, x2, y2 = p.box
        margin = round(0.1 * (y2 - y1))
        crop = p.image[max(0, y1 - margin) : y2 + margin, max(0, x1 - margin) : x2 + margin]
        read = read_plate(crop, ocr)
        exact += read is not None and read.text == p.plate
    print(f"\ntrue plate boxes read exactly: {rate(exact, len(photos))}", file=sys.stderr)
    assert exact >= 83


Found = list[tuple[Photo, list[Box], PlateRead | None]]


@pytest.fixture
def whole_photos(
    photos: list[Photo], finder: PlateFinder, ocr: OcrEngine, cache: dict[str, Any]
) -> Found:
    """Each photo's plate boxes and its best reading, found and read from the whole photo."""
    if "whole" not in cache:
        cache["whole"] = [
            (p, finder.find(p.image), best_plate(p.image, finder, ocr)) for p in photos
        ]
    found: Found = cache["whole"]
    return found


@pytest.mark.testdata
def test_whole_photos_plates_are_found(
    whole_photos: Found,
) -> None:
    """Found: a box overlapping the true one by IoU >= 0.3. Measured: 105 of 108."""
    found = sum(any(iou(b, p.box) >= 0.3 for b in boxes) for p, boxes, _ in whole_photos)
    per_photo = sum(len(boxes) for _, boxes, _ in whole_photos) / len(whole_photos)
    print(
        f"\nwhole photo: plate found in {rate(found, len(whole_photos))}, "
        f"{per_photo:.1f} boxes per photo",
        file=sys.stderr,
    )
    assert found >= 101
    assert per_photo < 2.5  # the boxes are mostly plates, not everything rectangular


@pytest.mark.testdata
def test_whole_photos_plates_are_read(
    whole_photos: Found,
) -> None:
    """Exact: the best reading is the true text. Measured: 79 of 108."""
    exact = [(p, r) for p, _, r in whole_photos if r is not None and r.text == p.plate]
    print(
        f"\nwhole photo: plate read exactly in {rate(len(exact), len(whole_photos))}",
        file=sys.stderr,
    )
    assert len(exact) >= 74
    for p, r in exact:  # the reading's box is where the plate is, in the photo's pixels
        assert r.box is not None, p.name
        cx, cy = (r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2
        assert p.box[0] < cx < p.box[2] and p.box[1] < cy < p.box[3], p.name
        assert 0 < r.confidence <= 1


@pytest.mark.testdata
def test_small_vehicle_crops_are_enlarged_for_the_cascade(
    photos: list[Photo], finder: PlateFinder
) -> None:
    """At half size most plates are narrower than the cascade's 60 px window; enlarging the
    crop first finds them (measured: 97 of 108 against 74 without)."""
    found = 0
    for p in photos:
        half = cv2.resize(p.image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        truth: Box = (p.box[0] // 2, p.box[1] // 2, p.box[2] // 2, p.box[3] // 2)
        boxes = finder.find(half)
        assert all(
            0 <= x1 < x2 <= half.shape[1] and 0 <= y1 < y2 <= half.shape[0]
            for x1, y1, x2, y2 in boxes
        )
        found += any(iou(b, truth) >= 0.3 for b in boxes)
    print(f"\nhalf-size photos: plate found in {rate(found, len(photos))}", file=sys.stderr)
    assert found >= 92


# -------------------------------------------------------------------- finder


def test_finder_finds_nothing_in_nothing(finder: PlateFinder) -> None:
    assert finder.find(np.full((300, 400, 3), 128, np.uint8)) == []
    assert finder.find(np.zeros((0, 0, 3), np.uint8)) == []
    assert find_plates(np.full((300, 400), 200, np.uint8)) == []
    assert "cascade" in finder.describe()


def test_finder_without_the_cascade_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("cv2.data.haarcascades", str(tmp_path) + "/")  # as in OpenCV 5: none
    with pytest.raises(ConfigError, match=r"stages\.heavy\.plates: .*opencv-python-headless<5"):
        plates.build_plate_finder(PlateFinderSettings(), where="stages.heavy.plates")


def test_finder_settings_refuse_unknown_keys_and_types() -> None:
    assert PlateFinderSettings.model_validate({"type": "cascade"}).type == "cascade"
    bad_ones = [
        {"type": "yolo"},
        {"scale": 1.2},
        {"scale_factor": 1.0},
        {"min_width_px": 640, "max_width_px": 600},
    ]
    for bad in bad_ones:
        with pytest.raises(ValidationError):
            PlateFinderSettings.model_validate(bad)


# -------------------------------------------------------------------- reading


class Says(OcrEngine):
    """An engine that reads what it is told (for the checks around the OCR)."""

    name = "says"

    def __init__(self, text: str | None, confidence: float = 0.9) -> None:
        self.text, self.confidence = text, confidence

    def read(self, image_bgr: NDArray[Any]) -> list[TextRead]:
        raise AssertionError("plates use read_line")

    def read_line(self, image_bgr: NDArray[Any]) -> TextRead | None:
        return None if self.text is None else TextRead(self.text, self.confidence)

    def describe(self) -> str:
        return "says"


CROP = np.full((30, 120, 3), 255, np.uint8)


def test_read_plate_normalises_and_rejects() -> None:
    read = read_plate(CROP, Says("rk-099 an", 0.75))
    assert read == PlateRead(text="RK099AN", raw_text="rk-099 an", confidence=0.75)
    assert read_plate(CROP, Says("AB1")) is None
    assert read_plate(CROP, Says(None)) is None
    assert read_plate(CROP[:0], Says("AB123")) is None


@pytest.mark.parametrize(
    ("raw", "plate"),
    [
        ("M5 XSX", "M5XSX"),
        ("m5-xsx", "M5XSX"),
        ("RK-099AN", "RK099AN"),
        ("LM·O10BE", "LMO10BE"),
        ("BA.302 OZ", "BA302OZ"),
        ("czWSQ 3021", "CZWSQ3021"),
        ("GWAGEN", "GWAGEN"),  # vanity plates have no digit: still a plate
        ("1234", "1234"),
        ("ABCDE12345", "ABCDE12345"),
        ("AB1", None),  # too short
        ("A-B 1", None),
        ("ABCDE123456", None),  # too long
        ("", None),
        ("- . -", None),
        ("äöü ß", None),  # nothing of A-Z0-9
    ],
)
def test_normalise_plate(raw: str, plate: str | None) -> None:
    assert normalise_plate(raw) == plate


def pr(text: str, confidence: float, time: float | None = None) -> PlateRead:
    return PlateRead(text, text, confidence, time=time)


def test_vote_three_consistent_readings_beat_one_confident_wrong_one() -> None:
    reads = [pr("RK8924F", 0.99, 1.0), pr("RK892AE", 0.8, 1.2), pr("RK892AE", 0.7, 1.4)]
    reads.append(pr("RK892AE", 0.85, 1.6))
    winner = vote(reads)
    assert winner is not None and winner.text == "RK892AE"
    assert (winner.confidence, winner.time) == (0.85, 1.6)  # its most confident reading


def test_vote_single_readings_go_to_the_most_confident() -> None:
    winner = vote([pr("AB123", 0.6), pr("AB128", 0.9), pr("A8123", 0.7)])
    assert winner is not None and winner.text == "AB128"


def test_vote_ties_go_to_the_most_confident_single_reading() -> None:
    winner = vote([pr("AB123", 0.5), pr("AB123", 0.5), pr("AB128", 1.0)])
    assert winner is not None and winner.text == "AB128"
    winner = vote([pr("AB128", 1.0), pr("AB123", 0.5), pr("AB123", 0.5)])
    assert winner is not None and winner.text == "AB128"  # not by order


def test_vote_prefers_texts_with_a_digit_over_badges() -> None:
    winner = vote([pr("PEUGEOT", 0.99), pr("PEUGEOT", 0.98), pr("RK875AE", 0.5)])
    assert winner is not None and winner.text == "RK875AE"
    winner = vote([pr("GWAGEN", 0.9)])
    assert winner is not None and winner.text == "GWAGEN"


def test_vote_of_nothing_is_none() -> None:
    assert vote([]) is None


def test_plate_read_json_and_time() -> None:
    read = PlateRead("M5XSX", "M5 XSX", 0.98765, (1, 2, 30, 12))
    assert read.to_json() == {
        "text": "M5XSX",
        "raw_text": "M5 XSX",
        "confidence": 0.988,
        "box": [1, 2, 30, 12],
    }
    later = read.at(4.25)
    assert later.time == 4.25 and read.time is None
    assert later.to_json()["time"] == 4.25
    assert PlateRead("AB123", "AB123", 0.5).to_json() == {
        "text": "AB123",
        "raw_text": "AB123",
        "confidence": 0.5,
    }
