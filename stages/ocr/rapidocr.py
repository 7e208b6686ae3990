"""The ``rapidocr`` engine: PaddleOCR's PP-OCR models as ONNX, on the CPU with onnxruntime.

rapidocr ships its detection and recognition models inside the wheel, so it works on a machine
that has never been online, which makes it the default and what the tests run. Measured on the
development machine (2 cores shared with other work): recognition alone on a plate crop takes a
median 31 ms with one onnxruntime thread (63 ms with two, which fought the other work for the
cores), and reads 87 of the 108 EU benchmark plates exactly from their true boxes. Building an
engine takes a few seconds (both models are loaded then, not on the first job).

Two settings are fixed on purpose:

* the angle classifier is off. It decides per line whether the text is upside down, and on
  overlay strips it turned correct lines over and read them backwards; dashcam text is upright;
* rapidocr's own logger is set to errors only. It logs every model path at INFO each time an
  engine is made and a warning for each image without text, through a handler of its own that
  the CLI's logging setup does not control.

rapidocr is imported when an engine is built, so a machine without it can still read a policies
file that names this backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from stages.ocr import (
    OcrBackendSettings,
    OcrEngine,
    TextRead,
    check_image,
    polygon_box,
    reading_order,
)
from watchers.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from rapidocr import RapidOCR

log = logging.getLogger(__name__)


class RapidOcrSettings(OcrBackendSettings):
    type: Literal["rapidocr"] = "rapidocr"
    threads: int = Field(2, ge=1, le=64, description="onnxruntime threads per model")

    def build(self, *, resolve: Callable[[str], Path], where: str) -> OcrEngine:
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise ConfigError(
                f"{where}: the rapidocr engine needs the rapidocr and onnxruntime packages, "
                f"which are not installed; install them with pip install rapidocr onnxruntime."
            ) from None
        params = {
            "Global.use_cls": False,
            "Global.log_level": "error",
            "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        try:
            engine = RapidOCR(params=params)
            ocr = RapidOcrEngine(engine, self.threads)
            ocr.warm_up()
        except Exception as e:  # a damaged install: missing or unreadable model files
            raise ConfigError(
                f"{where}: rapidocr could not load its models ({type(e).__name__}: {e}); "
                f"reinstall it with pip install --force-reinstall rapidocr onnxruntime."
            ) from None
        log.info("OCR: %s", ocr.describe())
        return ocr


class RapidOcrEngine(OcrEngine):
    """A ``rapidocr.RapidOCR`` behind the :class:`OcrEngine` interface."""

    name = "rapidocr"

    def __init__(self, engine: RapidOCR, threads: int) -> None:
        self.engine = engine
        rec = engine.cfg.Rec
        version, size = (getattr(v, "value", v) for v in (rec.ocr_version, rec.model_type))
        threads_text = "1 thread" if threads == 1 else f"{threads} threads"
        self._description = f"rapidocr {version} {size} (onnxruntime CPU, {threads_text})"

    def warm_up(self) -> None:
        """Load both models now (rapidocr loads each on first use), so that a broken install
        fails at start-up and the first job does not pay for it."""
        import numpy as np

        blank = np.full((48, 160, 3), 255, np.uint8)
        self.read_line(blank)
        self.read(blank)

    def read(self, image_bgr: NDArray[Any]) -> list[TextRead]:
        if not check_image(image_bgr):
            return []
        # Every flag is passed on every call: RapidOCR keeps the last call's flags.
        result = self.engine(image_bgr, use_det=True, use_cls=False, use_rec=True)
        texts, scores, boxes = _fields(result)
        if not texts or boxes is None:
            return []
        h, w = image_bgr.shape[:2]
        reads = [
            TextRead(text.strip(), _unit(score), polygon_box(points, w, h))
            for text, score, points in zip(texts, scores, boxes, strict=True)
            if text.strip()
        ]
        return reading_order(reads)

    def read_line(self, image_bgr: NDArray[Any]) -> TextRead | None:
        if not check_image(image_bgr):
            return None
        result = self.engine(image_bgr, use_det=False, use_cls=False, use_rec=True)
        texts, scores, _ = _fields(result)
        if not texts or not texts[0].strip():
            return None
        return TextRead(texts[0].strip(), _unit(scores[0]))

    def describe(self) -> str:
        return self._description


def _fields(result: object) -> tuple[list[str], list[float], Any]:
    """Texts, scores and boxes from any of rapidocr's output classes (each has its own)."""
    texts = getattr(result, "txts", None) or ()
    scores = getattr(result, "scores", None) or ()
    return [str(t) for t in texts], [float(s) for s in scores], getattr(result, "boxes", None)


def _unit(score: float) -> float:
    return min(max(float(score), 0.0), 1.0)
