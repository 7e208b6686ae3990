"""Rendered dashcam overlays for the overlay-OCR tests (numpy, OpenCV and Pillow; no system font).

A Viofo-style camera burns one line into the bottom of every frame:
``045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32``. :func:`overlay_text` writes that
line, :func:`render_strip` draws it like a dashcam does (white glyphs with a black outline on the
road scene) and :func:`render_frame` puts such a strip at the bottom of a whole frame. Noise, blur
and JPEG re-encoding stand in for the camera's sensor and the video codec. Everything is seeded:
the same call draws the same pixels. :func:`write_clip` records such frames as an H.264 clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import av
import av.video
import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

Image = NDArray[np.uint8]

# Pillow's built-in scalable font (needs no system font) and three OpenCV Hershey faces
FONTS = ("pil", "hershey_simplex", "hershey_duplex", "hershey_triplex")
BACKGROUNDS = ("road", "dark", "bright")
_HERSHEY = {
    "hershey_simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "hershey_duplex": cv2.FONT_HERSHEY_DUPLEX,
    "hershey_triplex": cv2.FONT_HERSHEY_TRIPLEX,
}


@dataclass(frozen=True)
class Look:
    """How a strip is drawn and degraded."""

    font: str = "pil"
    text_px: int = 28  # height of a digit, in pixels (less where the line would not fit)
    background: str = "road"
    noise: float = 0.0  # standard deviation of the sensor noise, in grey levels
    blur: float = 0.0  # Gaussian sigma in pixels (a soft lens, a scaled-down 4K frame)
    jpeg_quality: int | None = None  # re-encoded once at this quality; None: not at all
    x_px: int | None = None  # left edge of the text; None: 2 % of the width


def overlay_text(
    when: datetime,
    lat: float,
    lon: float,
    speed: int,
    *,
    unit: str = "KM/H",
    model: str = "VIOFO A229",
    date_format: str = "%d-%m-%Y",
) -> str:
    """The line a Viofo camera burns in: speed (3 digits), hemisphere:decimal degrees (4
    decimals), model, local date and time."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return (
        f"{speed:03d}{unit} {ns}:{abs(lat):.4f} {ew}:{abs(lon):.4f} {model} "
        f"{when.strftime(date_format)} {when:%H:%M:%S}"
    )


