"""Licence plates on vehicle crops: find them, read them, and agree on one text per track.

Heavy tracks each vehicle over many frames, so a plate is read several times, each reading
imperfect in its own way. This module has the three steps, each usable on its own:

1. :class:`PlateFinder` finds plate-shaped boxes in a vehicle crop with OpenCV's Haar cascade
   ``haarcascade_russian_plate_number.xml``. It ships with ``opencv-python-headless`` < 5
   (OpenCV 5 dropped the cascades, hence the pin) and needs no model download or GPU. A plate
   detector model (a small YOLO trained on plates) would find more plates at odd angles; it
   would be another ``type`` in :class:`PlateFinderSettings` beside ``"cascade"``.
2. :func:`read_plate` reads one crop with an OCR engine's recognition-only path and keeps what
   looks like a plate (:func:`normalise_plate`).
3. :func:`vote` picks one reading from a track's readings, weighted by confidence.

Measured on the 108 photos of the openalpr EU benchmark (in the shared test data) with rapidocr:
from the true plate boxes 87 are read exactly; from the whole photo (cascade, crops, OCR, vote)
the plate is found in 105 (a box overlapping the true one by IoU 0.3 or more) and read exactly
in 79 (92 if O and 0 count as one: several of the benchmark's own texts write O for a 0). The
other misses are I/1 mix-ups, a spurious first letter from the blue EU band, a character cut
off at the box's edge, or a badge read instead of the plate.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watchers.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from stages.ocr import OcrEngine

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels

CASCADE_FILE = "haarcascade_russian_plate_number.xml"
CASCADE_WINDOW = (60, 20)  # the cascade's training window (width, height): its smallest find
MIN_PLATE_CHARS = 4
MAX_PLATE_CHARS = 10
_NOT_PLATE_CHARS = re.compile(r"[^A-Z0-9]")
_DIGIT = re.compile(r"[0-9]")


class PlateFinderSettings(BaseModel):
    """How plates are found. Tuned on the EU benchmark photos (see the field notes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["cascade"] = "cascade"
    # On the photos as they are (before min_width_px), the cascade's boxes covered at least half
    # the plate in 105 photos at 1.1 with 1.5 boxes each; 1.05 in 107 with 2 boxes each and
    # twice the time; 1.2 in 97.
    scale_factor: float = Field(1.1, gt=1.0, le=2.0)
    # 2 against 3: 2 more plates found for 0.2 more boxes per photo.
    min_neighbors: int = Field(2, ge=0, le=20)
    # A plate narrower than the cascade's 60 px window is never found, so small crops are
    # enlarged to this width first: on the photos shrunk to half size this found 97 plates
    # instead of 74, and on full-size ones 105 (79 read exactly) instead of 103 (77).
    min_width_px: int = Field(480, ge=60, le=4096)
    # Bigger crops are shrunk to this width first: plates in them are big, the cascade's time
    # grows with the area.
    max_width_px: int = Field(1280, ge=120, le=8192)
    # The cascade's boxes are loose: on the EU set 1.3 times the plate's width and 1.9 times its
    # height, centred on it. Reporting the middle 90 % x 60 % gives a box just around the plate,
    # and the OCR read 79 plates exactly from these against 66 from the cascade's boxes.
    keep_width: float = Field(0.9, gt=0.0, le=1.0)
    keep_height: float = Field(0.6, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _widths_in_order(self) -> PlateFinderSettings:
        if self.max_width_px < self.min_width_px:
            raise ValueError("max_width_px must be at least min_width_px")
        return self


class PlateFinder:
    """Finds plates in vehicle crops. Made once per process (loading the cascade is the
    start-up step; a missing cascade is a :class:`ConfigError`); use it from one thread."""

    def __init__(
        self, settings: PlateFinderSettings | None = None, *, where: str = "plates"
    ) -> None:
        import cv2

        self.settings = settings or PlateFinderSettings()
        folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = Path(folder) / CASCADE_FILE
        if not folder or not path.is_file():
            raise ConfigError(
                f"{where}: OpenCV's plate cascade {CASCADE_FILE} is not installed (it ships with "
                f"opencv-python-headless 4.x; OpenCV {cv2.__version__} has none); install "
                f"opencv-python-headless<5."
            )
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"{where}: OpenCV could not load the plate cascade {path}.")

    def find(self, vehicle_bgr: NDArray[Any]) -> list[Box]:
        """Plate boxes in ``vehicle_bgr`` (HxWx3 BGR or HxW grey), in its pixels, largest
        first. Usually one per plate, sometimes two overlapping ones, now and then a badge or
        sticker: read them all and let :func:`vote` choose."""
        import cv2

        s = self.settings
        if vehicle_bgr.size == 0:
            return []
        grey = (
            vehicle_bgr if vehicle_bgr.ndim == 2 else cv2.cvtColor(vehicle_bgr, cv2.COLOR_BGR2GRAY)
        )
        h, w = grey.shape[:2]
        scale = 1.0
        if w < s.min_width_px:
            scale = s.min_width_px / w
        elif w > s.max_width_px:
            scale = s.max_width_px / w
        if scale != 1.0:
            interpolation = cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA
            grey = cv2.resize(
                grey, (round(w * scale), round(h * scale)), interpolation=interpolation
            )
        found = self.cascade.detectMultiScale(
            grey,
            scaleFactor=s.scale_factor,
            minNeighbors=s.min_neighbors,
            minSize=CASCADE_WINDOW,
        )
        boxes = []
        for x, y, bw, bh in found:
            cx, cy = (x + bw / 2) / scale, (y + bh / 2) / scale
            half_w, half_h = bw * s.keep_width / scale / 2, bh * s.keep_height / scale / 2
            box = (
                max(0, int(cx - half_w)),
                max(0, int(cy - half_h)),
                min(w, int(cx + half_w)),
                min(h, int(cy + half_h)),
            )
            if box[2] - box[0] >= 8 and box[3] - box[1] >= 4:
                boxes.append(box)
        return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))

    def describe(self) -> str:
        s = self.settings
        return f"cascade {CASCADE_FILE} (scale {s.scale_factor}, neighbours {s.min_neighbors})"


