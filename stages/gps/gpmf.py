"""GoPro GPMF: GPS5 / GPS9 records in the ``gpmd`` timed-metadata track.

Each sample of the track is a KLV tree (4-byte key, type char, struct size, repeat; payloads
padded to 4 bytes; ``DEVC`` and ``STRM`` nest). In a stream, ``SCAL`` divides the values that
follow, ``GPSU`` ("yymmddhhmmss.sss", UTC) dates a GPS5 sample's first fix and the sample's fixes
are spread evenly over its duration, as exiftool reports them. GPS9 rows carry their own time
(days since 2000, seconds since midnight) and fix type. GPS9 wins when a file has both.
"""

from __future__ import annotations

import re
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

from stages.gps import Fix, Track
from stages.mp4 import Box, BoxReader

MAX_SAMPLES = 200_000  # ≈ 55 hours of 1 s samples
MAX_SAMPLE_BYTES = 4 << 20
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=timezone.utc)
GPSU = re.compile(rb"^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d(?:\.\d+)?)")
# GPMF type chars with a fixed size, as struct codes (big-endian)
NUMERIC = {
    "b": "b", "B": "B", "s": "h", "S": "H", "l": "i", "L": "I",
    "f": "f", "d": "d", "j": "q", "J": "Q",
}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    offset: int
    size: int
    start: float  # seconds from the start of the track
    duration: float


def read(f: BinaryIO, boxes: BoxReader) -> Track | None:
    """The GPS fixes of the first ``gpmd`` track, or None when the file has no such track."""
    moov = next((b for b in boxes.boxes() if b.type == b"moov"), None)
    if moov is None:
        return None
    trak = next((t for t in boxes.children(moov) if t.type == b"trak" and _is_gpmd(boxes, t)), None)
    if trak is None:
        return None
    problems: Counter[str] = Counter()
    notes: list[str] = []
    gps5: list[Fix] = []
    gps9: list[Fix] = []
    last: tuple[datetime, float] | None = None  # (GPSU, sample start) of the last dated sample
    budget = 2 * boxes.size + MAX_SAMPLE_BYTES  # hostile tables cannot make us read for hours
    for sample in sample_table(boxes, trak, problems):
        budget -= min(sample.size, MAX_SAMPLE_BYTES)
        if budget < 0:
            notes.append("gpmf: stopped reading samples: the table adds up to twice the file")
            break
        data = boxes.read_at(sample.offset, min(sample.size, MAX_SAMPLE_BYTES))
        if len(data) < sample.size:
            problems["samples are cut off"] += 1
        for stream in _streams(data, problems):
            if stream.gpsu is not None:
                last = (stream.gpsu, sample.start)
            if stream.gps9:
                gps9 += _gps9(stream, problems)
            if stream.gps5:
                if stream.gpsu is None and last is not None:  # date it from the last GPSU
                    stream.gpsu = last[0] + timedelta(seconds=sample.start - last[1])
                gps5 += _gps5(stream, sample, problems)
    lines = tuple(notes + [f"gpmf: {n} {kind}" for kind, n in problems.items()])
    return Track("gpmf", tuple(gps9 or gps5), lines)


def _is_gpmd(boxes: BoxReader, trak: Box) -> bool:
    hdlr = boxes.find([b"mdia", b"hdlr"], trak.payload_start, trak.end)
    stsd = boxes.find([b"mdia", b"minf", b"stbl", b"stsd"], trak.payload_start, trak.end)
    if hdlr is None or stsd is None:
        return False
    return boxes.payload(hdlr, 12)[8:12] == b"meta" and boxes.payload(stsd, 16)[12:16] == b"gpmd"


