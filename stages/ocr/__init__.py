"""OCR engines for the heavy stage: one backend per module, picked by ``type``.

Heavy reads two kinds of text: licence plates on small crops that :mod:`stages.plates` found,
and the burned-in overlay line of cameras that write their GPS onto the picture
(:mod:`stages.overlay`). Both are single lines whose position is already known, so the engine's
fast path is :meth:`OcrEngine.read_line` (recognition only, no text detection); the full
:meth:`OcrEngine.read` (find every line, then read it) is there for frames whose text has not
been located. Each engine is one module in this folder with its own settings model, chosen in
policies.toml by a ``type`` field the way the detectors are::

    [stages.heavy.ocr]
    type = "easyocr"
    gpu = true

Backends: ``rapidocr`` (PaddleOCR's PP-OCR models as ONNX on the CPU; the models ship inside the
wheel, so it works offline and is the default) and ``easyocr`` (PyTorch; the GPU machine's
choice, with weights that must be fetched once). A new backend is one new module and one entry in
:data:`OcrSettings`, the registry below.

Everything that can go wrong with an engine (package missing, weights missing, a model that will
not load) goes wrong inside :func:`build_ocr` as a :class:`watchers.errors.ConfigError`, so a
watcher refuses to start instead of failing jobs later. Importing this package needs only
pydantic: numpy and the OCR libraries are imported when an engine is built.
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
    "EasyOcrSettings",
    "OcrBackendSettings",
    "OcrEngine",
    "OcrSettings",
    "RapidOcrSettings",
    "TextRead",
    "build_ocr",
    "reading_order",
]

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class TextRead:
    """One line of text an engine read."""

    text: str  # as the engine read it, stripped of surrounding spaces
    confidence: float  # 0..1
    box: Box | None = None  # where in the input image, when the engine located the text

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "confidence": round(self.confidence, 3)}
        if self.box is not None:
            out["box"] = list(self.box)
        return out


class OcrEngine(ABC):
    """A loaded OCR engine. Build one with :func:`build_ocr`; use it from one thread at a time
    (the engines keep per-call state); :meth:`close` it (or use it as a context manager) when
    done. Images are HxWx3 uint8 BGR, the way OpenCV decodes them (HxW grey is accepted too)."""

    name: ClassVar[str]  # the backend's ``type``: "rapidocr", "easyocr"

    @abstractmethod
    def read(self, image_bgr: NDArray[Any]) -> list[TextRead]:
        """Every line of text in the image (detection, then recognition), each with its box,
        in reading order: top to bottom, left to right within a line."""

    @abstractmethod
    def read_line(self, image_bgr: NDArray[Any]) -> TextRead | None:
        """Recognition only: the whole image is taken as one line of text (a plate crop, an
        overlay strip). None when nothing was read. The result has no box."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and status: backend, models, where it runs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the models. The engine cannot be used afterwards."""

    def __enter__(self) -> OcrEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class OcrBackendSettings(BaseModel):
    """Base of every engine's settings: ``type`` picks the backend, :meth:`build` loads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def build(self, *, resolve: Callable[[str], Path], where: str) -> OcrEngine:
        raise NotImplementedError  # pragma: no cover - every backend overrides it


def check_image(image: NDArray[Any]) -> bool:
    """False for an empty image (nothing to read); ValueError for one that is not HxW or HxWx3
    uint8 (a caller's bug, not bad footage)."""
    if image.dtype.name != "uint8" or image.ndim not in (2, 3):
        raise ValueError(f"expected an HxW or HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] != 3:
        raise ValueError(f"expected 3 colour channels (BGR), got {image.shape[2]}")
    return bool(image.shape[0] > 0 and image.shape[1] > 0)


def polygon_box(points: Any, width: int, height: int) -> Box:
    """The upright box around an engine's quadrilateral ``[[x, y], ...]``, inside the image."""
    xs = [float(p[0]) for p in points]
    ys = [float(p[1]) for p in points]
    x1 = min(max(round(min(xs)), 0), width)
    y1 = min(max(round(min(ys)), 0), height)
    x2 = min(max(round(max(xs)), x1), width)
    y2 = min(max(round(max(ys)), y1), height)
    return (x1, y1, x2, y2)


def reading_order(reads: Sequence[TextRead]) -> list[TextRead]:
    """``reads`` top to bottom, and left to right within a line. Two boxes are on one line when
    the vertical centre of one lies within the other's height (overlay lines and the text on a
    sign are rarely perfectly level). Reads without a box keep their order, after the rest."""
    boxed = sorted((r for r in reads if r.box is not None), key=lambda r: _box(r)[1])
    lines: list[list[TextRead]] = []
    for r in boxed:
        _, y1, _, y2 = _box(r)
        centre = (y1 + y2) / 2
        if lines:
            _, ly1, _, ly2 = _box(lines[-1][0])
            if ly1 <= centre <= ly2 or y1 <= (ly1 + ly2) / 2 <= y2:
                lines[-1].append(r)
                continue
        lines.append([r])
    ordered = [r for line in lines for r in sorted(line, key=lambda r: _box(r)[0])]
    return ordered + [r for r in reads if r.box is None]


def _box(r: TextRead) -> Box:
    assert r.box is not None
    return r.box


# The backends import OcrEngine and OcrBackendSettings from this module, so they come after them.
from stages.ocr.easyocr import EasyOcrSettings  # noqa: E402
from stages.ocr.rapidocr import RapidOcrSettings  # noqa: E402

# The registry: one settings model per engine, told apart by its `type`.
OcrSettings = Annotated[RapidOcrSettings | EasyOcrSettings, Field(discriminator="type")]


def build_ocr(settings: OcrSettings, *, resolve: Callable[[str], Path], where: str) -> OcrEngine:
    """Load the engine ``settings`` describe, or raise :class:`watchers.errors.ConfigError`.

    ``resolve`` turns a path from the policies file into an absolute path; ``where`` names the
    settings table in messages, e.g. ``"policies.toml: stages.heavy.ocr"``.
    """
    return settings.build(resolve=resolve, where=where)
