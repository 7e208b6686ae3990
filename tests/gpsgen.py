"""Test files with embedded GPS, built from the documented formats (reference/viofo.md, GPMF).

Every builder starts from a small real MP4 written by PyAV, whose ``mdat`` precedes ``moov``: new
boxes go between the two or into ``moov``, so the video's chunk offsets stay right and PyAV still
decodes it. Builders return the file and the fixes a correct reader must find, computed from the
values actually stored (float32 for Novatek), so comparisons can be tight.

Written independently of ``stages.gps``' readers: ``Fix`` is only used as the truth's container.
"""

from __future__ import annotations

import io
import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import av

from stages.gps import Fix

UTC = timezone.utc
START = datetime(2026, 5, 13, 17, 21, 52, tzinfo=UTC)
EPOCH_1904 = datetime(1904, 1, 1, tzinfo=UTC)
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def base_mp4(seconds: int = 2, fps: int = 10, side: int = 64) -> bytes:
    """A tiny H.264 MP4 (grey ramp), as PyAV writes it: ftyp, free, mdat, moov."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame(side, side, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 12) % 256]) * plane.buffer_size)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = out.getvalue()
    kinds = [k for k, _, _ in top_boxes(data)]
    assert kinds.index(b"mdat") < kinds.index(b"moov") == len(kinds) - 1, kinds
    return data


def top_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """``(type, offset, size)`` of well-formed boxes laid end to end (test files only)."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        out.append((kind, pos, size))
        pos += size
    return out


def rebuild(
    base: bytes,
    *,
    before_moov: bytes = b"",
    moov_extra: bytes = b"",
    after: bytes = b"mvhd",
    into_udta: bytes = b"",
) -> tuple[bytes, int]:
    """``base`` with ``before_moov`` inserted before moov, ``moov_extra`` inside it right after
    the ``after`` child (at the end of moov with ``after=b""``), and ``into_udta`` appended to
    moov's ``udta`` (made if missing). Returns the file and the offset of ``moov_extra``."""
    kind, moov_at, size = top_boxes(base)[-1]
    assert kind == b"moov"
    children = [base[at : at + n] for _, at, n in top_boxes(base, moov_at + 8, moov_at + size)]
    if into_udta:
        udta = [i for i, c in enumerate(children) if c[4:8] == b"udta"]
        if udta:
            children[udta[0]] = box(b"udta", children[udta[0]][8:] + into_udta)
        else:
            children.append(box(b"udta", into_udta))
    kinds = [c[4:8] for c in children]
    where = kinds.index(after) + 1 if after else len(children)
    head = base[:moov_at] + before_moov
    extra_at = len(head) + 8 + sum(len(c) for c in children[:where])
    moov = b"".join(children[:where]) + moov_extra + b"".join(children[where:])
    return head + box(b"moov", moov), extra_at


# --- Novatek freeGPS ------------------------------------------------------------------------


def f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def nmea(degrees: float) -> float:
    """Unsigned ddmm.mmmm as a float32 would hold it."""
    whole = int(abs(degrees))
    return f32(whole * 100 + (abs(degrees) - whole) * 60)


def from_nmea(value: float, negative: bool) -> float:
    whole = math.floor(value / 100)
    degrees = whole + (value - 100 * whole) / 60
    return -degrees if negative else degrees


RECORD_AT = {"A": 0x10, "B": 0x30, "shifted": 0x58}  # where the six u32 start


