"""The ``none`` detector: finds nothing and loads nothing.

For machines that should cut, index and forward clips without looking inside them (a NAS with no
accelerator and little CPU to spare), and for tests of the stage around the detector. It needs
neither numpy, OpenCV nor a model file, so it is also the safe default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stages.detectors import BackendSettings, Detection, Detector

if TYPE_CHECKING:
    from numpy.typing import NDArray

log = logging.getLogger(__name__)


class NoneSettings(BackendSettings):
    type: Literal["none"] = "none"

    def build(
        self, *, classes: Sequence[str], resolve: Callable[[str], Path], where: str
    ) -> Detector:
        return NoneDetector()


class NoneDetector(Detector):
    name = "none"

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None

    def detect(self, rgb: NDArray[Any]) -> list[Detection]:
        return []

    def describe(self) -> str:
        return "none (no object detection)"
