"""Test media made with PyAV (no ffmpeg CLI, no numpy, no Pillow), good and deliberately bad.

Good files: :func:`make_video` (H.264/HEVC/MPEG-4 in MP4, MOV, MPEG-TS, Matroska…),
:func:`make_audio_only`, :func:`make_image` (one still frame as PNG, JPEG, BMP…).
Bad files, each from a good one: :func:`truncate` (power loss), :func:`remove_box` (no ``moov``),
:func:`open_ended_mdat` (``mdat`` size 0), :func:`scramble_samples` (opens, will not decode),
plus :func:`random_bytes`. :func:`pad_mdat` makes a big file that stays valid, and
:func:`top_boxes` lists an MP4's top-level boxes for assertions.

Every helper writes one file and returns its path; the ones that change a file take ``dest`` to
write the result elsewhere and leave the source untouched.
"""

from __future__ import annotations

import random
import shutil
import struct
from fractions import Fraction
from pathlib import Path

import av
import av.audio
import av.container
import av.video

from stages.mp4 import Box, BoxReader


def _frame(index: int, width: int, height: int) -> av.VideoFrame:
    """A diagonal colour ramp that moves a little every frame (cheap to make, easy to encode)."""
    ramp = bytes(v for x in range(width + 256) for v in (x & 255, (2 * x) & 255, 128, 255))
    rows = []
    for y in range(height):
        start = ((y + 4 * index) % 256) * 4
        rows.append(ramp[start : start + 4 * width])
    return av.VideoFrame.from_bytes(b"".join(rows), width, height, format="rgba")


def _pix_fmt(codec: av.Codec, preferred: tuple[str, ...]) -> str:
    """The first of ``preferred`` that the encoder takes, else its own first choice."""
    supported = [f.name for f in codec.video_formats or ()]
    return next((f for f in preferred if f in supported), supported[0] if supported else "yuv420p")


def _audio_frames(seconds: float, rate: int = 8000) -> list[av.AudioFrame]:
    """A quiet square wave, mono s16, in 1024-sample frames."""
    frames, total, pts = [], int(seconds * rate), 0
    while pts < total:
        n = min(1024, total - pts)
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.planes[0].update(
            b"".join(struct.pack("<h", 800 if (pts + i) // 20 % 2 else -800) for i in range(n))
            + bytes(frame.planes[0].buffer_size - 2 * n)
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
        frames.append(frame)
        pts += n
    return frames


def _add_audio(out: av.container.OutputContainer, container: str) -> av.audio.AudioStream:
    codec = "mp2" if container in ("mpegts", "avi") else "aac"
    stream = out.add_stream(codec, rate=8000 if codec == "aac" else 16000)
    assert isinstance(stream, av.audio.AudioStream)
    stream.layout = "mono"
    return stream


def _mux_audio(
    out: av.container.OutputContainer, stream: av.audio.AudioStream, seconds: float
) -> None:
    resampler = av.AudioResampler(
        format=stream.codec_context.format, layout="mono", rate=stream.codec_context.sample_rate
    )
    for frame in _audio_frames(seconds):
        for resampled in resampler.resample(frame):
            out.mux(stream.encode(resampled))
    for resampled in resampler.resample(None):
        out.mux(stream.encode(resampled))
    out.mux(stream.encode(None))


def make_video(
    path: Path,
    *,
    seconds: float = 1.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    codec: str = "h264",
    audio: bool = False,
    creation_time: str | None = None,
    container: str = "mp4",
    faststart: bool = False,
) -> Path:
    """Encode a short moving-ramp video.

    ``container`` is an FFmpeg muxer name ("mp4", "mov", "mpegts", "matroska", "avi");
    ``creation_time`` is written as container metadata, e.g. ``"2026-05-13T16:21:52Z"``;
    ``faststart`` puts ``moov`` before ``mdat`` (the default, like a dashcam, writes it last).
    """
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=container, options=options) as out:
        if creation_time is not None:
            out.metadata["creation_time"] = creation_time
        stream = out.add_stream(codec, rate=fps)
        assert isinstance(stream, av.video.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = _pix_fmt(
            stream.codec_context.codec, ("yuvj420p" if "jpeg" in codec else "yuv420p", "yuv420p")
        )
        if codec in ("h264", "libx264", "hevc", "libx265"):
            stream.options = {"preset": "ultrafast"}
            if codec in ("hevc", "libx265"):
                stream.options["x265-params"] = "log-level=none"
        sound = _add_audio(out, container) if audio else None
        for i in range(max(1, round(seconds * fps))):
            frame = _frame(i, *size)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if sound is not None:
            _mux_audio(out, sound, seconds)
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0, container: str = "mp4") -> Path:
    """A file with one audio stream and no video (AAC in MP4 by default)."""
    with av.open(str(path), "w", format=container) as out:
        _mux_audio(out, _add_audio(out, container), seconds)
    return path


def make_image(path: Path, *, codec: str = "png", size: tuple[int, int] = (64, 48)) -> Path:
    """One still image, the whole file being one encoded frame.

    ``codec`` is an FFmpeg image encoder: "png", "mjpeg" (a JPEG), "bmp", "tiff", "gif",
    "libwebp".
    """
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width, ctx.height = size
    ctx.time_base = Fraction(1, 1)
    ctx.pix_fmt = _pix_fmt(ctx.codec, ("rgb24", "bgr24", "yuvj420p", "yuv420p"))
    frame = _frame(0, *size)
    frame.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))
    path.write_bytes(data)
    return path


