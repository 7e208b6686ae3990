"""YOLOv8 detection models in TensorFlow Lite: what goes in, what comes out.

Shared by the ``litert`` and ``edgetpu`` backends, which differ only in how they make the
interpreter. Ultralytics' TFLite exports (``yolo export format=tflite int8=True``, and the
``edgetpu`` export built from it) all look alike:

* one input ``[1, H, W, 3]`` (640x640 for the stock models), RGB scaled to 0..1 and, in integer
  models, quantised with the input's scale and zero point. The image is letterboxed the way
  Ultralytics trains: resized so its longer side fits, centred, and padded with grey 114;
* one output ``[1, 4 + nc, anchors]`` (some exports transpose it to ``[1, anchors, 4 + nc]``),
  dequantised with the output's scale and zero point: rows 0-3 are the box centre and size
  *normalised to the input* (Ultralytics normalises them in TFLite exports so that int8 can hold
  them), the other rows are per-class scores, already through a sigmoid;
* the class names live in a zip appended to the flatbuffer (``temp_meta.txt``, a Python dict
  literal, or ``metadata.json`` from newer exports), so the model file is self-describing.

Image preparation stays in uint8 until the last step, where a 256-entry table maps a pixel
straight to the quantised input value (``cv2.LUT``): no float arrays of the whole input. Only
the output rows of the classes of interest are dequantised. Non-maximum suppression is OpenCV's
class-aware ``cv2.dnn.NMSBoxesBatched``.
"""

from __future__ import annotations

import ast
import difflib
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from stages.detectors import Detection
from watchers.errors import ConfigError

log = logging.getLogger(__name__)

PAD_VALUE = 114  # Ultralytics' letterbox grey
METADATA_MEMBERS = ("metadata.json", "temp_meta.txt")  # newer exports first
MAX_METADATA_BYTES = 1 << 20
TENSOR_DTYPES = (np.uint8, np.int8, np.float32)  # what the input table and dequantising handle

# The 80 COCO classes in Ultralytics' order: the names of a model without metadata and 80 classes.
COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


class Interpreter(Protocol):
    """The part of a TFLite interpreter (ai-edge-litert's or pycoral's) this module uses."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict[str, Any]]: ...
    def get_output_details(self) -> list[dict[str, Any]]: ...
    def set_tensor(self, tensor_index: int, value: Any) -> None: ...
    def invoke(self) -> None: ...
    def get_tensor(self, tensor_index: int) -> Any: ...


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (TFLite's are often several lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# --- letterbox -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where an image of ``width`` x ``height`` lies inside the model input: scaled by
    (``scale_x``, ``scale_y``) to ``inner_width`` x ``inner_height`` and shifted by
    (``left``, ``top``)."""

    width: int
    height: int
    inner_width: int
    inner_height: int
    left: int
    top: int

    @property
    def scale_x(self) -> float:
        return self.inner_width / self.width

    @property
    def scale_y(self) -> float:
        return self.inner_height / self.height

    def to_source(self, boxes: NDArray[np.float32]) -> NDArray[np.float32]:
        """``[K, 4]`` x1, y1, x2, y2 boxes in input pixels → source pixels, clipped to it."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.left) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.top) / self.scale_y
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


def fit(width: int, height: int, size: tuple[int, int]) -> Letterbox:
    """The letterbox of a ``width`` x ``height`` image in an input of ``size`` (width, height):
    as large as fits with the aspect ratio kept, centred."""
    in_w, in_h = size
    ratio = min(in_w / width, in_h / height)
    inner_w = min(in_w, max(1, round(width * ratio)))
    inner_h = min(in_h, max(1, round(height * ratio)))
    return Letterbox(width, height, inner_w, inner_h, (in_w - inner_w) // 2, (in_h - inner_h) // 2)


def letterbox(
    rgb: NDArray[np.uint8], size: tuple[int, int], lut: NDArray[Any] | None = None
) -> tuple[NDArray[Any], Letterbox]:
    """``rgb`` fitted into ``size`` (width, height) and padded with grey; with ``lut`` (256
    entries) every pixel is mapped through it, so the result has the table's dtype."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or 0 in rgb.shape:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    height, width = rgb.shape[:2]
    box = fit(width, height, size)
    inner: NDArray[Any] = np.ascontiguousarray(rgb)
    if (box.inner_width, box.inner_height) != (width, height):
        # INTER_AREA averages whole blocks of pixels, which keeps small distant objects from
        # aliasing away when a 4K frame shrinks to 640; for milder shrinking bilinear is as good
        # and cheaper (and is what Ultralytics trains with).
        shrink = min(box.scale_x, box.scale_y)
        interpolation = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR
        inner = cv2.resize(inner, (box.inner_width, box.inner_height), interpolation=interpolation)
    pad: Any = PAD_VALUE
    if lut is not None:
        inner = cv2.LUT(inner, lut)
        pad = lut[PAD_VALUE]
    out = np.full((size[1], size[0], 3), pad, dtype=inner.dtype)
    out[box.top : box.top + box.inner_height, box.left : box.left + box.inner_width] = inner
    return out, box


