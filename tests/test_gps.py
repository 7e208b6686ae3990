"""stages.gps: readers against generated files (truth) and against exiftool (an independent
reader), damaged and fuzzed files, the GoPro sample, and the track helpers."""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import av
import gpsgen
import gpxpy
import pytest

from stages.gps import READERS, Fix, Track, gpmf, novatek, read_track
from stages.gps.iso6709 import parse as parse_iso6709
from stages.gps.track import clean, haversine_m, length_m, read_gpx, to_geojson, to_gpx
from stages.mp4 import BoxReader

UTC = timezone.utc
T0 = datetime(2026, 5, 13, 17, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def base() -> bytes:
    return gpsgen.base_mp4()


def write(tmp_path: Path, data: bytes, name: str = "clip.mp4") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_same(
    got: tuple[Fix, ...], want: tuple[Fix, ...], tol: float = 1e-9, value_tol: float = 1e-6
) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        assert g.time == w.time
        assert abs(g.lat - w.lat) <= tol and abs(g.lon - w.lon) <= tol, (g, w)
        for key in ("speed_kmh", "bearing_deg", "alt_m"):
            a, b = getattr(g, key), getattr(w, key)
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= value_tol), (
                key,
                g,
                w,
            )


def exiftool_docs(exiftool: str, path: Path, *tags: str) -> list[dict[str, list[str]]]:
    """exiftool's embedded documents (Doc1, Doc2…) in order, each tag -> its values.

    ``-a`` keeps repeated tags (a GoPro sample holds many fixes); ``-j`` would drop them."""
    out = subprocess.run(
        [exiftool, "-ee", "-n", "-a", "-G3", "-s", *(f"-{t}" for t in tags), str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    docs: dict[int, dict[str, list[str]]] = {}
    for line in out.splitlines():
        m = re.match(r"\[Doc(\d+)\]\s+(\w+)\s*:\s*(.*)$", line)
        if m:
            docs.setdefault(int(m[1]), {}).setdefault(m[2], []).append(m[3])
    return [docs[k] for k in sorted(docs)]


def exif_time(text: str) -> datetime:
    stamp = datetime.strptime(
        text.rstrip("Z"), "%Y:%m:%d %H:%M:%S" + (".%f" if "." in text else "")
    )
    return stamp.replace(tzinfo=UTC)


# --- Novatek: generated files against their truth --------------------------------------------


@pytest.mark.parametrize("layout", ["A", "B", "shifted"])
@pytest.mark.parametrize("south,west", [(False, False), (True, True), (True, False), (False, True)])
@pytest.mark.parametrize("block_size", [0x4000, 0x8000])
def test_novatek_layouts_decode_to_the_truth(
    tmp_path: Path, base: bytes, layout: str, south: bool, west: bool, block_size: int
) -> None:
    """Every layout, hemisphere and block size decodes to the stored float32 values. The shifted
    layout has junk and a decoy marker with an impossible date where layout A keeps its record:
    truth only there, exiftool reads the decoy (it reports 2099:99:99 99:99:99)."""
    g = gpsgen.novatek_mp4(base, layout=layout, south=south, west=west, block_size=block_size)
    track = read_track(write(tmp_path, g.data))
    assert track.source == "novatek" and track.problems == ()
    assert_same(track.fixes, g.fixes)
    assert all((f.lat < 0) == south and (f.lon < 0) == west for f in track.fixes)


def test_generated_files_still_play(tmp_path: Path, base: bytes) -> None:
    """Inserting GPS boxes before and inside moov leaves the video's chunk offsets right."""
    variants = [
        gpsgen.novatek_mp4(base, layout="B").data,
        gpsgen.novatek_mp4(base, layout="A", index=False, container=b"free").data,
        gpsgen.iso6709_mp4(base, "+37.3318-122.0312+010.000/", T0),
        gpsgen.gpmf_mp4(base, [gpsgen.gps9_sample(T0, 5, 10.0, 20.0)[0]]),
    ]
    for i, data in enumerate(variants):
        with av.open(str(write(tmp_path, data, f"v{i}.mp4"))) as container:
            assert sum(1 for _ in container.decode(video=0)) == 20


def test_void_fixes_are_skipped_and_counted(tmp_path: Path, base: bytes) -> None:
    g = gpsgen.novatek_mp4(base, void=(0, 4, 5, 11))
    track = read_track(write(tmp_path, g.data))
    assert len(track.fixes) == 8
    assert_same(track.fixes, g.fixes)
    assert track.problems == ("freeGPS: 4 void (V) fixes skipped",)


@pytest.mark.parametrize("layout", ["A", "B", "shifted"])
@pytest.mark.parametrize("container", [b"mdat", b"free"])
@pytest.mark.parametrize("chunk", [37, 5000, novatek.CHUNK])
def test_without_index_the_scan_finds_every_block(
    tmp_path: Path,
    base: bytes,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    container: bytes,
    chunk: int,
) -> None:
    """Small chunk sizes put signatures across chunk boundaries. Truth only: exiftool's own scan
    knows only layout B in an mdat (it is compared for B in test_novatek_agrees_with_exiftool)."""
    monkeypatch.setattr(novatek, "CHUNK", chunk)
    g = gpsgen.novatek_mp4(base, layout=layout, index=False, container=container)
    track = read_track(write(tmp_path, g.data))
    assert_same(track.fixes, g.fixes)
    assert track.problems == ()


def test_index_after_the_tracks_is_read(tmp_path: Path, base: bytes) -> None:
    """Truth only: exiftool reads ``gps `` only before the traks and its fallback scan knows
    only layout B, so it finds nothing in this layout-A file."""
    g = gpsgen.novatek_mp4(base, layout="A", index_after_traks=True)
    assert_same(read_track(write(tmp_path, g.data)).fixes, g.fixes)


def test_the_index_is_used_when_present(
    tmp_path: Path, base: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sound index means no scan (which would cost a read of the whole mdat)."""
    g = gpsgen.novatek_mp4(base)

    def no_scan(self: object) -> None:
        raise AssertionError("scanned despite a good index")

    monkeypatch.setattr(novatek._Reader, "scan", no_scan)
    assert_same(read_track(write(tmp_path, g.data)).fixes, g.fixes)


# --- Novatek against exiftool ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"layout": "A"},
        {"layout": "B"},
        {"layout": "B", "index": False},
        {"layout": "A", "south": True, "west": True, "void": (1, 2)},
        {"layout": "B", "south": True, "block_size": 0x4000},
        {"layout": "B", "west": True, "index": False, "void": (0,)},
    ],
    ids=["A", "B", "B-no-index", "A-SW-void", "B-S-16k", "B-W-no-index-void"],
)
def test_novatek_agrees_with_exiftool(
    tmp_path: Path, base: bytes, exiftool: str, options: dict[str, object]
) -> None:
    g = gpsgen.novatek_mp4(base, **options)  # type: ignore[arg-type]
    path = write(tmp_path, g.data)
    ours = read_track(path).fixes
    tags = ("GPSDateTime", "GPSLatitude", "GPSLongitude", "GPSSpeed", "GPSTrack")
    docs = exiftool_docs(exiftool, path, *tags)
    assert len(docs) == len(ours) == len(g.fixes)
    for fix, doc in zip(ours, docs, strict=True):
        assert fix.time == exif_time(doc["GPSDateTime"][0])
        assert abs(fix.lat - float(doc["GPSLatitude"][0])) <= 1e-6
        assert abs(fix.lon - float(doc["GPSLongitude"][0])) <= 1e-6
        assert fix.speed_kmh is not None and fix.bearing_deg is not None
        assert abs(fix.speed_kmh - float(doc["GPSSpeed"][0])) <= 1e-6
        assert abs(fix.bearing_deg - float(doc["GPSTrack"][0])) <= 1e-6


# --- damaged and fuzzed files ----------------------------------------------------------------


def no_reader_failed(track: Track) -> bool:
    return not any("reader failed" in p for p in track.problems)


CORRUPTIONS = [
    "gps mdat size 4",
    "gps box size 3",
    "index N past the box end",
    "index N huge",
    "entry past the file end",
    "entry size past the file end",
    "entry into the video",
    "block header size 2",
    "last block claims past the file end",
    "truncated last block",
    "truncated mid-mdat",
    "truncated in the video",
]


@pytest.fixture(scope="module")
def damaged(base: bytes) -> tuple[gpsgen.Novatek, dict[str, tuple[bytes, int]]]:
    g = gpsgen.novatek_mp4(base, layout="B")
    return g, gpsgen.corruptions(g)


def test_every_corruption_is_tested(damaged: tuple[gpsgen.Novatek, dict[str, object]]) -> None:
    assert sorted(damaged[1]) == sorted(CORRUPTIONS)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_damaged_files_give_what_survives_and_say_why(
    tmp_path: Path, damaged: tuple[gpsgen.Novatek, dict[str, tuple[bytes, int]]], name: str
) -> None:
    g, variants = damaged
    data, fewest = variants[name]
    track = read_track(write(tmp_path, data))
    assert track.problems, "a damaged file must say what is wrong"
    assert no_reader_failed(track), track.problems
    assert len(track.fixes) >= fewest
    truth = {(f.time, f.lat, f.lon) for f in g.fixes}
    assert all((f.time, f.lat, f.lon) in truth for f in track.fixes)


def mutate(data: bytes, rng: random.Random, hot: list[int]) -> bytes:
    """A random truncation, byte flips anywhere, or extreme u32s near structure (``hot``)."""
    kind = rng.randrange(3)
    if kind == 0:
        return data[: rng.randrange(len(data))]
    out = bytearray(data)
    if kind == 1:
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    else:
        for _ in range(rng.randint(1, 4)):
            at = min(max(0, rng.choice(hot) + rng.randrange(-16, 64)), len(out) - 4)
            value = rng.choice(
                [0, 1, 7, 8, 12, 0x7FFF_FFFF, 0xFFFF_FFFF, len(out), rng.getrandbits(32)]
            )
            out[at : at + 4] = value.to_bytes(4, "big")
    return bytes(out)


def fuzz(tmp_path: Path, data: bytes, hot: list[int], rounds: int, seed: int) -> int:
    """Runs read_track on ``rounds`` mutants; returns how many still gave fixes."""
    rng = random.Random(seed)
    path = tmp_path / "fuzz.mp4"
    with_fixes = 0
    for _ in range(rounds):
        path.write_bytes(mutate(data, rng, hot))
        track = read_track(path)
        assert isinstance(track, Track)
        assert no_reader_failed(track), track.problems
        with_fixes += bool(track.fixes)
    return with_fixes


def test_fuzzed_novatek_files_never_break_the_reader(tmp_path: Path, base: bytes) -> None:
    g = gpsgen.novatek_mp4(base, layout="B", count=6, block_size=0x4000)
    assert g.index_at is not None
    moov = gpsgen.top_boxes(g.data)[-1][1]
    hot = [g.index_at, moov, *g.blocks, *(b + 0x30 for b in g.blocks)]
    assert fuzz(tmp_path, g.data, hot, rounds=300, seed=7) > 150  # most damage is survivable


def test_fuzzed_gpmf_files_never_break_the_reader(tmp_path: Path, base: bytes) -> None:
    samples = [gpsgen.gps9_sample(T0 + timedelta(seconds=i), 10, 45.0, 7.0)[0] for i in range(4)]
    samples.append(gpsgen.gps5_sample(T0 + timedelta(seconds=4), 10, 45.0, 7.0))
    data = gpsgen.gpmf_mp4(base, samples)
    moov = gpsgen.top_boxes(data)[-1][1]
    trak = data.rfind(b"trak") - 4
    hot = [moov, trak, trak + 100, trak + 200, data.rfind(b"stsz"), data.rfind(b"stco"), 200]
    mdat = data.find(b"DEVC", gpsgen.top_boxes(base)[-1][1])
    hot += [mdat + i * len(samples[0]) for i in range(len(samples))]
    assert fuzz(tmp_path, data, hot, rounds=200, seed=11) > 50


def test_no_gps_and_no_mp4(tmp_path: Path, base: bytes) -> None:
    assert read_track(write(tmp_path, base)) == Track(None, ())
    junk = read_track(write(tmp_path, bytes(range(256)) * 64, "junk.bin"))
    assert junk.source is None and junk.fixes == ()
    assert read_track(write(tmp_path, b"", "empty.mp4")) == Track(None, ())
    with pytest.raises(OSError):
        read_track(tmp_path / "missing.mp4")


# --- GoPro GPMF ------------------------------------------------------------------------------


@pytest.mark.testdata
def test_gopro_sample_matches_exiftool(testdata: Path, exiftool: str) -> None:
    """Same fixes as exiftool: count, lat/lon within 1e-6, 2D speed; exiftool dates each gpmd
    sample once (GPSDateTime = GPSU): our first fix of a sample carries that time and the
    sample's other fixes are spread over its duration."""
    path = testdata / "video" / "gopro_max-heromode.mp4"
    track = read_track(path)
    assert track.source == "gpmf" and track.problems == ()
    tags = ("GPSLatitude", "GPSLongitude", "GPSSpeed", "GPSAltitude", "GPSDateTime")
    docs = exiftool_docs(exiftool, path, *tags, "SampleDuration")
    docs = [d for d in docs if "GPSLatitude" in d]
    # testdata/README says 192: exiftool's 192nd GPSLatitude is the udta ©xyz, not the track
    assert len(track.fixes) == sum(len(d["GPSLatitude"]) for d in docs) == 191
    fixes = iter(track.fixes)
    for doc in docs:
        start = exif_time(doc["GPSDateTime"][0])
        duration = timedelta(seconds=float(doc["SampleDuration"][0]))
        for i, lat in enumerate(doc["GPSLatitude"]):
            fix = next(fixes)
            assert abs(fix.lat - float(lat)) <= 1e-6
            assert abs(fix.lon - float(doc["GPSLongitude"][i])) <= 1e-6
            assert fix.speed_kmh is not None and fix.alt_m is not None
            assert abs(fix.speed_kmh / 3.6 - float(doc["GPSSpeed"][i])) <= 1e-6
            assert abs(fix.alt_m - float(doc["GPSAltitude"][i])) <= 1e-6
            assert start <= fix.time < start + duration
            if i == 0:
                assert fix.time == start
    times = [f.time for f in track.fixes]
    assert all(a < b for a, b in itertools.pairwise(times))


@pytest.mark.testdata
def test_gopro_sample_udta_location(testdata: Path) -> None:
    """The GoPro also writes a phone-style ©xyz; its mvhd time is local (8 h off the GPS)."""
    path = testdata / "video" / "gopro_max-heromode.mp4"
    with open(path, "rb") as f:
        track = READERS["iso6709"](f, BoxReader(f))
    assert track is not None and len(track.fixes) == 1
    fix = track.fixes[0]
    assert (fix.lat, fix.lon) == (33.1268, -117.3273)
    assert fix.time == datetime(2019, 11, 18, 15, 45, 32, tzinfo=UTC)


def test_gpmf_gps9_decodes_to_the_truth(tmp_path: Path, base: bytes) -> None:
    """GPS9 (exiftool 12.57 predates it, so truth only): per-fix time, SCAL per column,
    fix type 0 skipped, samples spread over chunks of 2 and 3."""
    samples, truth = [], []
    for i in range(5):
        data, fixes = gpsgen.gps9_sample(
            T0 + timedelta(seconds=i), 10, -33.9, 151.2, fix=3 if i != 2 else 0
        )
        samples.append(data)
        truth += fixes
    for per_chunk in (1, 2, 3):
        track = read_track(write(tmp_path, gpsgen.gpmf_mp4(base, samples, per_chunk=per_chunk)))
        assert track.source == "gpmf"
        assert_same(track.fixes, tuple(truth))
        assert track.problems == ("gpmf: 10 fixes without a GPS lock skipped",)


def test_gpmf_gps5_agrees_with_exiftool(tmp_path: Path, base: bytes, exiftool: str) -> None:
    gpsu = T0 + timedelta(milliseconds=250)
    samples = [gpsgen.gps5_sample(gpsu + timedelta(seconds=i), 18, 51.5, -0.12) for i in range(3)]
    path = write(tmp_path, gpsgen.gpmf_mp4(base, samples))
    track = read_track(path)
    docs = exiftool_docs(exiftool, path, "GPSLatitude", "GPSLongitude", "GPSSpeed", "GPSDateTime")
    assert [len(d["GPSLatitude"]) for d in docs] == [18, 18, 18]
    exif = [
        (float(a), float(o))
        for d in docs
        for a, o in zip(d["GPSLatitude"], d["GPSLongitude"], strict=True)
    ]
    assert len(track.fixes) == len(exif)
    for fix, (lat, lon) in zip(track.fixes, exif, strict=True):
        assert abs(fix.lat - lat) <= 1e-6 and abs(fix.lon - lon) <= 1e-6
    assert [track.fixes[18 * i].time for i in range(3)] == [
        exif_time(d["GPSDateTime"][0]) for d in docs
    ]
    assert track.fixes[1].time - track.fixes[0].time == timedelta(seconds=1 / 18)


def test_gpmf_sample_table_is_bounded(tmp_path: Path, base: bytes) -> None:
    """A sample count of 2**32-1 in stsz is clamped to the entries present."""
    samples = [gpsgen.gps9_sample(T0, 3, 1.0, 2.0)[0]]
    data = gpsgen.gpmf_mp4(base, samples)
    stsz = data.rfind(b"stsz")
    data = gpsgen.set_u32(data, stsz + 12, 0xFFFF_FFFF)
    with open(write(tmp_path, data), "rb") as f:
        track = gpmf.read(f, BoxReader(f))
    assert track is not None and len(track.fixes) == 3


# --- phones: ISO 6709 ------------------------------------------------------------------------


@pytest.mark.parametrize("apple", [False, True])
def test_iso6709_location_becomes_one_fix(tmp_path: Path, base: bytes, apple: bool) -> None:
    data = gpsgen.iso6709_mp4(base, "+37.3318-122.0312+010.000/", T0, apple=apple)
    track = read_track(write(tmp_path, data))
    assert track == Track("iso6709", (Fix(T0, 37.3318, -122.0312, alt_m=10.0),))


def test_iso6709_without_creation_time_is_a_problem(tmp_path: Path, base: bytes) -> None:
    track = read_track(write(tmp_path, gpsgen.iso6709_mp4(base, "+37.3318-122.0312/", None)))
    assert track.source is None and track.fixes == ()
    assert any("no creation time" in p for p in track.problems)


@pytest.mark.parametrize(
    "text,want",
    [
        ("+37.3318-122.0312+010.000/", (37.3318, -122.0312, 10.0)),
        ("-33.8688+151.2093/", (-33.8688, 151.2093, None)),
        ("+4012-07530/", (40.2, -75.5, None)),
        (
            "+401230.5-0753015CRSWGS_84/",
            (40 + 12 / 60 + 30.5 / 3600, -(75 + 30 / 60 + 15 / 3600), None),
        ),
        ("+90.0000+180.0000/", (90.0, 180.0, None)),
    ],
)
def test_iso6709_parse(text: str, want: tuple[float, float, float | None]) -> None:
    lat, lon, alt = parse_iso6709(text)
    assert lat == pytest.approx(want[0], abs=1e-12) and lon == pytest.approx(want[1], abs=1e-12)
    assert alt == want[2]


@pytest.mark.parametrize(
    "text",
    ["", "37.33-122.03/", "+91.0000+010.0000/", "+45.0+181.0/", "+4575-07530/", "+45.0+010.0/junk"],
)
def test_iso6709_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso6709(text)


# --- Fix -------------------------------------------------------------------------------------


def test_fix_json_round_trip() -> None:
    fix = Fix(T0 + timedelta(microseconds=58882), -33.123456789, 151.5, 12.345, 359.5, -3.25)
    data = fix.to_json()
    assert data == {
        "time": "2026-05-13T17:00:00.058882Z",
        "lat": -33.1234568,
        "lon": 151.5,
        "speed_kmh": 12.35,
        "bearing_deg": 359.5,
        "alt_m": -3.25,
    }
    back = Fix.from_json(json.loads(json.dumps(data)))
    assert back.time == fix.time and back.lat == -33.1234568
    assert Fix.from_json({"time": "2026-05-13T19:00:00+02:00", "lat": 1, "lon": 2}).time == T0
    assert Fix(T0, 1, 2).to_json() == {"time": "2026-05-13T17:00:00Z", "lat": 1.0, "lon": 2.0}


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"lat": 1, "lon": 2},
        {"time": "yesterday", "lat": 1, "lon": 2},
        {"time": "2026-05-13T17:00:00", "lat": 1, "lon": 2},  # no timezone
        {"time": "2026-05-13T17:00:00Z", "lat": 91, "lon": 2},
        {"time": "2026-05-13T17:00:00Z", "lat": 1, "lon": -180.5},
        {"time": "2026-05-13T17:00:00Z", "lat": 1},
        {"time": "2026-05-13T17:00:00Z", "lat": "1", "lon": 2},
        {"time": "2026-05-13T17:00:00Z", "lat": True, "lon": 2},
        {"time": "2026-05-13T17:00:00Z", "lat": float("nan"), "lon": 2},
        {"time": "2026-05-13T17:00:00Z", "lat": 1, "lon": 2, "speed_kmh": -1},
        {"time": "2026-05-13T17:00:00Z", "lat": 1, "lon": 2, "bearing_deg": 400},
        {"time": "2026-05-13T17:00:00Z", "lat": 1, "lon": 2, "alt_m": float("inf")},
    ],
)
def test_fix_from_json_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        Fix.from_json(bad)


