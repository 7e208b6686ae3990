"""Light object detectors for the preprocess stage: one backend per module, picked by ``type``.

The preprocess stage runs on small machines (a Jetson, a Raspberry Pi with a Coral, a NAS with
nothing) and only needs to know roughly what is in a frame: cars, people, bikes. So a detector
is a small thing with one method, :meth:`Detector.detect`, and each way of running a YOLOv8
model is one module in this folder with its own settings model, chosen in policies.toml by a
``type`` field the way Frigate picks its detector plugins::

    [stages.preprocess.detector]
    type = "edgetpu"
    fallback_model = "models/yolov8n_full_integer_quant.tflite"

Backends: ``none`` (detects nothing; for machines that only cut and index), ``litert`` (a
YOLOv8 ``.tflite`` on the CPU with ai-edge-litert) and ``edgetpu`` (the same model compiled for
a Coral Edge TPU, optionally falling back to the CPU). A new backend is one new module and one
entry in :data:`DetectorSettings`, the registry below.

Everything that can go wrong with a model (missing file, not a model, an Edge TPU model on the
CPU, a head that is not YOLOv8, class names the model does not know, no Coral) goes wrong inside
:func:`build_detector` as a :class:`watchers.errors.ConfigError`, so a watcher refuses to start
instead of failing jobs later. Importing this package needs only pydantic: numpy, OpenCV and
ai-edge-litert are imported when a backend is built, so a NAS without them can still parse a
policies file that names a detector.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "BackendSettings",
    "Detection",
    "Detector",
    "DetectorSettings",
    "EdgeTPUSettings",
    "LiteRTSettings",
    "NoneSettings",
    "OnnxSettings",
    "UltralyticsSettings",
    "build_detector",
]


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    label: str  # class name from the model's metadata, e.g. "car"
    class_id: int  # index into the model's class names
    score: float  # 0..1
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the image given to detect()

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 3), "box": list(self.box)}


class Detector(ABC):
    """A loaded detector. Build one with :func:`build_detector`; use it from one thread at a
    time; :meth:`close` it (or use it as a context manager) when done."""

    name: ClassVar[str]  # the backend's ``type``: "none", "litert", "edgetpu"

    @property
    @abstractmethod
    def input_size(self) -> tuple[int, int] | None:
        """(width, height) of the model input, or None when there is no model."""

    @abstractmethod
    def detect(self, rgb: NDArray[Any]) -> list[Detection]:
        """Objects of the configured classes in an HxWx3 uint8 RGB image of any size, after
        non-maximum suppression, best first. Boxes are in the pixels of ``rgb``."""

    def detect_batch(self, images: Sequence[NDArray[Any]]) -> list[list[Detection]]:
        """:meth:`detect` for each image; backends that run batches override it."""
        return [self.detect(image) for image in images]

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and status: backend, model file, where it runs."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release the model. The detector cannot be used afterwards."""

    def __enter__(self) -> Detector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class BackendSettings(BaseModel):
    """Base of every backend's settings: ``type`` picks the backend, :meth:`build` loads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(
        self, *, classes: Sequence[str], resolve: Callable[[str], Path], where: str
    ) -> Detector:
        raise NotImplementedError  # pragma: no cover - every backend overrides it


# The backends import Detector and BackendSettings from this module, so they come after them.
from stages.detectors.edgetpu import EdgeTPUSettings  # noqa: E402
from stages.detectors.litert import LiteRTSettings  # noqa: E402
from stages.detectors.none import NoneSettings  # noqa: E402
from stages.detectors.onnx import OnnxSettings  # noqa: E402
from stages.detectors.ultralytics_yolo import UltralyticsSettings  # noqa: E402

# The registry: one settings model per backend, told apart by its `type`.
DetectorSettings = Annotated[
    NoneSettings | LiteRTSettings | EdgeTPUSettings | OnnxSettings | UltralyticsSettings,
    Field(discriminator="type"),
]


def build_detector(
    settings: DetectorSettings,
    *,
    classes: Sequence[str],
    resolve: Callable[[str], Path],
    where: str,
) -> Detector:
    """Load the detector ``settings`` describe, or raise :class:`watchers.errors.ConfigError`.

    ``classes`` are the class names to report (empty: all the model knows); ``resolve`` turns a
    model path from the policies file into an absolute path; ``where`` names the settings table
    in messages, e.g. ``"policies.toml: stages.preprocess.detector"``.
    """
    return settings.build(classes=tuple(classes), resolve=resolve, where=where)