def background(width: int, height: int, kind: str = "road", seed: int = 1) -> Image:
    """A scene behind the text: ``road`` (blurred random blocks over a dark-grey gradient, like
    asphalt and kerbs), ``dark`` (night) or ``bright`` (sunlit concrete, snow: the hard case for
    white text)."""
    rng = np.random.default_rng(seed)
    cell = max(4, width // 120)
    small = rng.integers(0, 256, (max(2, height // cell), max(2, width // cell), 3), np.uint8)
    blocks = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    blocks = cv2.GaussianBlur(blocks, (0, 0), cell / 2).astype(np.float32)
    blocks = 0.3 * blocks + 0.7 * blocks.mean(axis=2, keepdims=True)  # roads are greyish
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    if kind == "road":
        base, spread = 60 + 50 * ramp, 0.6
    elif kind == "dark":
        base, spread = 15 + 20 * ramp, 0.15
    elif kind == "bright":
        base, spread = 170 + 50 * ramp, 0.35
    else:
        raise ValueError(f"unknown background {kind!r}")
    img = base + (blocks - 128) * spread
    return np.clip(img, 0, 255).astype(np.uint8)


def render_strip(text: str, width: int, height: int, look: Look = Look(), seed: int = 1) -> Image:
    """One bottom strip, BGR: the scene, the text vertically centred, then the damage."""
    img = background(width, height, look.background, seed)
    x = look.x_px if look.x_px is not None else width // 50
    if look.font == "pil":
        img = _draw_pil(img, text, x, look.text_px)
    elif look.font in _HERSHEY:
        img = _draw_hershey(img, text, x, look.text_px, _HERSHEY[look.font])
    else:
        raise ValueError(f"unknown font {look.font!r}")
    return degrade(img, look, seed)


def render_frame(
    text: str,
    *,
    width: int = 1920,
    height: int = 1080,
    strip_fraction: float = 0.08,
    look: Look = Look(),
    seed: int = 1,
) -> Image:
    """A whole BGR frame: a scene above, the overlay strip in its bottom ``strip_fraction``. The
    damage is applied to the whole frame (the codec does not know where the strip is)."""
    strip_h = round(height * strip_fraction)
    clean = Look(look.font, look.text_px, look.background, x_px=look.x_px)
    strip = render_strip(text, width, strip_h, clean, seed)
    scene = background(width, height - strip_h, "road", seed + 1)
    return degrade(np.vstack([scene, strip]), look, seed)


def degrade(img: Image, look: Look, seed: int = 1) -> Image:
    """Blur, sensor noise and JPEG re-encoding, in the order a camera applies them."""
    if look.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), look.blur)
    if look.noise > 0:
        rng = np.random.default_rng(seed + 7)
        noisy = img.astype(np.float32) + rng.normal(0, look.noise, img.shape)
        img = np.clip(noisy, 0, 255).astype(np.uint8)
    if look.jpeg_quality is not None:
        ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        assert ok
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return img


def _draw_pil(img: Image, text: str, x: int, text_px: int) -> Image:
    def font_for(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return ImageFont.load_default(size=max(6, round(px / 0.72)))  # a digit is ~0.72 em

    room = img.shape[1] - 2 * x
    width = font_for(text_px).getlength(text)
    if width > room:  # a camera never cuts its own overlay: smaller text instead
        text_px = int(text_px * room / width)
    font = font_for(text_px)
    stroke = max(1, round(text_px / 12))
    pil = PILImage.fromarray(img[:, :, ::-1])
    draw = ImageDraw.Draw(pil)
    top, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)[1::2]
    y = (img.shape[0] - (bottom - top)) // 2 - top
    white, black = (255, 255, 255), (0, 0, 0)
    draw.text((x, y), text, fill=white, font=font, stroke_width=stroke, stroke_fill=black)
    return np.ascontiguousarray(np.asarray(pil)[:, :, ::-1])


def _draw_hershey(img: Image, text: str, x: int, text_px: int, face: int) -> Image:
    (_, digit), _ = cv2.getTextSize("0", face, 1.0, 1)
    (width, _), _ = cv2.getTextSize(text, face, text_px / digit, 1)
    room = img.shape[1] - 2 * x
    if width > room:  # a camera never cuts its own overlay: smaller text instead
        text_px = int(text_px * room / width)
    scale = text_px / digit
    thickness = max(1, round(text_px / 14))
    outline = thickness + 2 * max(1, thickness // 2 + 1)
    y = (img.shape[0] + text_px) // 2
    out = img.copy()
    cv2.putText(out, text, (x, y), face, scale, (0, 0, 0), outline, cv2.LINE_AA)
    cv2.putText(out, text, (x, y), face, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def write_clip(
    path: Path,
    lines: Sequence[str],
    *,
    fps: int = 10,
    width: int = 1280,
    height: int = 720,
    look: Look = Look(),
    bitrate: int = 4_000_000,
) -> Path:
    """An H.264 clip (PyAV's libx264, a keyframe a second) showing ``lines[i]`` during second
    ``i``: what a camera records, at a dashcam-like bit rate (4 Mbit/s at 720p is on the low
    side). The scene drifts a little each frame so the encoder has motion to spend bits on;
    ``look.noise`` is sensor grain (a few fields, cycled: cheap); blur and JPEG do not apply."""
    clean = Look(look.font, look.text_px, look.background, x_px=look.x_px)
    strip_h = round(height * 0.08)
    scene = background(width + 64, height - strip_h, "road", 3)
    strips = [render_strip(line, width, strip_h, clean, seed=i) for i, line in enumerate(lines)]
    rng = np.random.default_rng(5)
    grain = [
        rng.normal(0, look.noise, (height, width, 3)).astype(np.int16)
        for _ in range(5 if look.noise > 0 else 0)
    ]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        assert isinstance(stream, av.video.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        rate = str(bitrate)
        stream.options = {"b": rate, "maxrate": rate, "bufsize": rate, "g": str(fps)}
        stream.options |= {"keyint_min": str(fps), "sc_threshold": "0", "preset": "ultrafast"}
        for i in range(len(lines) * fps):
            img = np.vstack([scene[:, i % 64 : i % 64 + width], strips[i // fps]])
            if grain:
                img = np.clip(img + grain[i % len(grain)], 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
