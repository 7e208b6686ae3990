"""Generated scenes for the preprocess tests and benchmark (numpy + PyAV's libx264).

:func:`make_scene` writes a clip of a textured still scene: optionally with an object crossing
it during ``event`` (start, end seconds), or scrolling like a road seen from a moving car
(``drive``: for all of the clip, or for the given (start, end) spans). A little per-frame
noise (``noise``) stands in for a camera sensor. Everything is seeded: the same call makes the
same file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import av.video
import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]


def texture(width: int, height: int, seed: int = 1) -> Image:
    """A blurred random-block picture: detail everywhere, like a street, cheap to encode. The
    blocks scale with the width (4 px at 320 px wide), so a shrunk copy looks the same at any
    size (and YOLO sees no person in it)."""
    cell = max(4, width // 160)  # the texture is twice the frame's width
    rng = np.random.default_rng(seed)
    shape = (max(2, height // cell), max(2, width // cell), 3)
    small = rng.integers(0, 256, shape, dtype=np.uint8)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(big, (0, 0), cell / 2)


def make_scene(
    path: Path,
    *,
    seconds: float,
    fps: int = 10,
    width: int = 320,
    height: int = 180,
    event: tuple[float, float] | None = None,
    drive: bool | Sequence[tuple[float, float]] = False,
    gop: int | None = None,
    noise: int = 0,
    crf: int = 23,
    codec: str = "libx264",
    bframes: int = 0,
    bitrate: int | None = None,
    seed: int = 1,
) -> Path:
    """Write the clip; ``gop`` is the keyframe interval in frames (default: one per second);
    ``bitrate`` (bit/s) replaces the constant quality ``crf`` (dashcams record at about
    12-25 Mbit/s in 1080p)."""
    gop = gop or fps
    base = texture(width * 2, height, seed)
    rng = np.random.default_rng(seed + 1)
    grain = (
        [  # a few noise fields, cycled: cheap at any size
            rng.integers(-noise, noise + 1, (height, width, 3), dtype=np.int16) for _ in range(7)
        ]
        if noise
        else []
    )
    spans = [(0.0, seconds)] if drive is True else list(drive or [])
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.video.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        preset = "ultrafast" if width * height < 1_000_000 and not bframes else "veryfast"
        if codec == "libx265":
            params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}:log-level=error"
            stream.options = {"crf": str(crf), "preset": preset, "x265-params": params}
        else:
            stream.options = {
                **(
                    {"b": str(bitrate), "maxrate": str(bitrate), "bufsize": str(bitrate)}
                    if bitrate
                    else {}
                ),
                "g": str(gop),
                "keyint_min": str(gop),
                "sc_threshold": "0",
                "bf": str(bframes),
                "preset": preset,
            }
            if not bitrate:
                stream.options = {**stream.options, "crf": str(crf)}
        offset = 0.0
        for i in range(round(seconds * fps)):
            t = i / fps
            if any(a <= t < b for a, b in spans):
                offset += 12 * 10 / fps  # 12 px per frame at 10 fps, the same speed at any rate
            x = int(offset) % width
            img = np.ascontiguousarray(base[:, x : x + width])
            if event is not None and event[0] <= t < event[1]:
                k = (t - event[0]) / (event[1] - event[0])
                w, h = width // 5, height // 3
                x0, y0 = int(k * (width - w)), height // 2 - h // 2
                img[y0 : y0 + h, x0 : x0 + w] = (250, 240, 30)
            if grain:
                img = np.clip(img + grain[i % len(grain)], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