def novatek_block(
    layout: str, size: int, time: datetime, status: bytes, lat: float, lon: float,
    knots: float, bearing: float, rng: random.Random,
) -> bytes:  # fmt: skip
    """One ``freeGPS `` block holding one record in ``layout``."""
    record = struct.pack(
        "<6I", time.hour, time.minute, time.second, time.year - 2000, time.month, time.day
    )
    record += status + (b"S" if lat < 0 else b"N") + (b"W" if lon < 0 else b"E") + b"\0"
    record += struct.pack("<4f", nmea(lat), nmea(lon), knots, bearing) + bytes(12)
    body = bytearray(size)
    body[0:12] = struct.pack(">I", size) + b"freeGPS "
    body[12:16] = struct.pack("<I", {"A": 0x3F0, "B": 0x4C}.get(layout, 0x88))
    if layout == "shifted":
        # junk without status letters, plus a decoy marker where layout A has it whose date is
        # impossible: a reader must pass over both
        junk = bytes(
            rng.choice(b"0123456789:;<=>?@BCDEFGHIJKLMNOPQRTUXYZ\x01\xfe\xff") for _ in range(0x48)
        )
        body[16 : 16 + 0x48] = junk
        body[0x10:0x28] = struct.pack("<6I", 99, 99, 99, 99, 99, 99)
        body[0x28:0x2C] = b"ANE\0"
    at = RECORD_AT[layout]
    body[at : at + len(record)] = record
    return bytes(body)


@dataclass(frozen=True)
class Novatek:
    data: bytes
    fixes: tuple[Fix, ...]  # what a reader must find: the valid records, in order
    blocks: tuple[int, ...]  # offset of every freeGPS block, void ones included
    block_size: int
    index_at: int | None  # offset of the ``gps `` box
    count: int


def novatek_mp4(
    base: bytes,
    *,
    layout: str = "A",
    index: bool = True,
    index_after_traks: bool = False,
    count: int = 12,
    south: bool = False,
    west: bool = False,
    void: Sequence[int] = (),
    block_size: int = 0x8000,
    container: bytes = b"mdat",
    origin: tuple[float, float] = (48.858_37, 2.294_48),
    seed: int = 1,
    start: datetime = START,
) -> Novatek:
    """A clip with ``count`` freeGPS blocks (1 Hz) in a ``container`` box before moov."""
    rng = random.Random(seed)
    lat0 = -abs(origin[0]) if south else abs(origin[0])
    lon0 = -abs(origin[1]) if west else abs(origin[1])
    blocks: list[bytes] = []
    truth: list[Fix] = []
    for i in range(count):
        time = start + timedelta(seconds=i)
        lat = lat0 + (i * 0.0001 if lat0 >= 0 else -i * 0.0001)
        lon = lon0 + (i * 0.00015 if lon0 >= 0 else -i * 0.00015)
        knots, bearing = f32(20 + i * 0.37), f32((30.5 + 7 * i) % 360)
        status = b"V" if i in void else b"A"
        blocks.append(
            novatek_block(layout, block_size, time, status, lat, lon, knots, bearing, rng)
        )
        if status == b"A":
            truth.append(
                Fix(
                    time,
                    from_nmea(nmea(lat), lat < 0),
                    from_nmea(nmea(lon), lon < 0),
                    speed_kmh=knots * 1.852,
                    bearing_deg=bearing,
                )
            )
    gps_region = box(container, b"".join(blocks))
    moov_at = top_boxes(base)[-1][1]
    first = moov_at + 8
    offsets = tuple(first + i * block_size for i in range(count))
    entries = b"".join(struct.pack(">II", o, block_size) for o in offsets)
    gps = box(b"gps ", struct.pack(">II", 0x101, count) + entries) if index else b""
    data, index_at = rebuild(
        base, before_moov=gps_region, moov_extra=gps, after=b"" if index_after_traks else b"mvhd"
    )
    assert data[offsets[0] + 4 : offsets[0] + 12] == b"freeGPS "
    return Novatek(data, tuple(truth), offsets, block_size, index_at if index else None, count)


def set_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


# --- phone ISO 6709 -------------------------------------------------------------------------


def with_creation_time(data: bytes, when: datetime | None) -> bytes:
    """Set mvhd's creation time (version 0) to ``when`` (None: leave it 0)."""
    _, moov_at, size = top_boxes(data)[-1]
    for child, at, _ in top_boxes(data, moov_at + 8, moov_at + size):
        if child == b"mvhd":
            seconds = 0 if when is None else int((when - EPOCH_1904).total_seconds())
            return set_u32(data, at + 12, seconds)
    raise AssertionError("no mvhd")


