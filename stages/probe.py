"""Is a dropped file a whole, real video? :func:`probe_video` answers with facts or a sentence.

Checks, cheapest first: the size; for ISO BMFF files (MP4/MOV) the top-level boxes with
:class:`stages.mp4.BoxReader` (a power cut leaves ``mdat`` short and no ``moov``, which FFmpeg
would only call "invalid data"); then FFmpeg (PyAV) opens the file, which must hold a video
stream that is not a still image; and finally the first video frame must decode. Only headers,
the index and the first few packets are read, so a 4 GB clip probes as fast as a small one.

Every content problem raises :class:`watchers.errors.Rejected` whose sentence starts with its
category: ``empty:``, ``not a video:``, ``truncated:`` or ``unreadable:``. Problems of the
environment, not the content (the file vanished, no permission, an I/O error in our own reads)
propagate unchanged so the runtime can retry. PyAV drops FFmpeg's log lines unless someone calls
``av.logging.set_level``, so probes print nothing; this module leaves that global alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.error
import av.video

from stages.mp4 import Box, BoxReader
from watchers.errors import Rejected

# top-level box types a QuickTime/ISO BMFF file may start with
ISO_FIRST_BOXES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"}
)
# demuxers that read single pictures (besides every "*_pipe" one)
IMAGE_DEMUXERS = frozenset({"image2", "image2pipe", "gif", "apng", "webp", "ico", "svg"})
# codecs of still pictures; a stream of one such frame is an image, not a video
STILL_CODECS = frozenset(
    {"mjpeg", "png", "apng", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls", "jpegxl", "qoi"}
)
MAX_PACKETS = 256  # the first decodable frame must come within this many video packets
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # creation times before this are unset
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class VideoInfo:
    """Facts about an acceptable video, from its headers and first frame."""

    duration_seconds: float | None
    width: int
    height: int
    fps: float | None
    codec: str  # FFmpeg decoder name: "h264", "hevc", ...
    frames: int | None  # from the stream header when known
    has_audio: bool
    creation_time: datetime | None  # container creation_time, UTC, when plausible
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"


def probe_video(path: Path) -> VideoInfo:
    """Facts about the video at ``path``; :class:`Rejected` when it is not an acceptable one."""
    with path.open("rb") as f:  # FileNotFoundError etc. propagate as they are
        reader = BoxReader(f)
        if reader.size == 0:
            raise Rejected("empty: the file has zero bytes")
        if reader.read_at(4, 4) in ISO_FIRST_BOXES:
            _check_boxes(reader)
    try:
        container = av.open(str(path), mode="r")
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except av.error.FFmpegError as e:
        raise Rejected(f"not a video: FFmpeg does not recognise it ({_said(e)})") from None
    with container:
        return _inspect(container)


def _check_boxes(reader: BoxReader) -> None:
    """Reject an ISO BMFF file that was cut short or never got its index (``moov``)."""
    boxes = list(reader.boxes())
    cut = next((b for b in boxes if b.truncated), None)
    has_moov = any(b.type == b"moov" and not b.truncated for b in boxes)
    if cut is not None:
        what = {b"mdat": "the media data", b"moov": "the moov atom"}.get(cut.type)
        what = what or f"the {cut.name!r} box"
        missing = cut.start + cut.size - reader.size
        tail = "" if has_moov or cut.type == b"moov" else " and the moov atom is missing"
        raise Rejected(f"truncated: {what} ends {missing} bytes early{tail}")
    if not has_moov:
        why = f" (box sizes stop making sense: {reader.problems[0]})" if reader.problems else ""
        raise Rejected(f"truncated: moov atom missing{why}")
    end = max((_samples_end(reader, stbl) for stbl in _sample_tables(reader, boxes)), default=0)
    if end > reader.size:
        raise Rejected(
            f"truncated: the sample table points {end - reader.size} bytes past the end of the file"
        )


def _sample_tables(reader: BoxReader, boxes: list[Box]) -> list[Box]:
    """The ``stbl`` box of every track."""
    tables = []
    for moov in (b for b in boxes if b.type == b"moov"):
        for trak in (b for b in reader.children(moov) if b.type == b"trak"):
            stbl = reader.find([b"mdia", b"minf", b"stbl"], trak.payload_start, trak.end)
            if stbl is not None:
                tables.append(stbl)
    return tables


def _entries(reader: BoxReader, stbl: Box, kind: bytes, fmt: str, skip: int = 4) -> list[Any]:
    """The entries of a full box under ``stbl`` whose count is a ``u32`` after ``skip`` bytes
    (the count is clamped to what the box holds; no box, no entries)."""
    box = reader.find([kind], stbl.payload_start, stbl.end)
    data = reader.payload(box) if box is not None else b""
    if len(data) < skip + 4:
        return []
    (count,) = struct.unpack_from(">I", data, skip)
    step = struct.calcsize(fmt)
    count = min(count, (len(data) - skip - 4) // step)
    return list(struct.iter_unpack(fmt, data[skip + 4 : skip + 4 + count * step]))


def _samples_end(reader: BoxReader, stbl: Box) -> int:
    """Where a track's media data ends by its sample table: the end of its last chunk (at least
    one byte past its highest chunk offset); 0 when the table says nothing."""
    offsets = [o for (o,) in _entries(reader, stbl, b"stco", ">I")]
    offsets = offsets or [o for (o,) in _entries(reader, stbl, b"co64", ">Q")]
    if not offsets:
        return 0
    per_chunk = _entries(reader, stbl, b"stsc", ">III")  # (first chunk, samples, description)
    in_last = per_chunk[-1][1] if per_chunk else 0
    stsz = reader.find([b"stsz"], stbl.payload_start, stbl.end)
    head = reader.payload(stsz, 12) if stsz is not None else b""
    last_size = 0
    if len(head) == 12 and in_last:
        (uniform,) = struct.unpack_from(">I", head, 4)
        sizes = [n for (n,) in _entries(reader, stbl, b"stsz", ">I", skip=8)] if not uniform else []
        last_size = uniform * in_last if uniform else sum(sizes[-in_last:])
    return int(max(max(offsets) + 1, offsets[-1] + last_size))


def _inspect(container: av.container.InputContainer) -> VideoInfo:
    fmt = container.format.name
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        detail = {(): "", ("audio",): " (audio only)"}.get(
            tuple(kinds), f" (only {' and '.join(kinds)} streams)"
        )
        raise Rejected(f"not a video: no video stream found{detail}")
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    duration = _duration(container, stream)
    one_picture = stream.frames == 1 or (not stream.frames and duration is None)
    if fmt.endswith("_pipe") or fmt in IMAGE_DEMUXERS or (codec in STILL_CODECS and one_picture):
        kind = "jpeg" if codec == "mjpeg" else codec
        raise Rejected(f"not a video: it is a still image ({kind})")
    frame = _first_frame(container, stream)
    return VideoInfo(
        duration_seconds=duration,
        width=stream.codec_context.width or frame.width,
        height=stream.codec_context.height or frame.height,
        fps=_fps(stream),
        codec=codec,
        frames=stream.frames or None,
        has_audio=bool(container.streams.audio),
        creation_time=_creation_time(container, stream),
        container=fmt,
    )


def _first_frame(
    container: av.container.InputContainer, stream: av.video.VideoStream
) -> av.VideoFrame:
    try:
        for n, packet in enumerate(container.demux(stream), start=1):
            for frame in packet.decode():
                return frame
            if n >= MAX_PACKETS:
                break
    except (FileNotFoundError, PermissionError):
        raise
    except av.error.FFmpegError as e:
        raise Rejected(
            f"unreadable: the first video frame cannot be decoded ({_said(e)})"
        ) from None
    raise Rejected("unreadable: no video frame could be decoded from the start of the stream")


def _duration(container: av.container.InputContainer, stream: av.video.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _fps(stream: av.video.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if isinstance(rate, Fraction) and rate > 0:
            return float(rate)
    return None


def _creation_time(
    container: av.container.InputContainer, stream: av.video.VideoStream
) -> datetime | None:
    for metadata in (container.metadata, stream.metadata):
        text = metadata.get("creation_time")
        if not text:
            continue
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            continue
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
        when = when.astimezone(timezone.utc)
        if EARLIEST <= when < LATEST:
            return when
    return None


def _said(error: av.error.FFmpegError) -> str:
    """What FFmpeg said, without the file name, in at most 100 characters."""
    text = error.strerror or str(error) or type(error).__name__
    return text if len(text) <= 100 else text[:99] + "…"