# --- cleaning and distances ------------------------------------------------------------------


def walk(n: int, *, step_s: float = 1.0, start: datetime = T0) -> list[Fix]:
    """``n`` fixes at ~50 km/h going north."""
    return [
        Fix(start + timedelta(seconds=i * step_s), 45.0 + i * step_s * 0.000125, 7.0)
        for i in range(n)
    ]


def test_haversine_and_length() -> None:
    a, b = Fix(T0, 0.0, 0.0), Fix(T0, 0.0, 1.0)
    assert haversine_m(a, b) == pytest.approx(111_195, rel=1e-4)
    assert length_m([a, b, Fix(T0, 1.0, 1.0)]) == pytest.approx(2 * 111_195, rel=1e-3)
    assert length_m([]) == 0 and length_m([a]) == 0


def test_clean_drops_a_single_outlier_not_the_rest() -> None:
    fixes = walk(20)
    outlier = Fix(fixes[7].time, 45.05, 7.0)  # 5 km off for one second
    track = [*fixes[:7], outlier, *fixes[8:]]
    kept, problems = clean(track)
    assert kept == tuple(clean(fixes[:7] + fixes[8:])[0])
    assert len(kept) == 19 and outlier not in kept
    assert problems == ["dropped 1 fixes with implausible jumps (over 300 km/h)"]