def iso6709_mp4(base: bytes, text: str, created: datetime | None, *, apple: bool = False) -> bytes:
    """A clip whose moov carries ``text`` in udta/©xyz, or in Apple's meta keys/ilst."""
    value = text.encode()
    if apple:
        key = b"com.apple.quicktime.location.ISO6709"
        other = b"com.apple.quicktime.make"
        keys = struct.pack(">II", 0, 2)
        keys += b"".join(struct.pack(">I4s", 8 + len(k), b"mdta") + k for k in (other, key))
        item = box(struct.pack(">I", 2), box(b"data", struct.pack(">II", 1, 0) + value))
        make = box(struct.pack(">I", 1), box(b"data", struct.pack(">II", 1, 0) + b"Apple"))
        hdlr = box(b"hdlr", bytes(8) + b"mdta" + bytes(13))
        meta = box(b"meta", hdlr + box(b"keys", keys) + box(b"ilst", make + item))
        data, _ = rebuild(base, moov_extra=meta, after=b"")
    else:
        xyz = box(b"\xa9xyz", struct.pack(">HH", len(value), 0x15C7) + value)
        data, _ = rebuild(base, into_udta=xyz)
    return with_creation_time(data, created)


# --- GoPro GPMF -----------------------------------------------------------------------------


def klv(key: bytes, kind: str, size: int, payload: bytes) -> bytes:
    """One KLV entry, padded to 4 bytes; ``kind`` "\\0" nests."""
    repeat = len(payload) // size if size else 0
    head = key + struct.pack(">cBH", kind.encode("latin-1"), size, repeat)
    return head + payload + bytes(-len(payload) % 4)


def nest(key: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return key + struct.pack(">cBH", b"\0", 4, len(payload) // 4) + payload


@dataclass(frozen=True)
class GoPro:
    data: bytes
    fixes: tuple[Fix, ...]


def gps9_sample(
    start: datetime, n: int, lat: float, lon: float, fix: int = 3
) -> tuple[bytes, list[Fix]]:
    """One gpmd sample with a GPS9 stream of ``n`` fixes 0.1 s apart, and its truth."""
    scal = (10_000_000, 10_000_000, 1000, 1000, 100, 1, 1000, 100, 1)
    rows, truth = [], []
    for i in range(n):
        t = start + timedelta(seconds=i / 10)
        since = t - EPOCH_2000
        raw = (
            round((lat + i * 1e-5) * 1e7), round((lon - i * 1e-5) * 1e7), round(120.5 * 1000),
            round((8.25 + i) * 1000), round(8.3 * 100), since.days,
            round((since.seconds + since.microseconds / 1e6) * 1000), 150, fix,
        )  # fmt: skip
        rows.append(struct.pack(">7i2H", *raw))
        if fix:
            when = EPOCH_2000 + timedelta(days=raw[5], seconds=raw[6] / 1000)
            speed = raw[3] / 1000 * 3.6
            truth.append(
                Fix(when, raw[0] / 1e7, raw[1] / 1e7, speed_kmh=speed, alt_m=raw[2] / 1000)
            )
    stream = nest(
        b"STRM",
        klv(b"STNM", "c", 1, b"GPS (Lat., Long., Alt., 2D, 3D, days, secs, DOP, fix)"),
        klv(b"SCAL", "l", 4, struct.pack(">9i", *scal)),
        klv(b"TYPE", "c", 1, b"lllllllSS"),
        klv(b"GPS9", "?", 32, b"".join(rows)),
    )
    return nest(b"DEVC", klv(b"DVID", "L", 4, struct.pack(">I", 1)), stream), truth


def gps5_sample(gpsu: datetime, n: int, lat: float, lon: float) -> bytes:
    """One gpmd sample with a GPS5 stream of ``n`` fixes dated by GPSU."""
    rows = b"".join(
        struct.pack(">5i", round((lat + i * 1e-5) * 1e7), round(lon * 1e7), 5000, 2000 + i, 2100)
        for i in range(n)
    )
    stamp = gpsu.strftime("%y%m%d%H%M%S.") + f"{gpsu.microsecond // 1000:03d}"
    stream = nest(
        b"STRM",
        klv(b"GPSF", "L", 4, struct.pack(">I", 3)),
        klv(b"GPSU", "U", 16, stamp.encode()),
        klv(b"SCAL", "l", 4, struct.pack(">5i", 10_000_000, 10_000_000, 1000, 1000, 100)),
        klv(b"GPS5", "l", 20, rows),
    )
    return nest(b"DEVC", stream)


def gpmf_mp4(base: bytes, samples: Sequence[bytes], *, per_chunk: int = 2) -> bytes:
    """A clip with a ``gpmd`` track of ``samples`` (1 s each, ``per_chunk`` per chunk)."""
    data_box = box(b"mdat", b"".join(samples))
    moov_at = top_boxes(base)[-1][1]
    first = moov_at + 8
    offsets, pos = [], first
    for i, sample in enumerate(samples):
        if i % per_chunk == 0:
            offsets.append(pos)
        pos += len(sample)

    def full(kind: bytes, body: bytes) -> bytes:
        return box(kind, bytes(4) + body)

    stsd = full(b"stsd", struct.pack(">I", 1) + box(b"gpmd", bytes(6) + struct.pack(">H", 1)))
    stts = full(b"stts", struct.pack(">III", 1, len(samples), 1000))
    runs = [(1, per_chunk)]
    if len(samples) % per_chunk:  # the last chunk holds the rest
        runs.append((len(offsets), len(samples) % per_chunk))
    runs = runs[-1:] if len(offsets) == 1 else runs
    stsc = full(
        b"stsc",
        struct.pack(">I", len(runs)) + b"".join(struct.pack(">III", f, n, 1) for f, n in runs),
    )
    stsz = full(
        b"stsz",
        struct.pack(">II", 0, len(samples)) + b"".join(struct.pack(">I", len(s)) for s in samples),
    )
    stco = full(
        b"stco", struct.pack(">I", len(offsets)) + b"".join(struct.pack(">I", o) for o in offsets)
    )
    stbl = box(b"stbl", stsd + stts + stsc + stsz + stco)
    minf = box(b"minf", box(b"gmhd", b"") + stbl)
    hdlr = full(b"hdlr", bytes(4) + b"meta" + bytes(12) + b"\x0bGoPro MET  ")
    mdhd = full(b"mdhd", struct.pack(">IIII", 0, 0, 1000, 1000 * len(samples)) + bytes(4))
    tkhd = full(b"tkhd", struct.pack(">III", 0, 0, 9) + bytes(68))
    trak = box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))
    data, _ = rebuild(base, before_moov=data_box, moov_extra=trak, after=b"")
    return data


