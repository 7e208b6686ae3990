"""Web-friendly media for the archive: a poster frame and an H.264 preview that every browser
plays (HEVC and 4K clips do not play in most of them), both made with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from stages.frames import FrameSampler
from watchers.errors import PermanentError


@dataclass(frozen=True)
class PreviewInfo:
    width: int
    height: int
    frames: int
    seconds: float


def needs_preview(codec: str, height: int, *, max_height: int) -> bool:
    """What a browser will not play well: anything but H.264, or taller than ``max_height``
    plus the usual 1080p (a 1440p or 4K H.264 clip is heavy to stream from a NAS)."""
    return codec != "h264" or height > max(max_height, 1080)


def poster(video: Path, at: float, *, max_side: int) -> NDArray[np.uint8]:
    """The frame nearest ``at`` seconds (a keyframe when one is close: cheap to decode), as
    BGR, its longest side at most ``max_side``."""
    samples = FrameSampler(video, snap_to_keyframes=True).sample([max(0.0, at)])
    try:
        sample = next(samples, None)
    finally:
        samples.close()
    if sample is None:  # ``at`` past the last frame: take the first one
        samples = FrameSampler(video).sample([0.0])
        try:
            sample = next(samples, None)
        finally:
            samples.close()
    if sample is None:
        raise PermanentError("unreadable: no frame of the clip could be decoded for a poster")
    bgr = np.asarray(sample.frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    h, w = bgr.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        bgr = np.asarray(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    return bgr


def make_preview(
    src: Path,
    dst: Path,
    *,
    max_height: int,
    crf: int,
    preset: str,
    threads: int = 0,
) -> PreviewInfo:
    """Transcode the first video stream of ``src`` to H.264 (yuv420p, at most ``max_height``
    lines, even sizes) in an MP4 with its index at the front (``faststart``: a browser can play
    it while it downloads). Frame times are kept as they are; there is no sound."""
    try:
        with av.open(str(src)) as inp:
            vin = inp.streams.video[0]
            vin.thread_type = "AUTO"
            vin.thread_count = threads
            height = min(max_height, vin.height)
            height -= height % 2
            width = round(vin.width * height / vin.height / 2) * 2
            rate = vin.average_rate or Fraction(30)
            time_base = vin.time_base or Fraction(1, 90_000)
            with av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                vout: Any = out.add_stream("libx264", rate=rate)
                vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
                vout.time_base = time_base
                vout.options = {"crf": str(crf), "preset": preset}
                vout.thread_count = threads
                frames = 0
                last = 0
                for frame in inp.decode(vin):
                    if frame.pts is None:
                        continue
                    small = frame.reformat(width=width, height=height, format="yuv420p")
                    small.pts, small.time_base = frame.pts, time_base
                    last = frame.pts
                    for packet in vout.encode(small):
                        out.mux(packet)
                    frames += 1
                for packet in vout.encode():
                    out.mux(packet)
    except av.error.FFmpegError as err:
        raise PermanentError(f"preview: PyAV could not transcode the clip: {err}") from None
    if not frames:
        raise PermanentError("preview: the clip has no frames with timestamps")
    start = vin.start_time or 0
    return PreviewInfo(width, height, frames, round(float((last - start) * time_base), 3))
