"""Novatek "freeGPS" blocks (Viofo and many other dashcams), see docs in reference/viofo.md.

Blocks are found through the ``moov/gps `` index; when it is missing, yields nothing or is
damaged, the top-level boxes other than ``moov`` are scanned for the ``freeGPS `` signature in
bounded chunks. Inside a block the record is located by its status marker (``A|V``, ``N|S``,
``E|W``): six ``u32 LE`` (h, m, s, year, month, day) sit before it, four ``f32 LE`` (latitude and
longitude as NMEA ddmm.mmmm, speed in knots, bearing) after a pad byte. The layout A and B
positions are tried first, then every other marker in the block; sanity checks on date, time and
coordinates pick the record.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from datetime import datetime, timezone
from typing import BinaryIO

from stages.gps import Fix, Track
from stages.mp4 import Box, BoxReader

SIGNATURE = b"freeGPS "
KNOTS_TO_KMH = 1.852
PREFERRED = (0x28, 0x48)  # where layouts A and B keep the status marker
MARKER = re.compile(rb"(?=[AV][NS][EW])")
MIN_BLOCK = 12  # size, "free", "GPS "
MAX_BLOCK = 1 << 20  # a larger declared size is not a freeGPS block
READ_BLOCK = 0x10000  # bytes of a block searched for its record
MAX_BLOCKS = 200_000  # ≈ 55 hours at 1 Hz: more is a corrupt index or a hostile file
CHUNK = 4 << 20
OVERLAP = 12  # a signature split by a chunk boundary is found in the next chunk
GIVE_UP = 32 << 20  # a region without a signature in its first 32 MiB has none (as exiftool)


def read(f: BinaryIO, boxes: BoxReader) -> Track | None:
    """The fixes of the freeGPS blocks in the file behind ``boxes``; None when there are none."""
    reader = _Reader(boxes)
    index = boxes.find([b"moov", b"gps "])
    if index is not None:
        reader.read_index(index)
    if not reader.seen or reader.index_damaged:  # no index, an empty one, or a broken one
        reader.scan()
    fixes = reader.result()
    problems = reader.problems()
    if not fixes and not problems:
        return None
    return Track("novatek", fixes, problems)


class _Reader:
    def __init__(self, boxes: BoxReader) -> None:
        self.boxes = boxes
        self.fixes: list[tuple[int, Fix]] = []  # (block offset, fix)
        self.seen: set[int] = set()  # block offsets already decoded
        self.index: Counter[str] = Counter()  # index entries gone wrong, by kind
        self.other: Counter[str] = Counter()  # blocks gone wrong, by kind
        self.notes: list[str] = []
        self.index_damaged = False
        self.exhausted = False
        # blocks are read at most about twice over: hostile indexes cannot make us read for hours
        self.budget = 2 * boxes.size + READ_BLOCK

    def read_block(self, offset: int, length: int) -> bytes:
        self.budget -= length
        return self.boxes.read_at(offset, length)

    def spent(self) -> bool:
        if self.budget < 0 and not self.exhausted:
            self.notes.append("stopped reading freeGPS blocks: read twice the file's size")
            self.exhausted = True
        return self.exhausted

    def read_index(self, index: Box) -> None:
        payload = self.boxes.payload(index, limit=8 + 8 * MAX_BLOCKS)
        if len(payload) < 8:
            self.notes.append(f"gps index at {index.start}: only {len(payload)} bytes")
            self.index_damaged = True
            return
        (n,) = struct.unpack_from(">I", payload, 4)
        room = (len(payload) - 8) // 8
        if n > room:
            limit = "the box holds" if room < MAX_BLOCKS else "reading at most"
            self.notes.append(f"gps index claims {n} entries, {limit} {room}")
            self.index_damaged = True
            n = room
        for i in range(n):
            offset, size = struct.unpack_from(">II", payload, 8 + 8 * i)
            if offset in self.seen:
                continue
            if self.spent():
                break
            if offset + MIN_BLOCK > self.boxes.size:
                self.index["entries point past the end of the file"] += 1
                continue
            head = self.boxes.read_at(offset, MIN_BLOCK)
            if head[4:12] != SIGNATURE:
                self.index["entries point at no freeGPS block"] += 1
                continue
            (own,) = struct.unpack_from(">I", head)
            fits = MIN_BLOCK <= own <= MAX_BLOCK and offset + own <= self.boxes.size
            if size < MIN_BLOCK or offset + size > self.boxes.size:
                if offset + size > self.boxes.size:
                    self.index["entries give a size past the end of the file"] += 1
                if not fits:
                    self.index["blocks are cut off by the end of the file"] += 1
                    continue
                size = own
            elif fits:
                size = min(size, own)  # search this block only
            self.seen.add(offset)
            self.decode(offset, self.read_block(offset, min(size, READ_BLOCK)))
        self.index_damaged = self.index_damaged or bool(self.index)

    def scan(self) -> None:
        """Search every top-level region except ``moov`` for freeGPS blocks, chunk by chunk."""
        regions: list[tuple[int, int]] = []
        end = 0
        for box in self.boxes.boxes():
            if box.type != b"moov":
                regions.append((box.payload_start, box.end))
            end = box.end
        if end < self.boxes.size:  # the walk stopped at a broken box: scan the rest raw
            regions.append((end, self.boxes.size))
        for start, stop in regions:
            self.scan_region(start, stop)

    def scan_region(self, start: int, stop: int) -> None:
        pos, found = start, False
        while pos < stop and len(self.seen) < MAX_BLOCKS and not self.spent():
            if not found and pos - start >= GIVE_UP:
                return
            chunk = self.boxes.read_at(pos, min(CHUNK, stop - pos))
            hit = chunk.find(SIGNATURE, 4)
            if hit < 0:
                if pos + len(chunk) >= stop or len(chunk) <= OVERLAP:
                    return
                pos += len(chunk) - OVERLAP
                continue
            found = True
            block = pos + hit - 4
            (size,) = struct.unpack_from(">I", chunk, hit - 4)
            sane = MIN_BLOCK <= size <= MAX_BLOCK
            if block not in self.seen:
                self.seen.add(block)
                self.scan_block(block, size if sane else None, stop)
            pos = block + (size if sane else MIN_BLOCK)
        if len(self.seen) >= MAX_BLOCKS:
            self.notes.append(f"stopped after {MAX_BLOCKS} freeGPS blocks")

    def scan_block(self, block: int, size: int | None, stop: int) -> None:
        if size is None:  # a damaged header: decode up to the next signature
            self.other["blocks with an impossible size"] += 1
            data = self.read_block(block, min(READ_BLOCK, stop - block))
            following = data.find(SIGNATURE, MIN_BLOCK)
            self.decode(block, data[: following - 4] if following > 0 else data)
        elif block + size > self.boxes.size:
            self.other["blocks are cut off by the end of the file"] += 1
        else:
            self.decode(block, self.read_block(block, min(size, READ_BLOCK)))

    def decode(self, offset: int, block: bytes) -> None:
        status, fix = decode_block(block)
        if fix is not None:
            self.fixes.append((offset, fix))
        elif status == "V":
            self.other["void (V) fixes skipped"] += 1
        else:
            self.other["blocks without a readable record"] += 1

    def result(self) -> tuple[Fix, ...]:
        out: list[Fix] = []
        for _, fix in sorted(self.fixes, key=lambda item: item[0]):
            if out and (out[-1].time, out[-1].lat, out[-1].lon) == (fix.time, fix.lat, fix.lon):
                self.other["repeated fixes dropped"] += 1
                continue
            out.append(fix)
        return tuple(out)

    def problems(self) -> tuple[str, ...]:
        lines = list(self.notes)
        lines += [f"gps index: {n} {kind}" for kind, n in self.index.items()]
        lines += [f"freeGPS: {n} {kind}" for kind, n in self.other.items()]
        return tuple(lines)


def decode_block(block: bytes) -> tuple[str | None, Fix | None]:
    """``("A", fix)`` for a valid record, ``("V", None)`` for a void one, ``(None, None)``."""
    candidates = list(PREFERRED) + [m.start() for m in MARKER.finditer(block)]
    for pos in dict.fromkeys(candidates):
        status, fix = decode_record(block, pos)
        if status is not None:
            return status, fix
    if any(block[p : p + 1] == b"V" for p in PREFERRED):  # void, date not set yet
        return "V", None
    return None, None


def decode_record(block: bytes, pos: int) -> tuple[str | None, Fix | None]:
    """The record whose status marker is at ``pos``, if its date, time and position are sane."""
    if pos < 24 or pos + 20 > len(block):
        return None, None
    status, ns, ew = (chr(b) for b in block[pos : pos + 3])
    if status not in "AV" or ns not in "NS" or ew not in "EW":
        return None, None
    time = _time(*struct.unpack_from("<6I", block, pos - 24))
    if time is None:
        return None, None
    if status == "V":
        return "V", None
    lat_nmea, lon_nmea, knots, bearing = struct.unpack_from("<4f", block, pos + 4)
    lat, lon = _degrees(lat_nmea, 90), _degrees(lon_nmea, 180)
    if lat is None or lon is None:
        return None, None
    speed = knots * KNOTS_TO_KMH if math.isfinite(knots) and 0 <= knots < 5000 else None
    return "A", Fix(
        time,
        -lat if ns == "S" else lat,
        -lon if ew == "W" else lon,
        speed_kmh=speed,
        bearing_deg=bearing if math.isfinite(bearing) and 0 <= bearing <= 360 else None,
    )


def _time(hour: int, minute: int, second: int, year: int, month: int, day: int) -> datetime | None:
    if year < 100:
        year += 2000
    if not (2000 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31):
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:  # month 13, 31 February…
        return None


def _degrees(nmea: float, limit: int) -> float | None:
    """NMEA ``dddmm.mmmm`` to degrees, or None when it cannot be a coordinate."""
    if not math.isfinite(nmea) or nmea < 0:
        return None
    whole = math.floor(nmea / 100)
    minutes = nmea - 100 * whole
    degrees = whole + minutes / 60
    if minutes >= 60 or degrees > limit:
        return None
    return degrees
