"""The ``litert`` detector: a YOLOv8 ``.tflite`` on the CPU with Google's ai-edge-litert.

ai-edge-litert is the TensorFlow Lite runtime as its own small wheel (no TensorFlow), with
XNNPACK for fast int8 kernels on ARM and x86; YOLOv8n full-int8 takes about 70 ms a frame on two
cores, enough to sample a few frames per second of footage. It is also what the ``edgetpu``
backend falls back to when no Coral is attached. The model's input and output handling is in
:mod:`stages.detectors.yolo`; this module only makes and checks the interpreter.

ai-edge-litert and OpenCV are imported when a detector is built, not with this module, so a
machine without them can still read a policies file that mentions this backend.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from stages.detectors import BackendSettings, Detection, Detector
from watchers.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from stages.detectors.yolo import YoloModel

log = logging.getLogger(__name__)

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier at bytes 4..8 of every .tflite


class YoloSettings(BackendSettings):
    """What every YOLOv8 backend takes besides its model."""

    threads: int = Field(2, ge=1, description="CPU threads for the interpreter")
    min_score: float = Field(0.35, gt=0, le=1, description="lowest class score reported")
    iou: float = Field(0.45, gt=0, le=1, description="overlap above which NMS drops a box")
    max_detections: int = Field(100, ge=1, description="most objects reported per image")


class LiteRTSettings(YoloSettings):
    type: Literal["litert"] = "litert"
    model: str = Field("models/yolov8n_full_integer_quant.tflite", min_length=1)

    def build(
        self, *, classes: Sequence[str], resolve: Callable[[str], Path], where: str
    ) -> Detector:
        path = model_file(resolve(self.model), f"{where}.model")
        return open_cpu(path, self, classes=classes, where=where)


class LiteRTDetector(Detector):
    """A :class:`~stages.detectors.yolo.YoloModel` behind the :class:`Detector` interface."""

    name = "litert"

    def __init__(self, model: YoloModel, description: str) -> None:
        self.model = model
        self._description = description

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.model.input_size

    def detect(self, rgb: NDArray[Any]) -> list[Detection]:
        return self.model.detect(rgb)

    def describe(self) -> str:
        return self._description

    def close(self) -> None:
        self.model.close()


def model_file(path: Path, where: str) -> Path:
    """``path`` if it is a readable TensorFlow Lite file, else ConfigError naming ``where``."""
    if not path.is_file():
        what = "a folder, not a model file," if path.is_dir() else "no model file"
        raise ConfigError(
            f"{where}: {what} at {path} (relative paths are resolved against the folder of the "
            f"policies file); put the .tflite model there or correct the path."
        )
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ConfigError(
            f"{where}: cannot read {path} ({e.strerror or e}); fix its permissions."
        ) from None
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ConfigError(
            f"{where}: {path} is not a TensorFlow Lite model (it lacks the TFL3 identifier); "
            f"point it at a YOLOv8 .tflite export."
        )
    return path


def import_yolo(where: str) -> None:
    """ConfigError unless the packages :mod:`stages.detectors.yolo` needs are installed."""
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"{where}: this detector needs numpy and OpenCV, which are not installed ({e}); "
            f'install them with pip install dashspool or set type = "none".'
        ) from None


def open_cpu(
    path: Path,
    settings: YoloSettings,
    *,
    classes: Sequence[str],
    where: str,
    fell_back: str = "",
) -> LiteRTDetector:
    """A LiteRT detector for the checked model file ``path``; ``fell_back`` says why the Edge
    TPU could not be used when this stands in for it."""
    import_yolo(where)
    try:
        litert = importlib.import_module("ai_edge_litert.interpreter")  # untyped: no stubs
    except ImportError:
        raise ConfigError(
            f"{where}: the litert detector needs the ai-edge-litert package, which is not "
            f"installed; install it with pip install 'dashspool[edge]' or set type = \"none\"."
        ) from None
    from stages.detectors.yolo import YoloModel, first_line

    key = "fallback_model" if fell_back else "model"
    try:
        interpreter = litert.Interpreter(model_path=str(path), num_threads=settings.threads)
    except ValueError as e:
        raise ConfigError(
            f"{where}.{key}: {path} is not a valid TensorFlow Lite model ({first_line(e)}); "
            f"replace it with a complete YOLOv8 .tflite export."
        ) from None
    model = YoloModel.open(
        interpreter,
        path=path,
        where=where,
        key=key,
        classes=classes,
        min_score=settings.min_score,
        iou=settings.iou,
        max_detections=settings.max_detections,
    )
    runs_on = f"CPU, {settings.threads} threads"
    if fell_back:
        runs_on += f"; edgetpu fell back to CPU: {fell_back}"
    description = f"litert {path.name} ({runs_on})"
    log.info("detector: %s", description)
    return LiteRTDetector(model, description)
