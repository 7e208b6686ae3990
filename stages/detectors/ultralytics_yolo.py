"""The ``ultralytics`` detector: YOLO ``.pt`` weights with PyTorch, the owner's choice for the
GPU machine (an RTX 4090): ``device = "cuda:0"``, frames in batches of ``max_batch_size``.

Ultralytics does its own letterboxing, NMS and class filtering; this backend only turns
:meth:`detect_batch` calls into ``model.predict`` and its results into
:class:`~stages.detectors.Detection` lists. Offline hygiene: ``YOLO_OFFLINE=1`` (no network
probe at import), ``YOLO_AUTOINSTALL=False`` (no pip at run time) and a writable
``YOLO_CONFIG_DIR`` are set before Ultralytics is imported, unless the environment sets them.

``model`` is a weights file (``yolov8n.pt``); a missing one stops the watcher at start, naming
the file. A model *configuration* (``yolov8n.yaml``) builds random weights without any download:
right shapes, meaningless boxes, for testing the plumbing only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from stages.detectors import Detection, Detector
from stages.detectors.litert import YoloSettings
from watchers.errors import ConfigError

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)


def offline_environment() -> None:
    """Ultralytics' settings for a machine without internet (kept if already set)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault(
        "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "dashspool-ultralytics")
    )


class UltralyticsSettings(YoloSettings):
    type: Literal["ultralytics"] = "ultralytics"
    model: str = Field("models/yolov8n.pt", min_length=1)
    device: str = Field("cpu", description='"cpu", "cuda:0" (or "0"), "mps"')
    max_batch_size: int = Field(8, ge=1, le=256, description="frames per forward pass")
    imgsz: int = Field(640, ge=32, description="inference size (pixels, a multiple of 32)")
    half: bool = Field(False, description="FP16 inference (CUDA only)")

    def build(
        self, *, classes: Sequence[str], resolve: Callable[[str], Path], where: str
    ) -> Detector:
        random_weights = self.model.endswith((".yaml", ".yml"))
        path = Path(self.model) if random_weights else resolve(self.model)
        if not random_weights and not path.is_file():
            raise ConfigError(
                f"{where}.model: no weights file at {path}; on a machine with internet, "
                f"`dashspool models fetch --name {path.stem}` downloads it into models/: copy "
                f"it there."
            )
        offline_environment()
        try:
            from ultralytics import YOLO  # type: ignore[attr-defined]
        except ImportError as e:
            raise ConfigError(
                f"{where}: the ultralytics detector needs the ultralytics package ({e}); "
                f'install it on the GPU machine (see docs), or use type = "onnx".'
            ) from None
        device = self.device
        if device.startswith("cuda") or device.isdigit():
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"{where}.device: {device!r} asks for CUDA, but this PyTorch sees no GPU "
                    f'(torch {torch.__version__}); install a CUDA build or set device = "cpu".'
                )
        try:
            model = YOLO(str(path), task="detect")
        except Exception as e:  # ultralytics raises many kinds for a bad file
            raise ConfigError(f"{where}.model: cannot load {path}: {e}") from None
        names = [str(model.names[i]) for i in sorted(model.names)]
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ConfigError(
                f"{where}: the model {path.name} knows no class {', '.join(map(repr, unknown))}; "
                f"use its names, such as {', '.join(map(repr, names[:8]))}."
            )
        if random_weights:
            log.warning("%s: %s has random weights: its detections mean nothing", where, path)
        return UltralyticsDetector(
            model, self, names, [names.index(c) for c in classes], path, random_weights
        )


class UltralyticsDetector(Detector):
    name = "ultralytics"

    def __init__(
        self,
        model: Any,
        settings: UltralyticsSettings,
        names: Sequence[str],
        classes: Sequence[int],
        path: Path,
        random_weights: bool,
    ) -> None:
        self.model, self.settings, self.names = model, settings, tuple(names)
        self._classes = sorted(set(classes)) or None
        self._path, self._random = path, random_weights

    @property
    def input_size(self) -> tuple[int, int] | None:
        return (self.settings.imgsz, self.settings.imgsz)

    def describe(self) -> str:
        extra = ", random weights" if self._random else ""
        return f"ultralytics {self._path.name} ({self.settings.device}{extra})"

    def detect(self, rgb: NDArray[Any]) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, images: Sequence[NDArray[Any]]) -> list[list[Detection]]:
        s = self.settings
        out: list[list[Detection]] = []
        for start in range(0, len(images), s.max_batch_size):
            chunk = [img[:, :, ::-1] for img in images[start : start + s.max_batch_size]]  # BGR
            results = self.model.predict(
                chunk,
                imgsz=s.imgsz,
                conf=s.min_score,
                iou=s.iou,
                max_det=s.max_detections,
                classes=self._classes,
                device=s.device,
                verbose=False,
                **({"half": True} if s.half else {}),  # the default needs no flag (8.4 warns)
            )
            for r in results:
                boxes = r.boxes.cpu().numpy()
                found = []
                for (x1, y1, x2, y2), score, cls in zip(
                    boxes.xyxy.round().astype(int).tolist(),
                    boxes.conf.tolist(),
                    boxes.cls.astype(int).tolist(),
                    strict=True,
                ):
                    if x2 > x1 and y2 > y1:
                        found.append(
                            Detection(self.names[cls], cls, float(score), (x1, y1, x2, y2))
                        )
                out.append(found)
        return out