def build_plate_finder(settings: PlateFinderSettings, *, where: str) -> PlateFinder:
    """The finder ``settings`` describe, or :class:`ConfigError` naming ``where``."""
    return PlateFinder(settings, where=where)


@cache
def _default_finder() -> PlateFinder:
    return PlateFinder()


def find_plates(vehicle_bgr: NDArray[Any]) -> list[Box]:
    """:meth:`PlateFinder.find` with the default settings (the cascade is loaded once)."""
    return _default_finder().find(vehicle_bgr)


@dataclass(frozen=True)
class PlateRead:
    """One reading of a plate."""

    text: str  # normalised: A-Z and 0-9 only, e.g. "M5XSX"
    raw_text: str  # what the OCR read, e.g. "M5 XSX"
    confidence: float  # 0..1, the OCR's
    box: Box | None = None  # where the plate is in the image given, when known
    time: float | None = None  # seconds into the clip, when known

    def at(self, time: float) -> PlateRead:
        """This reading, marked as made at ``time`` seconds into the clip."""
        return replace(self, time=time)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "raw_text": self.raw_text,
            "confidence": round(self.confidence, 3),
        }
        if self.box is not None:
            out["box"] = list(self.box)
        if self.time is not None:
            out["time"] = round(self.time, 3)
        return out


def normalise_plate(text: str) -> str | None:
    """``text`` as a plate: upper case, only A-Z and 0-9 (spaces, dashes, dots, the EU band's
    stray marks and letters with accents go), 4 to 10 characters; else None."""
    plate = _NOT_PLATE_CHARS.sub("", text.upper())
    if not MIN_PLATE_CHARS <= len(plate) <= MAX_PLATE_CHARS:
        return None
    return plate


def read_plate(crop_bgr: NDArray[Any], ocr: OcrEngine) -> PlateRead | None:
    """Read the plate in ``crop_bgr`` (a box from :meth:`PlateFinder.find`, or any tight crop
    around one plate), or None when nothing plate-like was read.

    The crop goes to the engine as it is: on the 108 EU crops rapidocr read 87 exactly as they
    are, 84 in grey, 85 after CLAHE, 86 enlarged to 48 px high and 82 with a padded border (its
    recogniser scales every line to 48 px high itself), so none of these is done.
    """
    if crop_bgr.size == 0:
        return None
    read = ocr.read_line(crop_bgr)
    if read is None:
        return None
    text = normalise_plate(read.text)
    if text is None:
        return None
    return PlateRead(text=text, raw_text=read.text, confidence=read.confidence)


def best_plate(vehicle_bgr: NDArray[Any], finder: PlateFinder, ocr: OcrEngine) -> PlateRead | None:
    """The plate on one vehicle crop: every box :meth:`PlateFinder.find` gives is read, and the
    readings are put to :func:`vote`. The result's box is in ``vehicle_bgr``'s pixels."""
    reads = []
    for box in finder.find(vehicle_bgr):
        x1, y1, x2, y2 = box
        read = read_plate(vehicle_bgr[y1:y2, x1:x2], ocr)
        if read is not None:
            reads.append(replace(read, box=box))
    return vote(reads)


def vote(reads: Sequence[PlateRead]) -> PlateRead | None:
    """The reading of one plate (a track's, or one image's) that the readings agree on.

    Readings are grouped by their normalised text and each text scores the sum of its
    confidences, so three consistent readings at 0.8 beat one wrong one at 0.99; ties go to the
    text with the most confident single reading. A text with a digit always beats one without:
    badges and stickers ("PEUGEOT", "BERLINGO") are read as confidently as plates, and 105 of
    the 108 EU plates have a digit (the other three, vanity plates, still win when nothing with a
    digit was read); on the whole-photo benchmark this turned 76 exact reads into 79.

    Returns the winning text's most confident reading (its box and time say where and when to
    look), or None when there are no readings.

    Voting per character position among readings of one length (which can combine two
    half-right readings) was tried on five jittered crops of each EU plate: 86 plates right
    against 86 by whole text, and 73 against 75 with heavier blur, so it is not done.
    """
    if not reads:
        return None
    total: dict[str, float] = defaultdict(float)
    best: dict[str, PlateRead] = {}
    for r in reads:
        total[r.text] += r.confidence
        if r.text not in best or r.confidence > best[r.text].confidence:
            best[r.text] = r
    winner = max(
        total,
        key=lambda t: (_DIGIT.search(t) is not None, total[t], best[t].confidence),
    )
    return best[winner]
