"""Phone videos: one ISO 6709 location string for the whole clip.

Looked for in ``moov/udta/©xyz`` (u16 length, u16 language, string) and in the QuickTime
metadata ``moov/meta`` (``keys`` + ``ilst``) under ``com.apple.quicktime.location.ISO6709``.
The fix is dated with the movie's creation time (``mvhd``, seconds since 1904 UTC).
"""

from __future__ import annotations

import re
import struct
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

from stages.gps import Fix, Track
from stages.mp4 import Box, BoxReader

APPLE_KEY = b"com.apple.quicktime.location.ISO6709"
EPOCH_1904 = datetime(1904, 1, 1, tzinfo=timezone.utc)
# degrees (DD, DDMM or DDMMSS, the last with an optional fraction), altitude, CRS, final "/"
ISO6709 = re.compile(
    r"(?P<lat>[+-]\d{2}(?:\d{2}){0,2}(?:\.\d+)?)"
    r"(?P<lon>[+-]\d{3}(?:\d{2}){0,2}(?:\.\d+)?)"
    r"(?P<alt>[+-]\d+(?:\.\d+)?)?"
    r"(?:CRS[A-Za-z0-9_:.-]+)?/?"
)


def read(f: BinaryIO, boxes: BoxReader) -> Track | None:
    """A one-fix track from the clip's location string, or None when it has none."""
    text = _udta_xyz(boxes) or _apple_location(boxes)
    if text is None:
        return None
    try:
        lat, lon, alt = parse(text)
    except ValueError as exc:
        return Track("iso6709", (), (f"iso6709: {exc}",))
    created = _creation_time(boxes)
    if created is None:
        return Track("iso6709", (), (f"iso6709: location {text!r} has no creation time; ignored",))
    fix = Fix(created, lat, lon, alt_m=alt if alt is not None and abs(alt) <= 20_000 else None)
    return Track("iso6709", (fix,))


def parse(text: str) -> tuple[float, float, float | None]:
    """``(lat, lon, altitude or None)`` from e.g. ``+37.3318-122.0312+010.000/``, strictly."""
    m = ISO6709.fullmatch(text.strip().rstrip("\0"))
    if m is None:
        raise ValueError(f"not an ISO 6709 location: {text!r}")
    lat, lon = _angle(m["lat"], 2), _angle(m["lon"], 3)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"location out of range: {text!r}")
    return lat, lon, float(m["alt"]) if m["alt"] else None


def _angle(text: str, width: int) -> float:
    """Signed degrees from ``±D[D][D][MM[SS]][.f]``; minutes and seconds below 60."""
    sign = -1.0 if text[0] == "-" else 1.0
    whole, _, fraction = text[1:].partition(".")
    parts = [whole[:width], whole[width : width + 2], whole[width + 2 :]]
    units = [float(p) for p in parts if p]
    if fraction:
        units[-1] += float("0." + fraction)
    if any(u >= 60 for u in units[1:]):
        raise ValueError(f"minutes or seconds of 60 or more in {text!r}")
    return sign * sum(u / 60.0**i for i, u in enumerate(units))


def _udta_xyz(boxes: BoxReader) -> str | None:
    box = boxes.find([b"moov", b"udta", b"\xa9xyz"])
    if box is None:
        return None
    payload = boxes.payload(box, 4 + 256)
    if len(payload) < 4:
        return None
    (length,) = struct.unpack_from(">H", payload)
    return payload[4 : 4 + length].decode("utf-8", "replace")


def _apple_location(boxes: BoxReader) -> str | None:
    meta = boxes.find([b"moov", b"meta"])
    if meta is None:
        return None
    # QuickTime's meta holds boxes directly; the ISO one is a full box (version, flags first)
    head = boxes.read_at(meta.payload_start, 4)
    start = meta.payload_start + (4 if head == b"\0\0\0\0" else 0)
    children = {b.type: b for b in boxes.boxes(start, meta.end)}
    keys, ilst = children.get(b"keys"), children.get(b"ilst")
    if keys is None or ilst is None:
        return None
    index = _key_index(boxes.payload(keys, 1 << 16))
    if index is None:
        return None
    for item in boxes.children(ilst):
        if item.type == struct.pack(">I", index):
            return _data_value(boxes, item)
    return None


def _key_index(payload: bytes) -> int | None:
    """The 1-based index of the ISO 6709 key in a ``keys`` payload."""
    if len(payload) < 8:
        return None
    (count,) = struct.unpack_from(">I", payload, 4)
    pos = 8
    for i in range(1, count + 1):
        if pos + 8 > len(payload):
            return None
        (size,) = struct.unpack_from(">I", payload, pos)
        if size < 8:
            return None
        if payload[pos + 8 : pos + size] == APPLE_KEY:
            return i
        pos += size
    return None


def _data_value(boxes: BoxReader, item: Box) -> str | None:
    data = boxes.find([b"data"], item.payload_start, item.end)
    if data is None:
        return None
    payload = boxes.payload(data, 8 + 256)
    return payload[8:].decode("utf-8", "replace") if len(payload) > 8 else None


def _creation_time(boxes: BoxReader) -> datetime | None:
    mvhd = boxes.find([b"moov", b"mvhd"])
    if mvhd is None:
        return None
    head = boxes.payload(mvhd, 12)
    if head[:1] == b"\x01" and len(head) >= 12:
        (seconds,) = struct.unpack_from(">Q", head, 4)
    elif len(head) >= 8:
        (seconds,) = struct.unpack_from(">I", head, 4)
    else:
        return None
    if seconds == 0 or seconds > 200 * 366 * 86400:  # unset, or after 2104
        return None
    return EPOCH_1904 + timedelta(seconds=seconds)
