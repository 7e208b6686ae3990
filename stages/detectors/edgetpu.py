"""The ``edgetpu`` detector: a YOLOv8 model compiled for a Coral Edge TPU.

A Coral (USB stick or M.2/PCIe card) runs the compiled model's convolutions in a few
milliseconds, which leaves a Raspberry Pi's or an old NAS's CPU free for cutting video. The
compiled ``*_edgetpu.tflite`` holds one ``edgetpu-custom-op`` that only Coral's runtime
(libedgetpu) can execute, so the interpreter is made with Coral's delegate:

1. with Coral's own ``pycoral`` (from Coral's Debian/pip repository) when it is installed:
   ``pycoral.utils.edgetpu.make_interpreter``. A different, unrelated project is published on
   PyPI under the same name, so it only counts when it really has that function;
2. otherwise with ai-edge-litert and ``load_delegate("libedgetpu.so.1")`` (``.dylib`` on macOS,
   ``edgetpu.dll`` on Windows).

``device`` picks one Coral among several ("usb", "usb:0", "pci:0", ":0" the first of any kind;
empty: the first found). When the runtime or the device cannot be opened the watcher refuses to
start, unless ``fallback_model`` names a CPU ``.tflite``: then it logs a warning and runs that
model with the ``litert`` backend, and ``describe()`` says so. Model files are checked first, so
a wrong path is reported even on a machine that has no Coral.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stages.detectors import Detector
from stages.detectors.litert import LiteRTDetector, YoloSettings, import_yolo, model_file, open_cpu
from watchers.errors import ConfigError

log = logging.getLogger(__name__)

DEVICE_PATTERN = r"^(|usb|pci|usb:\d+|pci:\d+|:\d+)$"
LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


class EdgeTPUSettings(YoloSettings):
    type: Literal["edgetpu"] = "edgetpu"
    model: str = Field("models/yolov8n_full_integer_quant_edgetpu.tflite", min_length=1)
    device: str = Field(
        "",
        pattern=DEVICE_PATTERN,
        description='Edge TPU to use: "usb", "usb:0", "pci:0", ":0"; empty: the first found',
    )
    fallback_model: str = Field(
        "",
        description="CPU .tflite run when the Edge TPU cannot be opened; empty: refuse to start",
    )

    def build(
        self, *, classes: Sequence[str], resolve: Callable[[str], Path], where: str
    ) -> Detector:
        path = model_file(resolve(self.model), f"{where}.model")
        fallback = None
        if self.fallback_model:
            fallback = model_file(resolve(self.fallback_model), f"{where}.fallback_model")
        import_yolo(where)
        try:
            interpreter, via = open_interpreter(path, self.device, self.threads, where)
        except Unavailable as e:
            if fallback is None:
                raise ConfigError(
                    f"{where}: the Edge TPU runtime or device could not be opened ({e}); install "
                    f"libedgetpu1-std from Coral's package repository and plug in the Coral, or "
                    f"set fallback_model to a CPU .tflite to run without it."
                ) from None
            log.warning(
                "%s: the Edge TPU runtime or device could not be opened (%s); running %s on the "
                "CPU instead",
                where,
                e,
                fallback,
            )
            return open_cpu(fallback, self, classes=classes, where=where, fell_back=str(e))
        from stages.detectors.yolo import YoloModel

        model = YoloModel.open(
            interpreter,
            path=path,
            where=where,
            classes=classes,
            min_score=self.min_score,
            iou=self.iou,
            max_detections=self.max_detections,
        )
        if not has_edgetpu_op(path):
            log.warning(
                "%s.model: %s is not compiled for the Edge TPU and runs wholly on the CPU; "
                "compile it with edgetpu_compiler",
                where,
                path,
            )
        description = f"edgetpu {path.name} (Edge TPU {self.device or 'first found'}, {via})"
        log.info("detector: %s", description)
        return EdgeTPUDetector(model, description)


class EdgeTPUDetector(LiteRTDetector):
    """The same model I/O as ``litert``; only the interpreter differs."""

    name = "edgetpu"


class Unavailable(Exception):
    """The Edge TPU runtime or device cannot be opened; ``str()`` says why."""


def open_interpreter(path: Path, device: str, threads: int, where: str) -> tuple[Any, str]:
    """An interpreter for ``path`` with the Edge TPU delegate, and what made it ("pycoral" or
    "ai-edge-litert"). Raises :class:`Unavailable` when the runtime or device is missing."""
    make_interpreter = pycoral_make_interpreter()
    if make_interpreter is not None:
        try:
            return make_interpreter(str(path), device=device or None), "pycoral"
        except (ValueError, OSError, RuntimeError) as e:
            raise Unavailable(one_line(e)) from None
    try:
        litert = importlib.import_module("ai_edge_litert.interpreter")  # untyped: no stubs
    except ImportError:
        raise ConfigError(
            f"{where}: the edgetpu detector needs Coral's pycoral or the ai-edge-litert package, "
            f"and neither is installed; install ai-edge-litert with pip install 'dashspool[edge]'."
        ) from None
    library = LIBRARIES.get(platform.system(), LIBRARIES["Linux"])
    options = {"device": device} if device else {}
    try:
        delegate = load_delegate(litert, library, options)
        interpreter = litert.Interpreter(
            model_path=str(path), experimental_delegates=[delegate], num_threads=threads
        )
    except (ValueError, OSError, RuntimeError) as e:
        raise Unavailable(one_line(e)) from None
    return interpreter, "ai-edge-litert"


def pycoral_make_interpreter() -> Callable[..., Any] | None:
    """Coral's ``pycoral.utils.edgetpu.make_interpreter``, or None when Coral's pycoral is not
    installed (PyPI's unrelated ``pycoral`` lacks it)."""
    try:
        edgetpu = importlib.import_module("pycoral.utils.edgetpu")
    except Exception:  # not installed, or another package of that name that fails to import
        return None
    make = getattr(edgetpu, "make_interpreter", None)
    return make if callable(make) else None


def load_delegate(litert: Any, library: str, options: dict[str, str]) -> Any:
    """The Edge TPU delegate from ``library`` with ``options``, loaded by the ``litert``
    interpreter module."""
    # Load the library ourselves first: when it is missing, ai-edge-litert's Delegate fails
    # half-built and its finalizer then prints "Exception ignored ... no attribute '_library'".
    ctypes.CDLL(library)
    return litert.load_delegate(library, options or None)


def has_edgetpu_op(path: Path) -> bool:
    """Whether the model holds Coral's custom op (``edgetpu_compiler`` output)."""
    return b"edgetpu-custom-op" in path.read_bytes()


def one_line(exc: BaseException) -> str:
    """An exception's text on one line (TFLite's delegate errors span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