def input_table(dtype: Any, quantization: tuple[float, int]) -> NDArray[Any]:
    """The 256-entry table from an RGB byte to the model's input value (x / 255, quantised)."""
    x = np.arange(256, dtype=np.float64) / 255.0
    kind = np.dtype(dtype)
    if kind == np.float32:
        return x.astype(np.float32)
    scale, zero_point = quantization
    if scale == 0:  # an integer input without quantisation takes the raw 0..255 value
        return np.arange(256).astype(kind)
    info = np.iinfo(kind)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(kind)


# --- decode --------------------------------------------------------------------------------


def decode(
    pred: NDArray[np.float32],
    *,
    input_size: tuple[int, int],
    min_score: float,
    iou: float,
    max_detections: int,
    class_ids: NDArray[np.intp] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    """Boxes, scores and class ids from a dequantised YOLOv8 head, best first.

    ``pred`` is ``[4 + k, anchors]``: normalised cx, cy, w, h, then k class-score rows. Row
    ``4 + i`` holds class ``class_ids[i]`` (class ``i`` without ``class_ids``). Each anchor
    keeps its best class; anchors under ``min_score`` are dropped; boxes of one class that
    overlap by more than ``iou`` are suppressed. Boxes come back as ``[K, 4]`` x1, y1, x2, y2 in
    input pixels.
    """
    scores_all = pred[4:]
    if scores_all.shape[0] == 0 or scores_all.shape[1] == 0:
        return _empty()
    best = scores_all.argmax(axis=0)
    scores = np.take_along_axis(scores_all, best[np.newaxis], axis=0)[0]
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return _empty()
    scores = scores[keep].astype(np.float32)
    classes = best[keep] if class_ids is None else class_ids[best[keep]]
    in_w, in_h = input_size
    cx, cy, w, h = (pred[i, keep].astype(np.float32) for i in range(4))
    cx, w = cx * in_w, w * in_w
    cy, h = cy * in_h, h * in_h
    xywh = np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)
    # top_k stays 0: OpenCV applies it before suppression, which could return fewer than asked.
    picked = cv2.dnn.NMSBoxesBatched(
        xywh,  # type: ignore[arg-type]  # the stubs say a list of boxes; an [N, 4] array is one
        scores,
        classes.astype(np.int32),
        min_score,
        iou,
    )
    idx = np.asarray(picked, dtype=np.intp).reshape(-1)
    idx = idx[np.argsort(-scores[idx], kind="stable")][:max_detections]
    x1y1 = xywh[idx, :2]
    boxes = np.concatenate([x1y1, x1y1 + xywh[idx, 2:]], axis=1).astype(np.float32)
    return boxes, scores[idx], classes[idx].astype(np.intp)


