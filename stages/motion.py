"""Is anything happening? Motion between samples and near-duplicates, on small grey frames.

Two measures, because they answer different questions:

- **motion score**: the share of pixels (0-1) that changed by more than ``pixel_threshold``
  grey levels since the previous *sample*, after a blur that hides sensor noise and
  compression shimmer. Driving footage scores high on every frame; a parked car's clip scores
  near zero except while something moves through the picture.
- **perceptual hash** (a 64-bit dHash, ``imagehash``): a fingerprint that barely changes when
  the picture barely changes. Frames whose hash is within ``duplicate_distance`` bits of the last
  *kept* frame are near-duplicates, which stops ten minutes at a red light (or one parked car in
  view) from sending hundreds of identical frames on.

A sudden change of light (headlights, a cloud) counts as motion: that is the safe side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import imagehash
import numpy as np
from numpy.typing import NDArray
from PIL import Image

Gray = NDArray[np.uint8]


@dataclass(frozen=True)
class Look:
    """What the filter saw in one sample."""

    motion: float  # 0-1: share of pixels that changed since the previous sample
    hash: imagehash.ImageHash

    @property
    def hash_hex(self) -> str:
        return str(self.hash)


class MotionFilter:
    """Feed the samples of one clip in order; one instance per clip."""

    def __init__(self, *, pixel_threshold: int = 25, blur_px: int = 5) -> None:
        self.pixel_threshold = pixel_threshold
        self.blur = blur_px | 1  # Gaussian kernels are odd
        self._previous: NDArray[Any] | None = None

    def look(self, gray: Gray) -> Look:
        """Motion since the previous sample (0 for the first: nothing to compare with) and
        the frame's hash. ``gray`` is a small (about 160 px wide) 8-bit grey image."""
        smooth = cv2.GaussianBlur(gray, (self.blur, self.blur), 0)
        if self._previous is None or self._previous.shape != smooth.shape:
            motion = 0.0
        else:
            diff = cv2.absdiff(smooth, self._previous)
            changed = int(np.count_nonzero(diff > self.pixel_threshold))
            motion = changed / diff.size
        self._previous = smooth
        return Look(motion, imagehash.dhash(Image.fromarray(gray)))


def distance(a: imagehash.ImageHash, b: imagehash.ImageHash) -> int:
    """Differing bits between two hashes (0 = the same picture at this scale)."""
    return int(a - b)