def test_clean_drops_a_first_point_outlier() -> None:
    fixes = walk(10)
    kept, _ = clean([Fix(fixes[0].time - timedelta(seconds=1), 46.0, 7.0), *fixes])
    assert [(f.time, f.lat) for f in kept] == [(f.time, f.lat) for f in fixes]


def test_clean_keeps_a_real_jump_after_a_gap_and_long_runs() -> None:
    first = walk(5)
    later = walk(5, start=T0 + timedelta(hours=1))  # 1 h later, the same road: plausible
    far = [Fix(T0 + timedelta(seconds=10 + i), 46.0 + i * 0.0001, 7.0) for i in range(5)]
    assert len(clean(first + later)[0]) == 10
    kept, problems = clean(walk(5) + far)  # 110 km in 5 s, but 5 fixes agree with each other
    assert len(kept) == 10 and problems == []


def test_clean_sorts_drops_duplicates_and_fills_speed_and_bearing() -> None:
    fixes = walk(6)
    given = Fix(fixes[3].time, fixes[3].lat, fixes[3].lon, speed_kmh=12.0, bearing_deg=90.0)
    shuffled = [fixes[5], fixes[0], fixes[1], fixes[1], given, fixes[2], fixes[4]]
    shuffled.append(Fix(fixes[2].time, 45.0001, 7.0))  # same time, other place
    kept, problems = clean(shuffled)
    assert [f.time for f in kept] == [f.time for f in fixes]
    assert problems == ["dropped 2 duplicate fixes (same time)"]
    assert (kept[3].speed_kmh, kept[3].bearing_deg) == (12.0, 90.0)  # what came with it
    for fix in kept[:3] + kept[4:]:
        assert fix.speed_kmh == pytest.approx(50.0, rel=0.01)
        assert fix.bearing_deg == pytest.approx(0.0, abs=1e-6)