def detections(
    boxes: NDArray[np.float32],
    scores: NDArray[np.float32],
    classes: NDArray[np.intp],
    box: Letterbox,
    names: Sequence[str],
) -> list[Detection]:
    """:func:`decode`'s output as :class:`Detection` objects in the source image's pixels."""
    found = []
    for (x1, y1, x2, y2), score, class_id in zip(
        np.rint(box.to_source(boxes)).astype(int).tolist(),
        scores.tolist(),
        classes.tolist(),
        strict=True,
    ):
        if x2 > x1 and y2 > y1:  # a box wholly in the padding vanishes when clipped
            found.append(Detection(names[class_id], class_id, score, (x1, y1, x2, y2)))
    return found


def _empty() -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.intp]]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.intp)


# --- the model -----------------------------------------------------------------------------


def class_names(path: Path) -> list[str] | None:
    """The class names from the Ultralytics metadata appended to ``path``, or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((m for m in METADATA_MEMBERS if m in zf.namelist()), None)
            if member is None or zf.getinfo(member).file_size > MAX_METADATA_BYTES:
                return None
            text = zf.read(member).decode("utf-8")
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError):
        return None
    try:
        meta = json.loads(text) if member.endswith(".json") else ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        log.warning("%s: unreadable %s in the model; ignoring it", path, member)
        return None
    return names_list(meta.get("names") if isinstance(meta, dict) else None)


def names_list(names: Any) -> list[str] | None:
    """Ultralytics' ``names`` (``{0: 'person', ...}`` or a list) as a list, or None when it is
    not a complete, numbered set of strings."""
    if isinstance(names, dict):
        try:
            by_id = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            return None
        if sorted(by_id) != list(range(len(by_id))):
            return None
        return [by_id[i] for i in range(len(by_id))]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


class YoloModel:
    """A YOLOv8 detection model on an allocated interpreter: :meth:`detect` an RGB image."""

    def __init__(
        self,
        interpreter: Interpreter,
        *,
        path: Path,
        names: Sequence[str],
        classes: Sequence[int],
        min_score: float,
        iou: float,
        max_detections: int,
    ) -> None:
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self.path = path
        self.names = tuple(names)
        self.input_size = (int(inp["shape"][2]), int(inp["shape"][1]))
        self.min_score, self.iou, self.max_detections = min_score, iou, max_detections
        self._interpreter: Interpreter | None = interpreter
        self._input_index = int(inp["index"])
        self._output_index = int(out["index"])
        self._table = input_table(inp["dtype"], inp["quantization"])
        self._transpose = int(out["shape"][1]) > int(out["shape"][2])
        scale, zero_point = out["quantization"]
        self._out_scale = np.float32(scale if scale else 1.0)
        self._out_zero = np.float32(zero_point if scale else 0.0)
        ids = sorted(set(classes))
        all_classes = len(ids) in (0, len(self.names))
        self._class_ids = None if all_classes else np.array(ids, dtype=np.intp)
        self._rows = None if all_classes else np.array([0, 1, 2, 3] + [4 + i for i in ids])

    @classmethod
    def open(
        cls,
        interpreter: Interpreter,
        *,
        path: Path,
        where: str,
        key: str = "model",
        classes: Sequence[str],
        min_score: float,
        iou: float,
        max_detections: int,
    ) -> YoloModel:
        """Allocate ``interpreter`` (made from ``path``, the setting ``key`` of the table
        ``where``) and check that it is a YOLOv8 detection model that knows ``classes`` (empty:
        all); ConfigError naming the setting otherwise."""
        try:
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            if "edgetpu-custom-op" in str(e):
                raise ConfigError(
                    f"{where}.{key}: {path} is an Edge TPU model, compiled for a Coral, and cannot "
                    f"run on the CPU; point {key} at the CPU export of the model (the same name "
                    f'without _edgetpu), or set type = "edgetpu" to run it on a Coral.'
                ) from None
            raise ConfigError(
                f"{where}.{key}: cannot prepare {path} ({first_line(e)}); use a YOLOv8 .tflite "
                f"export that LiteRT can run."
            ) from None
        ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
        in_shape = [int(d) for d in ins[0]["shape"]] if len(ins) == 1 else None
        out_shape = [int(d) for d in outs[0]["shape"]] if len(outs) == 1 else None
        if (
            in_shape is None
            or out_shape is None
            or len(in_shape) != 4
            or in_shape[0] != 1
            or in_shape[3] != 3
            or min(in_shape) < 1
            or len(out_shape) != 3
            or out_shape[0] != 1
            or min(out_shape[1:]) < 5
        ):
            shapes = [[int(n) for n in d["shape"]] for d in (*ins, *outs)]
            got = f"inputs {shapes[: len(ins)]}, outputs {shapes[len(ins) :]}"
            raise ConfigError(
                f"{where}.{key}: {path} is not a YOLOv8 detection model ({got}; expected one input "
                f"[1, height, width, 3] and one output [1, 4 + classes, anchors]); export one with "
                f"`yolo export model=yolov8n.pt format=tflite int8=True`."
            )
        bad_dtype = next(
            (d["dtype"] for d in (ins[0], outs[0]) if np.dtype(d["dtype"]) not in TENSOR_DTYPES),
            None,
        )
        if bad_dtype is not None:
            raise ConfigError(
                f"{where}.{key}: {path} uses {np.dtype(bad_dtype).name} tensors, which this "
                f"detector does not read (uint8, int8 or float32); use an int8 or float32 export."
            )
        nc = min(out_shape[1:]) - 4
        names = class_names(path)
        if names is None:
            if nc != len(COCO80):
                raise ConfigError(
                    f"{where}.{key}: {path} has {nc} classes but no class names in its metadata; "
                    f"export it with Ultralytics, which stores them in the file."
                )
            log.info("%s has no class names in its metadata; assuming the 80 COCO classes", path)
            names = list(COCO80)
        if len(names) != nc:
            raise ConfigError(
                f"{where}.{key}: {path} outputs {nc} class scores but its metadata names "
                f"{len(names)} classes; re-export the model."
            )
        unknown = [c for c in classes if c not in names]
        if unknown:
            close = [m for c in unknown for m in difflib.get_close_matches(c, names, 1)]
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise ConfigError(
                f"{where}: the model {path.name} knows no class "
                f"{', '.join(map(repr, unknown))}{hint}; use its names, such as "
                f"{', '.join(map(repr, names[:8]))} ({len(names)} in all)."
            )
        return cls(
            interpreter,
            path=path,
            names=names,
            classes=[names.index(c) for c in classes],
            min_score=min_score,
            iou=iou,
            max_detections=max_detections,
        )

    def detect(self, rgb: NDArray[Any]) -> list[Detection]:
        """The configured classes in ``rgb`` (HxWx3 uint8 RGB), best first, in its pixels."""
        if self._interpreter is None:
            raise RuntimeError(f"the detector for {self.path} is closed")
        image, box = letterbox(rgb, self.input_size, self._table)
        self._interpreter.set_tensor(self._input_index, image[np.newaxis])
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output_index)[0]
        if self._transpose:
            raw = raw.T
        if self._rows is not None:
            raw = raw[self._rows]
        pred = (raw.astype(np.float32) - self._out_zero) * self._out_scale
        boxes, scores, classes = decode(
            pred,
            input_size=self.input_size,
            min_score=self.min_score,
            iou=self.iou,
            max_detections=self.max_detections,
            class_ids=self._class_ids,
        )
        return detections(boxes, scores, classes, box, self.names)

    def close(self) -> None:
        self._interpreter = None