def sample_table(boxes: BoxReader, trak: Box, problems: Counter[str]) -> Iterator[Sample]:
    """Offsets, sizes and times of a track's samples from stsz, stsc, stco/co64 and stts."""
    mdhd = boxes.find([b"mdia", b"mdhd"], trak.payload_start, trak.end)
    stbl = boxes.find([b"mdia", b"minf", b"stbl"], trak.payload_start, trak.end)
    if mdhd is None or stbl is None:
        problems["gpmd track without mdhd or stbl"] += 1
        return
    head = boxes.payload(mdhd, 32)
    at = 20 if head[:1] == b"\x01" else 12
    timescale = struct.unpack_from(">I", head, at)[0] if len(head) >= at + 4 else 0
    tables = {b.type: boxes.payload(b) for b in boxes.children(stbl)}
    sizes = _sizes(tables.get(b"stsz", b""))
    if b"co64" in tables:
        chunks = [r[0] for r in _entries(tables[b"co64"], ">Q")]
    else:
        chunks = [r[0] for r in _entries(tables.get(b"stco", b""), ">I")]
    if not sizes or not chunks or timescale == 0:
        problems["gpmd track with an empty or broken sample table"] += 1
        return
    durations: list[int] = []
    for count, delta in _entries(tables.get(b"stts", b""), ">II"):
        durations += [delta] * min(count, len(sizes) - len(durations))
        if len(durations) >= len(sizes):
            break
    runs = _entries(tables.get(b"stsc", b""), ">III")
    clock = k = 0
    for i, (first, per_chunk, _) in enumerate(runs):
        last = runs[i + 1][0] - 1 if i + 1 < len(runs) else len(chunks)
        if first < 1 or last < first:
            problems["gpmd stsc entries out of order"] += 1
            break
        for offset in chunks[first - 1 : last]:
            if k >= len(sizes):
                return
            for _ in range(min(per_chunk, len(sizes) - k)):
                duration = durations[k] if k < len(durations) else 0
                yield Sample(offset, sizes[k], clock / timescale, duration / timescale)
                clock += duration
                offset += sizes[k]
                k += 1