def test_clean_of_nothing_and_one() -> None:
    assert clean([]) == ((), [])
    one = Fix(T0, 1.0, 2.0)
    assert clean([one]) == ((one,), [])


# --- GPX and GeoJSON -------------------------------------------------------------------------


def sample_fixes() -> list[Fix]:
    return [
        Fix(T0 + timedelta(seconds=i), -33.9 + i * 1e-4, 151.2, 36.0 + i, 45.0, 12.5 + i)
        for i in range(5)
    ]


def test_gpx_round_trip(tmp_path: Path) -> None:
    fixes = sample_fixes()
    text = to_gpx(fixes, name="2026_0513_172152_000120F", description="front camera")
    assert 'version="1.1"' in text and "http://www.topografix.com/GPX/1/1" in text
    gpx = gpxpy.parse(text)
    assert gpx.tracks[0].name == "2026_0513_172152_000120F"
    assert gpx.tracks[0].description == "front camera"
    points = gpx.tracks[0].segments[0].points
    assert [(p.latitude, p.longitude, p.elevation, p.time) for p in points] == [
        (f.lat, f.lon, f.alt_m, f.time) for f in fixes
    ]
    path = tmp_path / "t.gpx"
    path.write_text(text)
    back = read_gpx(path)
    assert_same(back, tuple(fixes), tol=0, value_tol=1e-4)  # speed travels as m/s, 6 decimals