def random_bytes(path: Path, size: int = 64 * 1024, *, seed: int = 0) -> Path:
    """``size`` reproducible random bytes."""
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _out(path: Path, dest: Path | None) -> Path:
    if dest is not None and dest != path:
        shutil.copyfile(path, dest)
        return dest
    return path


def truncate(path: Path, fraction: float = 0.5, *, dest: Path | None = None) -> Path:
    """Keep only the first ``fraction`` of the file, as a power cut while recording would."""
    data = path.read_bytes()
    target = _out(path, dest)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def top_boxes(path: Path) -> list[tuple[str, int, int]]:
    """``(type, offset, declared size)`` of each top-level box, as :class:`BoxReader` sees them."""
    with path.open("rb") as f:
        return [(b.name, b.start, b.size) for b in BoxReader(f).boxes()]


def _top(path: Path, kind: bytes) -> Box:
    with path.open("rb") as f:
        found = BoxReader(f).top(kind)
    if not found:
        raise ValueError(f"{path.name} has no top-level {kind.decode()!r} box")
    return found[0]


def remove_box(path: Path, kind: bytes = b"moov", *, dest: Path | None = None) -> Path:
    """Cut the first top-level ``kind`` box out of an MP4 (``b"moov"``: never finalised)."""
    box = _top(path, kind)
    data = path.read_bytes()
    target = _out(path, dest)
    target.write_bytes(data[: box.start] + data[box.end :])
    return target


def _chunk_offset_tables(reader: BoxReader) -> list[Box]:
    found = []
    for moov in reader.top(b"moov"):
        for trak in (b for b in reader.children(moov) if b.type == b"trak"):
            for kind in (b"stco", b"co64"):
                box = reader.find([b"mdia", b"minf", b"stbl", kind], trak.payload_start, trak.end)
                if box is not None:
                    found.append(box)
    return found


def pad_mdat(path: Path, extra: int, *, fill: bytes = b"\0", dest: Path | None = None) -> Path:
    """Grow ``mdat`` by ``extra`` bytes of ``fill`` at its start, fixing every chunk offset,
    so the file stays valid but large (for "does not read the whole file" checks)."""
    mdat = _top(path, b"mdat")
    if mdat.header != 8 or mdat.size + extra >= 1 << 32:
        raise ValueError("pad_mdat handles only 32-bit mdat sizes")
    data = bytearray(path.read_bytes())
    with path.open("rb") as f:
        tables = _chunk_offset_tables(BoxReader(f))
    for table in tables:  # chunk offsets after the insertion point move by ``extra``
        wide = table.type == b"co64"
        fmt, step = (">Q", 8) if wide else (">I", 4)
        (count,) = struct.unpack_from(">I", data, table.payload_start + 4)
        for i in range(count):
            at = table.payload_start + 8 + i * step
            (offset,) = struct.unpack_from(fmt, data, at)
            if offset >= mdat.payload_start:
                struct.pack_into(fmt, data, at, offset + extra)
    struct.pack_into(">I", data, mdat.start, mdat.size + extra)
    padding = (fill * (extra // len(fill) + 1))[:extra]
    target = _out(path, dest)
    target.write_bytes(data[: mdat.payload_start] + padding + data[mdat.payload_start :])
    return target


def scramble_samples(path: Path, *, seed: int = 0, dest: Path | None = None) -> Path:
    """Overwrite the payload of ``mdat`` with random bytes: the index is intact, so FFmpeg opens
    the file, but no frame decodes."""
    mdat = _top(path, b"mdat")
    data = bytearray(path.read_bytes())
    length = mdat.end - mdat.payload_start
    data[mdat.payload_start : mdat.end] = random.Random(seed).randbytes(length)
    target = _out(path, dest)
    target.write_bytes(bytes(data))
    return target


def open_ended_mdat(path: Path, *, dest: Path | None = None) -> Path:
    """Set ``mdat``'s size to 0 ("runs to the end of the file"), as a recorder that never went
    back to write it does; cut such a file with :func:`truncate` and only the index tells."""
    mdat = _top(path, b"mdat")
    if mdat.header != 8:
        raise ValueError("open_ended_mdat handles only 32-bit mdat sizes")
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, mdat.start, 0)
    target = _out(path, dest)
    target.write_bytes(bytes(data))
    return target
