"""A generated ledger for bench/web.py: a dual-channel dashcam's two years, through the real schema.

    .venv/bin/python bench/web_ledger.py [--scale 0.01] [--seed 8] [--dir bench/results]

At ``scale`` 1: 100 000 clips (front and rear, one minute each: 50 000 moments) in trips of 5 to
150 minutes, two or three a day over 730 days around Munich; a GPS fix a second on both
channels (as the camera writes it into each file: 6 M track points); 1 000 000 detections and
200 000 plate readings of EU plates, a few hundred regular cars seen again and again among
one-offs, 4 % of readings with one OCR confusion (0/O, 8/B, ...); every clip archived, raw
clips older than 90 days deleted by retention.

``Ledger(path)`` creates the file, so the real migrations make the schema; the rows then go in
with ``executemany`` in one transaction per table. Seeded, so one set of parameters always
gives the same file; it is kept under ``<dir>/web-ledgers/`` by its parameters and reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from watchers.ledger import Ledger  # noqa: E402

VERSION = 2  # bump when the generator changes what it writes: the cache key includes it
CLIPS, DETECTIONS, PLATES = 100_000, 1_000_000, 200_000
DAYS = 730
FIRST_DAY = datetime(2024, 11, 1)
ZONE = ZoneInfo("Europe/Berlin")
HOME = (48.137, 11.575)
CLIP_SECONDS = 60
CHANNELS = ("F", "R")
EARTH_M = 6_371_008.8
LABELS = {  # class → share of tracks, and whether it carries a plate
    "car": (0.62, True),
    "truck": (0.08, True),
    "bus": (0.03, True),
    "motorcycle": (0.02, True),
    "person": (0.15, False),
    "bicycle": (0.05, False),
    "traffic light": (0.05, False),
}
CONFUSIONS = {"0": "O", "O": "0", "8": "B", "B": "8", "1": "I", "I": "1", "5": "S", "S": "5",
              "2": "Z", "Z": "2", "6": "G", "G": "6"}  # fmt: skip
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
DE_CITIES = ("M", "B", "HH", "K", "F", "S", "N", "A", "FS", "ED", "DAH", "STA", "RO", "EBE",
             "FFB", "LL", "PAF", "TS", "GAP", "WM", "IN", "R", "LA", "KA", "HD", "MZ")  # fmt: skip


@dataclass
class Spec:
    scale: float = 1.0
    seed: int = 8

    @property
    def clips(self) -> int:
        return max(20, round(CLIPS * self.scale) // 2 * 2)

    @property
    def detections(self) -> int:
        return max(10, round(DETECTIONS * self.scale))

    @property
    def plates(self) -> int:
        return max(5, round(PLATES * self.scale))

    def key(self) -> str:
        return f"v{VERSION}-c{self.clips}-d{self.detections}-p{self.plates}-s{self.seed}"


@dataclass
class Stats:
    trips: int = 0
    clips: int = 0
    track_points: int = 0
    detections: int = 0
    plates: int = 0
    distinct_plates: int = 0
    seconds: float = 0.0
    bytes: int = 0
    trip_clips: dict[str, int] = field(default_factory=dict)  # min, median, max


# ------------------------------------------------------------------------------ plate texts
def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(n))


def _digits(rng: random.Random, n: int, lead: bool = True) -> str:
    first = str(rng.randint(1, 9)) if lead else str(rng.randint(0, 9))
    return first + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def eu_plate(rng: random.Random) -> str:
    """One plate as the ledger stores it (its key: upper case, letters and digits only)."""
    r = rng.random()
    if r < 0.55:  # Germany: M AB 1234, with an E or H now and then
        text = (
            rng.choice(DE_CITIES)
            + _letters(rng, rng.choice((1, 2, 2)))
            + _digits(rng, rng.randint(1, 4))
        )
        return text + ("E" if rng.random() < 0.02 else "H" if rng.random() < 0.01 else "")
    if r < 0.67:  # Austria: S 123 AB
        return (
            rng.choice(("W", "S", "L", "I", "KU", "SL", "BR"))
            + _digits(rng, rng.randint(2, 4))
            + _letters(rng, rng.randint(1, 2))
        )
    if r < 0.74:  # Italy: AB 123 CD
        return _letters(rng, 2) + _digits(rng, 3, lead=False) + _letters(rng, 2)
    if r < 0.80:  # France: AB-123-CD
        return _letters(rng, 2) + _digits(rng, 3, lead=False) + _letters(rng, 2)
    if r < 0.86:  # Netherlands: 12-ABC-3 / AB-123-C
        if rng.random() < 0.5:
            return _digits(rng, 2) + _letters(rng, 3) + _digits(rng, 1)
        return _letters(rng, 2) + _digits(rng, 3) + _letters(rng, 1)
    if r < 0.91:  # Poland: WA 12345
        return rng.choice(("WA", "KR", "PO", "WE", "GD")) + _digits(rng, 5)
    if r < 0.95:  # Czechia: 1AB 2345
        return _digits(rng, 1) + _letters(rng, 2) + _digits(rng, 4, lead=False)
    if r < 0.98:  # Switzerland: ZH 123456
        return rng.choice(("ZH", "BE", "SG", "GR", "TI")) + _digits(rng, rng.randint(3, 6))
    return _digits(rng, 4, lead=False) + _letters(rng, 3)  # Spain: 1234 BCD


def misread(rng: random.Random, text: str) -> str:
    """The plate with one OCR confusion, when it has a character that can be confused."""
    spots = [i for i, ch in enumerate(text) if ch in CONFUSIONS]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + CONFUSIONS[text[i]] + text[i + 1 :]


# ----------------------------------------------------------------------------------- trips
def _trip_minutes(rng: random.Random, moments: int) -> list[int]:
    """Trip lengths (minutes = moments) summing to ``moments``: lognormal, 5 to 150."""
    out: list[int] = []
    left = moments
    while left > 0:
        n = int(min(150, max(5, rng.lognormvariate(math.log(22), 0.7))))
        n = min(n, left)
        out.append(n)
        left -= n
    return out


def _slots(rng: random.Random, trips: int, days: int) -> list[datetime]:
    """Local start times in time order: ``trips`` of the ``days`` x 4 slots (06:30, 10:30,
    14:30, 18:30, each +-30 min), so trips of up to 150 minutes never overlap."""
    if trips > days * 4:
        raise ValueError(f"{trips} trips do not fit in {days} days")
    out = []
    for slot in sorted(rng.sample(range(days * 4), trips)):
        day, k = divmod(slot, 4)
        minutes = (6.5 + 4 * k) * 60 + rng.randint(-30, 30)
        out.append(FIRST_DAY + timedelta(days=day, minutes=minutes))
    return out


def _track(rng: np.random.Generator, seconds: int) -> tuple[np.ndarray, ...]:
    """A drive: speed and heading wander smoothly; lat/lon integrate them from near home."""
    speed = np.clip(
        50 + np.cumsum(rng.normal(0, 1.2, seconds)) + 20 * np.sin(np.arange(seconds) / 300.0),
        0,
        130,
    )
    heading = rng.uniform(0, 360) + np.cumsum(rng.normal(0, 2.0, seconds))
    step = speed / 3.6  # m per second
    rad = np.radians(heading)
    lat0 = HOME[0] + rng.normal(0, 0.05)
    lon0 = HOME[1] + rng.normal(0, 0.08)
    lat = lat0 + np.cumsum(step * np.cos(rad)) / (EARTH_M * math.pi / 180)
    lon = lon0 + np.cumsum(step * np.sin(rad)) / (
        EARTH_M * math.pi / 180 * math.cos(math.radians(lat0))
    )
    alt = 520 + np.cumsum(rng.normal(0, 0.3, seconds))
    return lat, lon, speed, np.mod(heading, 360), alt


def _length_m(lat: np.ndarray, lon: np.ndarray) -> float:
    la, lo = np.radians(lat), np.radians(lon)
    h = (
        np.sin(np.diff(la) / 2) ** 2
        + np.cos(la[:-1]) * np.cos(la[1:]) * np.sin(np.diff(lo) / 2) ** 2
    )
    return float(np.sum(2 * EARTH_M * np.arcsin(np.minimum(1.0, np.sqrt(h)))))


def _ts(d: datetime) -> str:  # = watchers.catalog.ts for an aware UTC datetime
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


# ------------------------------------------------------------------------------- generator
def generate(path: Path, spec: Spec) -> Stats:
    """Write the ledger to ``path`` (which must not exist)."""
    t0 = time.perf_counter()
    rng, nrng = random.Random(spec.seed), np.random.default_rng(spec.seed)
    Ledger(path).close()  # the real migrations
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # a half-written file is thrown away, never used
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the indexes stay in memory while loading
    stats = Stats()
    moments = spec.clips // 2
    lengths = _trip_minutes(rng, moments)
    starts = _slots(rng, len(lengths), DAYS)
    now = _ts(datetime(2026, 11, 1, tzinfo=timezone.utc))
    deleted_before = datetime(2026, 8, 3, tzinfo=timezone.utc)  # retention: raw kept 90 days

    videos: list[dict[str, Any]] = []
    clip_geo: list[tuple[str, str, float, float, float, float, datetime, str]] = []
    trips: list[tuple[Any, ...]] = []
    db.execute("BEGIN")
    seq = 0
    for minutes, local0 in zip(lengths, starts, strict=True):
        utc0 = local0.replace(tzinfo=ZONE).astimezone(timezone.utc)
        lat, lon, spd, brg, alt = _track(nrng, minutes * CLIP_SECONDS)
        date = utc0.strftime("%Y-%m-%d")
        day0 = utc0.hour * 3600 + utc0.minute * 60 + utc0.second
        stamps = [
            f"{date}T{(day0 + s) // 3600:02d}:{(day0 + s) // 60 % 60:02d}:{(day0 + s) % 60:02d}"
            ".000000Z"
            for s in range(minutes * CLIP_SECONDS)
        ]
        columns = (lat, lon, spd.round(1), brg.round(1), alt.round(1))
        fixes = list(zip(stamps, *(c.tolist() for c in columns), strict=True))
        trip_id = None
        trip_clips = []
        points: list[tuple[Any, ...]] = []
        for m in range(minutes):
            seq += 1
            local = local0 + timedelta(seconds=m * CLIP_SECONDS)
            start = utc0 + timedelta(seconds=m * CLIP_SECONDS)
            end = start + timedelta(seconds=CLIP_SECONDS)
            moment = None
            for ch in CHANNELS:
                sha = _hex(rng, 256)
                vid = sha[:16]
                moment = moment or vid
                trip_id = trip_id or f"{start:%Y%m%d-%H%M%S}-{vid[:4]}"
                name = f"{local:%Y_%m%d_%H%M%S}_{seq % 1_000_000:06d}{ch}.MP4"
                folder = f"{local:%Y/%m/%d}"
                archived = end + timedelta(minutes=rng.randint(20, 600))
                objects = {"car": rng.randint(5, 60), "person": rng.randint(0, 10)}
                videos.append(
                    {
                        "video_id": vid,
                        "job": f"{name[:-4]}-{vid[:6]}",
                        "source_name": name,
                        "state": "archived",
                        "stage": "archive",
                        "priority": 0,
                        "recorded_at": local.isoformat(timespec="seconds"),
                        "created_at": _ts(end),
                        "updated_at": _ts(archived),
                        "last_error": None,
                        "kind": "video",
                        "sha256": sha,
                        "size_bytes": rng.randint(180_000_000, 260_000_000),
                        "source_path": f"DCIM/Movie/{name}",
                        "raw_path": f"{folder}/{name}",
                        "camera": "A229/A329",
                        "channel": ch,
                        "mode": "normal",
                        "locked": int(rng.random() < 0.01),
                        "start_utc": _ts(start),
                        "end_utc": _ts(end),
                        "time_source": "gps",
                        "duration_seconds": 60.0,
                        "gps_source": "viofo",
                        "gps_points": CLIP_SECONDS,
                        "moment_id": moment,
                        "trip_id": trip_id,
                        "frames_sampled": 60,
                        "frames_kept": rng.randint(20, 60),
                        "motion_max": round(rng.uniform(0.05, 0.6), 3),
                        "objects": json.dumps(objects, sort_keys=True),
                        "heavy_skipped": None,
                        "archive_path": f"{folder}/{vid}/{name}",
                        "archive_sha256": sha,
                        "archived_at": _ts(archived),
                        "raw_deleted_at": (
                            _ts(archived + timedelta(days=90))
                            if archived < deleted_before
                            else None
                        ),
                    }
                )
                first = m * CLIP_SECONDS
                points += [(vid, i, *f) for i, f in enumerate(fixes[first : first + CLIP_SECONDS])]
                stats.track_points += CLIP_SECONDS
                mid = first + CLIP_SECONDS // 2
                geo = (
                    float(lat[mid]),
                    float(lon[mid]),
                    float(lat[mid] - lat[first]),
                    float(lon[mid] - lon[first]),
                )
                clip_geo.append((vid, ch, *geo, start, trip_id))
                trip_clips.append(vid)
        assert trip_id is not None
        db.executemany("INSERT INTO track_points VALUES (?, ?, ?, ?, ?, ?, ?, ?)", points)
        end_utc = utc0 + timedelta(seconds=minutes * CLIP_SECONDS)
        distance = round(_length_m(lat, lon), 1)
        row = (trip_id, _ts(utc0), _ts(end_utc), len(trip_clips), minutes, distance, minutes * 60.0)
        trips.append((*row, now))
    names = ", ".join(videos[0])
    values = ", ".join(f":{k}" for k in videos[0])
    db.executemany(f"INSERT INTO videos ({names}) VALUES ({values})", videos)
    db.executemany("INSERT INTO trips VALUES (?, ?, ?, ?, ?, ?, ?, ?)", trips)
    db.execute("COMMIT")
    stats.trips, stats.clips = len(trips), len(videos)
    sizes = sorted(t[3] for t in trips)
    stats.trip_clips = {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]}
    took = time.perf_counter() - t0
    print(f"  {stats.clips} clips, {stats.trips} trips, {stats.track_points} points ({took:.0f} s)")
    _labels(db, spec, rng, nrng, clip_geo, stats)
    # no ANALYZE: the coordinator never runs it, so the planner sees what it sees in the field
    db.execute("PRAGMA journal_mode=WAL")  # as the ledger has it
    db.close()
    stats.seconds = round(time.perf_counter() - t0, 1)
    stats.bytes = path.stat().st_size
    return stats


def _labels(
    db: sqlite3.Connection,
    spec: Spec,
    rng: random.Random,
    nrng: np.random.Generator,
    clip_geo: list[tuple[Any, ...]],
    stats: Stats,
) -> None:
    """Detections spread over the clips (busy town clips, quiet motorway ones), plates on a
    random share of the vehicle tracks."""
    weights = nrng.gamma(1.5, 1.0, len(clip_geo))
    per_clip = nrng.multinomial(spec.detections, weights / weights.sum())
    names = list(LABELS)
    shares = np.array([LABELS[k][0] for k in names])
    label_of = nrng.choice(len(names), size=spec.detections, p=shares / shares.sum())
    vehicle = [i for i, k in enumerate(names) if LABELS[k][1]]
    is_vehicle = np.isin(label_of, vehicle)
    with_plate = np.zeros(spec.detections, dtype=bool)
    candidates = np.flatnonzero(is_vehicle)
    chosen = nrng.choice(candidates, size=min(spec.plates, len(candidates)), replace=False)
    with_plate[chosen] = True
    # plate texts: regulars (neighbours, the commute) make 30 % of readings, one-offs the rest
    regulars = [eu_plate(rng) for _ in range(max(5, spec.plates // 400))]
    reg_w = [1 / (k + 1) ** 0.8 for k in range(len(regulars))]
    pool = [eu_plate(rng) for _ in range(max(10, spec.plates // 2))]

    dets: list[tuple[Any, ...]] = []
    plates: list[tuple[Any, ...]] = []
    k = 0
    for (vid, _ch, lat, lon, dlat, dlon, start, _trip), n in zip(clip_geo, per_clip, strict=True):
        for track in range(1, int(n) + 1):
            first = round(rng.uniform(0, 55), 2)
            last = round(min(60.0, first + rng.expovariate(1 / 6)), 2)
            f = first / 60
            plat, plon = lat + dlat * (2 * f - 1), lon + dlon * (2 * f - 1)
            x1, y1 = rng.randint(0, 1700), rng.randint(200, 800)
            w = rng.randint(40, 400)
            label = names[label_of[k]]
            utc = start + timedelta(seconds=first)
            score, frames = round(rng.uniform(0.3, 0.98), 3), rng.randint(2, 300)
            where = (round(plat, 6), round(plon, 6))
            box = (x1, y1, x1 + w, y1 + w * 3 // 4)
            last_utc = _ts(start + timedelta(seconds=last))
            thumb = f"track-{track:04d}.jpg"
            dets.append(
                (
                    vid,
                    track,
                    label,
                    first,
                    last,
                    _ts(utc),
                    last_utc,
                    score,
                    frames,
                    *box,
                    *where,
                    thumb,
                )
            )
            if with_plate[k]:
                text = rng.choices(regulars, reg_w)[0] if rng.random() < 0.3 else rng.choice(pool)
                good = rng.random() >= 0.04
                at = round(first + rng.uniform(0, max(0.0, last - first)), 2)
                read = text if good else misread(rng, text)
                conf = round(rng.uniform(0.7, 0.99) if good else rng.uniform(0.4, 0.8), 3)
                reads, seen = rng.randint(1, 6), _ts(start + timedelta(seconds=at))
                plates.append(
                    (vid, track, read, conf, reads, at, seen, *where, f"plate-{track:04d}.jpg")
                )
            k += 1
    db.execute("BEGIN")
    db.executemany(f"INSERT INTO detections VALUES ({','.join(['?'] * 16)})", dets)
    db.executemany(f"INSERT INTO plates VALUES ({','.join(['?'] * 10)})", plates)
    db.execute("COMMIT")
    stats.detections, stats.plates = len(dets), len(plates)
    stats.distinct_plates = len({p[2] for p in plates})


# ----------------------------------------------------------------------------------- cache
def cached(spec: Spec, where: Path) -> tuple[Path, dict[str, Any]]:
    """The ledger for ``spec`` under ``where/web-ledgers/``, generated the first time."""
    folder = where / "web-ledgers"
    folder.mkdir(parents=True, exist_ok=True)
    path, meta = folder / f"ledger-{spec.key()}.db", folder / f"ledger-{spec.key()}.json"
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())
    for stale in folder.glob(f"ledger-{spec.key()}.db*"):
        stale.unlink()
    print(f"generating {path.name} (once; reused by later runs)", flush=True)
    tmp = path.with_suffix(".tmp.db")
    for stale in folder.glob(tmp.name + "*"):
        stale.unlink()
    stats = generate(tmp, spec)
    tmp.rename(path)
    info = {
        **stats.__dict__,
        "key": spec.key(),
        "scale": spec.scale,
        "seed": spec.seed,
        "sha256_schema": _schema_hash(path),
    }
    meta.write_text(json.dumps(info, indent=1) + "\n")
    print(f"  done in {stats.seconds} s, {stats.bytes / 2**20:.0f} MiB", flush=True)
    return path, info


def _schema_hash(path: Path) -> str:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
    db.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results")
    args = ap.parse_args()
    path, info = cached(Spec(args.scale, args.seed), args.dir)
    print(path)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