def test_geojson_feature() -> None:
    fixes = sample_fixes()
    feature = to_geojson(fixes, properties={"clip": "a.mp4"})
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "LineString"
    assert feature["geometry"]["coordinates"][0] == [151.2, -33.9, 12.5]
    assert feature["properties"]["clip"] == "a.mp4"
    assert feature["properties"]["times"][0] == "2026-05-13T17:00:00Z"
    assert len(feature["properties"]["times"]) == 5
    point = to_geojson([Fix(T0, 1.0, 2.0)], properties={})
    assert point["geometry"] == {"type": "Point", "coordinates": [2.0, 1.0]}
    json.dumps(feature)  # plain JSON


GPX_HEAD = (
    '<?xml version="1.0"?><gpx version="1.1" creator="t" xmlns="http://www.topografix.com/GPX/1/1">'
)


def test_read_gpx_good(tmp_path: Path) -> None:
    path = tmp_path / "ok.gpx"
    path.write_text(
        GPX_HEAD
        + '<wpt lat="1" lon="1"><time>2026-05-13T17:00:00Z</time></wpt>'
        + '<trk><trkseg><trkpt lat="45.1" lon="7.1"><time>2026-05-13T17:00:00</time></trkpt>'
        + '<trkpt lat="45.2" lon="7.2"></trkpt></trkseg>'
        + '<trkseg><trkpt lat="-45.3" lon="-7.3"><ele>12</ele>'
        + "<time>2026-05-13T19:00:01+02:00</time></trkpt></trkseg></trk></gpx>"
    )
    fixes = read_gpx(path)
    assert fixes == (Fix(T0, 45.1, 7.1), Fix(T0 + timedelta(seconds=1), -45.3, -7.3, alt_m=12.0))