def _entries(payload: bytes, fmt: str) -> list[tuple[int, ...]]:
    """Rows of a full box laid out as ``[version/flags][count][rows]``, count clamped."""
    if len(payload) < 8:
        return []
    step = struct.calcsize(fmt)
    count = min(struct.unpack_from(">I", payload, 4)[0], (len(payload) - 8) // step)
    return [struct.unpack_from(fmt, payload, 8 + i * step) for i in range(count)]


def _sizes(stsz: bytes) -> list[int]:
    if len(stsz) < 12:
        return []
    fixed, count = struct.unpack_from(">II", stsz, 4)
    count = min(count, MAX_SAMPLES)
    if fixed:
        return [fixed] * count
    count = min(count, (len(stsz) - 12) // 4)
    return list(struct.unpack_from(f">{count}I", stsz, 12))


@dataclass
class Stream:
    gpsu: datetime | None = None
    fix_type: int | None = None
    gps5: list[tuple[float, ...]] | None = None
    gps9: list[tuple[float, ...]] | None = None


def _streams(data: bytes, problems: Counter[str]) -> Iterator[Stream]:
    """Every ``STRM`` in a sample that holds GPS5 or GPS9, values scaled."""
    for key, kind, _, _, start, end in _klv(data, 0, len(data), problems):
        if key != b"DEVC" or kind != 0:
            continue
        for key2, kind2, _, _, s2, e2 in _klv(data, start, end, problems):
            if key2 == b"STRM" and kind2 == 0:
                stream = _stream(data, s2, e2, problems)
                if stream.gps5 is not None or stream.gps9 is not None:
                    yield stream


def _stream(data: bytes, start: int, end: int, problems: Counter[str]) -> Stream:
    stream = Stream()
    scale: list[float] = [1.0]
    layout = ""
    for key, kind, size, repeat, s, e in _klv(data, start, end, problems):
        if key == b"SCAL":
            scale = [float(v) for v in _values(data[s:e], chr(kind))] or [1.0]
        elif key == b"TYPE":
            layout = data[s:e].rstrip(b"\0").decode("latin-1")
        elif key == b"GPSU":
            stream.gpsu = _gpsu(data[s:e])
        elif key == b"GPSF":
            values = _values(data[s:e], chr(kind))
            stream.fix_type = int(values[0]) if values else None
        elif key in (b"GPS5", b"GPS9"):
            fmt = layout if chr(kind) == "?" else chr(kind) * (size // _itemsize(chr(kind)))
            rows = _rows(data[s:e], fmt, size, repeat)
            if rows is None or (len(scale) != 1 and any(len(r) != len(scale) for r in rows)):
                problems[f"{key.decode()} records with an unknown layout"] += 1
                continue
            if 0 in scale:
                problems[f"{key.decode()} records with a zero SCAL"] += 1
                continue
            scales = scale * len(rows[0]) if rows and len(scale) == 1 else scale
            scaled = [tuple(v / d for v, d in zip(r, scales, strict=True)) for r in rows]
            if key == b"GPS5":
                stream.gps5 = scaled
            else:
                stream.gps9 = scaled
    return stream


def _klv(
    data: bytes, start: int, end: int, problems: Counter[str]
) -> Iterator[tuple[bytes, int, int, int, int, int]]:
    """``(key, type, struct size, repeat, payload start, payload end)`` of one KLV level."""
    pos = start
    while pos + 8 <= end:
        key = data[pos : pos + 4]
        kind, size, repeat = struct.unpack_from(">BBH", data, pos + 4)
        if key == b"\0\0\0\0":
            return
        length = size * repeat
        if pos + 8 + length > end:
            problems["GPMF entries cut off"] += 1
            return
        yield key, kind, size, repeat, pos + 8, pos + 8 + length
        pos += 8 + ((length + 3) & ~3)


def _itemsize(kind: str) -> int:
    return struct.calcsize(">" + NUMERIC[kind]) if kind in NUMERIC else 0


def _values(payload: bytes, kind: str) -> list[float]:
    item = _itemsize(kind)
    if not item:
        return []
    count = len(payload) // item
    return list(struct.unpack(f">{count}{NUMERIC[kind]}", payload[: count * item]))


def _rows(payload: bytes, layout: str, size: int, repeat: int) -> list[tuple[float, ...]] | None:
    if not layout or any(c not in NUMERIC for c in layout):
        return None
    fmt = ">" + "".join(NUMERIC[c] for c in layout)
    if struct.calcsize(fmt) != size:
        return None
    return [struct.unpack_from(fmt, payload, i * size) for i in range(repeat)]


def _gpsu(payload: bytes) -> datetime | None:
    m = GPSU.match(payload)
    if m is None:
        return None
    yy, mo, dd, hh, mi = (int(g) for g in m.groups()[:5])
    try:
        base = datetime(2000 + yy, mo, dd, hh, mi, tzinfo=timezone.utc)
    except ValueError:
        return None
    seconds = float(m.group(6))
    return base + timedelta(seconds=seconds) if seconds < 61 else None


def _fix(time: datetime, row: tuple[float, ...], problems: Counter[str]) -> Fix | None:
    lat, lon, alt, speed = row[0], row[1], row[2], row[3]
    try:
        return Fix(
            time,
            lat,
            lon,
            speed_kmh=speed * 3.6 if 0 <= speed < 2500 else None,
            alt_m=alt if -20_000 <= alt <= 100_000 else None,
        )
    except ValueError:
        problems["fixes out of range skipped"] += 1
        return None


def _gps5(stream: Stream, sample: Sample, problems: Counter[str]) -> list[Fix]:
    rows = stream.gps5 or []
    if stream.fix_type == 0:
        problems["fixes without a GPS lock skipped"] += len(rows)
        return []
    if stream.gpsu is None:
        problems["fixes without a GPS time skipped"] += len(rows)
        return []
    step = sample.duration / len(rows) if rows else 0.0
    fixes = (
        _fix(stream.gpsu + timedelta(seconds=i * step), r, problems) for i, r in enumerate(rows)
    )
    return [f for f in fixes if f is not None]


def _gps9(stream: Stream, problems: Counter[str]) -> list[Fix]:
    out: list[Fix] = []
    for row in stream.gps9 or []:
        if len(row) < 9 or row[8] == 0:
            problems["fixes without a GPS lock skipped"] += 1
            continue
        if not (0 <= row[5] < 40_000 and 0 <= row[6] < 86_401):
            problems["fixes with an impossible time skipped"] += 1
            continue
        fix = _fix(EPOCH_2000 + timedelta(days=row[5], seconds=row[6]), row, problems)
        if fix is not None:
            out.append(fix)
    return out