# --- damaged Novatek files ------------------------------------------------------------------


def corruptions(g: Novatek) -> dict[str, tuple[bytes, int]]:
    """Damaged copies of an indexed clip: name -> (file, fewest fixes a reader should find).

    The blocks themselves survive in most, so a reader that falls back to scanning finds all.
    """
    assert g.index_at is not None
    data, n, blocks = g.data, len(g.fixes), g.blocks
    entries = g.index_at + 16  # gps box header (8), version (4), count (4)
    gps_mdat = blocks[0] - 8
    return {
        "gps mdat size 4": (set_u32(data, gps_mdat, 4), n),
        "gps box size 3": (set_u32(data, g.index_at, 3), n),
        "index N past the box end": (set_u32(data, g.index_at + 12, g.count + 7), n),
        "index N huge": (set_u32(data, g.index_at + 12, 0xFFFF_FFFF), n),
        "entry past the file end": (set_u32(data, entries + 3 * 8, len(data) + 4096), n),
        "entry size past the file end": (set_u32(data, entries + 5 * 8 + 4, 0x7FFF_FFFF), n),
        "entry into the video": (set_u32(data, entries + 2 * 8, 100), n),
        "block header size 2": (set_u32(set_u32(data, g.index_at, 3), blocks[4], 2), n),
        "last block claims past the file end": (
            set_u32(set_u32(data, blocks[-1], 0x7FFF_0000), entries + (n - 1) * 8 + 4, 0x7FFF_0000),
            n - 1,
        ),
        "truncated last block": (data[: blocks[-1] + 100], n - 1),
        "truncated mid-mdat": (data[: blocks[6] + 6], 6),
        "truncated in the video": (data[: gps_mdat - 300], 0),
    }