@pytest.mark.parametrize(
    "body,why",
    [
        ("hello", "no <gpx>"),
        (GPX_HEAD + "<trk><trkseg><trkpt", "Error parsing XML"),
        ('<?xml version="1.0"?><!DOCTYPE gpx [<!ENTITY a "aaaa">]><gpx></gpx>', "DTD"),
        (GPX_HEAD + '<trk><trkseg><trkpt lat="95" lon="1"><time>2026-05-13T17:00:00Z</time>'
         "</trkpt></trkseg></trk></gpx>", "lat"),
        (GPX_HEAD + '<trk><trkseg><trkpt lat="5" lon="-181"><time>2026-05-13T17:00:00Z</time>'
         "</trkpt></trkseg></trk></gpx>", "lon"),
        (GPX_HEAD + '<trk><trkseg><trkpt lat="x" lon="1"></trkpt></trkseg></trk></gpx>', "x"),
    ],
)  # fmt: skip
def test_read_gpx_rejects(tmp_path: Path, body: str, why: str) -> None:
    path = tmp_path / "bad.gpx"
    path.write_text(body)
    with pytest.raises(ValueError, match=r"^not a GPX file: bad\.gpx") as err:
        read_gpx(path)
    assert why in str(err.value)


def test_read_gpx_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.gpx"
    path.write_text(GPX_HEAD + " " * 5000 + "</gpx>")
    with pytest.raises(ValueError, match="over the 1024 limit"):
        read_gpx(path, max_bytes=1024)
    assert read_gpx(path) == ()


def test_hostile_files_are_read_in_bounded_time(tmp_path: Path, base: bytes) -> None:
    """Signatures every 12 bytes with impossible sizes, and a gpmd table claiming 200 000
    samples of 4 MiB: both stop after reading about twice the file, saying so."""
    signatures = (b"\xff\xff\xff\xf0freeGPS " * 90_000)[: 1 << 20]
    data, _ = gpsgen.rebuild(base, before_moov=gpsgen.box(b"mdat", signatures))
    track = read_track(write(tmp_path, data))
    assert "stopped reading freeGPS blocks: read twice the file's size" in track.problems

    data = gpsgen.gpmf_mp4(base, [gpsgen.gps9_sample(T0, 3, 1.0, 2.0)[0]])
    stsz = data.rfind(b"stsz")
    data = gpsgen.set_u32(gpsgen.set_u32(data, stsz + 8, 4 << 20), stsz + 12, 200_000)
    stsc = data.rfind(b"stsc")
    data = gpsgen.set_u32(data, stsc + 16, 0xFFFF_FFFF)  # samples per chunk
    track = read_track(write(tmp_path, data))
    assert len(track.fixes) == 3  # the one real sample
    assert any("stopped reading samples" in p for p in track.problems), track.problems
