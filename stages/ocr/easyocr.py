"""The ``easyocr`` engine: JaidedAI's EasyOCR (CRAFT text detector + a CRNN recogniser), on
PyTorch, for the GPU machine.

EasyOCR is what the heavy machine's owner runs: on a CUDA GPU it reads many crops quickly, and
it is a second opinion beside rapidocr. It is not a dependency of dashspool (it pulls in
PyTorch); install it on the GPU machine with ``pip install easyocr``.

Its weights are not in the wheel: on first use EasyOCR downloads ``craft_mlt_25k.pth`` (the
detector) and a recogniser (``english_g2.pth`` for English, ``latin_g2.pth`` for other Latin
scripts) into ``~/.EasyOCR/model``. The heavy machine may be offline, and a download in the
middle of a job is no way to find that out, so :func:`missing_weights` looks for the files before
the reader is made, and the reader is made with ``download_enabled=False``: a missing or
damaged file stops the watcher at start, naming the file, the folder and how to fetch it.

**Untested here**: easyocr is not installed on the development machine, so only the
not-installed error, the weights check and the conversion of EasyOCR's documented result format
(against a stand-in reader) are tested; real recognition through this module has not been run.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
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

log = logging.getLogger(__name__)

DETECTOR_WEIGHTS = "craft_mlt_25k.pth"
# EasyOCR's Latin-script languages (easyocr/config.py): all read by one recogniser, latin_g2.
# fmt: off
LATIN = frozenset({
    "af", "az", "bs", "cs", "cy", "da", "de", "en", "es", "et", "fr", "ga", "hr", "hu", "id",
    "is", "it", "ku", "la", "lt", "lv", "mi", "ms", "mt", "nl", "no", "oc", "pi", "pl", "pt",
    "ro", "rs_latin", "sk", "sl", "sq", "sv", "sw", "tl", "tr", "uz", "vi",
})
# fmt: on
FETCH_HINT = (
    'on a machine with internet, python -c "import easyocr; easyocr.Reader({langs})" '
    "downloads them to ~/.EasyOCR/model; copy them into that folder"
)


class EasyOcrSettings(OcrBackendSettings):
    type: Literal["easyocr"] = "easyocr"
    model_dir: str = Field(
        "", description="folder of EasyOCR's .pth weights; empty: EasyOCR's ~/.EasyOCR/model"
    )
    languages: tuple[str, ...] = Field(("en",), min_length=1, description="EasyOCR codes")
    gpu: bool = Field(True, description="run on CUDA (EasyOCR falls back to the CPU without)")

    def build(self, *, resolve: Callable[[str], Path], where: str) -> OcrEngine:
        try:
            easyocr = importlib.import_module("easyocr")  # untyped: no stubs
        except ImportError:
            raise ConfigError(
                f"{where}: the easyocr engine needs the easyocr package, which is not "
                f"installed; install it with pip install easyocr (on the GPU machine) or set "
                f'type = "rapidocr".'
            ) from None
        folder = resolve(self.model_dir) if self.model_dir else default_model_dir()
        missing = missing_weights(folder, self.languages)
        if missing:
            raise ConfigError(
                f"{where}.model_dir: EasyOCR's weights {', '.join(missing)} are missing from "
                f"{folder}, and downloads are off; "
                f"{FETCH_HINT.format(langs=list(self.languages))} or set model_dir to where "
                f"they are."
            )
        try:
            reader = easyocr.Reader(
                list(self.languages),
                gpu=self.gpu,
                model_storage_directory=str(folder),
                download_enabled=False,
                verbose=False,
            )
        except FileNotFoundError as e:  # a damaged file (MD5 mismatch), or another recogniser
            raise ConfigError(
                f"{where}.model_dir: EasyOCR cannot load its weights from {folder} ({e}); "
                f"{FETCH_HINT.format(langs=list(self.languages))}."
            ) from None
        except ValueError as e:  # a language EasyOCR does not know, or cannot combine
            raise ConfigError(f"{where}.languages: EasyOCR refuses {self.languages}: {e}") from None
        device = str(getattr(reader, "device", "cpu"))
        if self.gpu and device == "cpu":
            log.warning("%s: no CUDA device for EasyOCR; it runs on the CPU (slowly)", where)
        ocr = EasyOcrEngine(reader, f"easyocr {'+'.join(self.languages)} ({device}, {folder})")
        log.info("OCR: %s", ocr.describe())
        return ocr


class EasyOcrEngine(OcrEngine):
    """An ``easyocr.Reader`` behind the :class:`OcrEngine` interface."""

    name = "easyocr"

    def __init__(self, reader: Any, description: str) -> None:
        self.reader = reader
        self._description = description

    def read(self, image_bgr: NDArray[Any]) -> list[TextRead]:
        if not check_image(image_bgr):
            return []
        # readtext takes BGR (or grey) arrays: [(quadrilateral, text, confidence), ...]
        found = self.reader.readtext(image_bgr, detail=1, paragraph=False)
        h, w = image_bgr.shape[:2]
        reads = [
            TextRead(str(text).strip(), _unit(conf), polygon_box(points, w, h))
            for points, text, conf in found
            if str(text).strip()
        ]
        return reading_order(reads)

    def read_line(self, image_bgr: NDArray[Any]) -> TextRead | None:
        if not check_image(image_bgr):
            return None
        # recognize without boxes reads the whole image as one horizontal box
        found = self.reader.recognize(image_bgr, detail=1)
        if not found or not str(found[0][1]).strip():
            return None
        _, text, conf = found[0]
        return TextRead(str(text).strip(), _unit(conf))

    def describe(self) -> str:
        return self._description


def default_model_dir() -> Path:
    """Where EasyOCR keeps its weights when not told: ``$EASYOCR_MODULE_PATH/model`` (or
    ``$MODULE_PATH/model``), else ``~/.EasyOCR/model``."""
    base = os.environ.get("EASYOCR_MODULE_PATH") or os.environ.get("MODULE_PATH")
    return Path(base or Path.home() / ".EasyOCR") / "model"


def required_weights(languages: Sequence[str]) -> list[str]:
    """The weight files EasyOCR will load for ``languages``: the detector, and the recogniser
    when it is one of the Latin-script ones (English alone, else latin_g2). For other scripts the
    recogniser's name is left to EasyOCR, which reports it when it is missing."""
    names = [DETECTOR_WEIGHTS]
    if list(languages) == ["en"]:
        names.append("english_g2.pth")
    elif languages and set(languages) <= LATIN:
        names.append("latin_g2.pth")
    return names


def missing_weights(folder: Path, languages: Sequence[str]) -> list[str]:
    """The names from :func:`required_weights` that are not files in ``folder``."""
    return [name for name in required_weights(languages) if not (folder / name).is_file()]


def _unit(conf: Any) -> float:
    return min(max(float(conf), 0.0), 1.0)
