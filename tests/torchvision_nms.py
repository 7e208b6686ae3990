"""Test/CI environment only: a pure-torch ``torchvision::nms`` for a torchvision whose compiled
ops do not load.

On this CPU-only machine the only torchvision that matches torch 2.13 is a CUDA build; its
compiled ops need libtorch_cuda and ``import ultralytics`` then fails at prediction with
``operator torchvision::nms does not exist``. Registering this implementation makes Ultralytics
work (its output matched Ultralytics' own NMS in a check). It does nothing when the real op is
there (a GPU machine, a CPU torchvision), and it is never part of the product.
"""

from __future__ import annotations

from typing import Any

import torch

_library: Any = None  # the registration lives as long as this object


def install() -> bool:
    """Register the fallback if the real op is missing; True when it was registered."""
    global _library
    if _library is not None or _loads():
        return False
    # torchvision registers fake kernels for both at import: both must exist before it loads
    _library = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.impl(op, _nms, "CPU")
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # torchvision.ops.nms checks this first
    return True


def _loads() -> bool:
    """Whether torchvision's compiled ops load (checked in a child process: a failed import
    leaves the op namespace half registered in this one)."""
    import subprocess
    import sys

    code = "import torch, torchvision; torch.ops.torchvision.nms"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = scores.argsort(descending=True)
    boxes = boxes[order]
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep: list[int] = []
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[i + 1 :, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[i + 1 :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        iou = inter / (area[i] + area[i + 1 :] - inter).clamp(min=1e-9)
        suppressed[i + 1 :] |= iou > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]
