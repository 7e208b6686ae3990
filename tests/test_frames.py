"""Frame sampling (stages.frames): container timestamps, partial decoding, codecs, B-frames;
positions along a track (stages.gps.track.position_at / times_every); the motion filter."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import av
import av.video
import numpy as np
import pytest
from scenegen import make_scene, texture

from stages.frames import FrameSampler, every_seconds, read_ahead
from stages.gps import Fix
from stages.gps.track import haversine_m, position_at, times_every
from stages.motion import MotionFilter, distance

T0 = datetime(2026, 5, 13, 16, 0, 0, tzinfo=timezone.utc)


def all_frames(path: Path) -> dict[float, np.ndarray]:
    """Every frame of the clip by its time, decoded the plain way."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        origin = s.start_time or 0
        return {
            round(float((f.pts - origin) * s.time_base), 6): f.to_ndarray(format="gray")
            for f in c.decode(s)
        }


@pytest.fixture(scope="module")
def drive10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of a scrolling scene at 10 fps, a keyframe every second."""
    out = tmp_path_factory.mktemp("frames") / "drive.mp4"
    return make_scene(out, seconds=10, fps=10, drive=True)


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize(
    ("codec", "bframes"), [("libx264", 0), ("libx264", 3), ("libx265", 0), ("libx265", 2)]
)
def test_samples_are_the_exact_frames_at_or_after_each_moment(
    tmp_path: Path, codec: str, bframes: int
) -> None:
    clip = make_scene(
        tmp_path / "c.mp4", seconds=6, fps=10, drive=True, codec=codec, bframes=bframes, gop=15
    )
    truth = all_frames(clip)
    times = sorted(truth)
    moments = every_seconds(6, 3)  # denser than the keyframes: partial decoding of each GOP
    sampler = FrameSampler(clip, snap_to_keyframes=False)
    got = list(sampler.sample(moments))

    assert [s.target for s in got] == moments
    for s in got:
        want = next(t for t in times if t >= s.target - 1e-6)
        assert s.time == pytest.approx(want, abs=1e-6)
        # the very pixels a full decode gives: skipping packets broke no reference
        assert np.array_equal(s.frame.to_ndarray(format="gray"), truth[round(s.time, 6)])
    assert sampler.stats.decoded < sampler.stats.packets


def test_sparse_moments_in_open_gops_get_correct_pixels(tmp_path: Path) -> None:
    """x265 makes open GOPs: pictures shown just before a keyframe are decoded after it and
    need the previous GOP, which sparse sampling did not decode. They are never served."""
    clip = make_scene(
        tmp_path / "open.mp4", seconds=6, fps=10, drive=True, codec="libx265", bframes=3, gop=10
    )
    truth = all_frames(clip)
    moments = [0.25, 0.85, 1.95, 2.55, 3.85, 4.95]
    sampler = FrameSampler(clip, snap_to_keyframes=False)
    got = list(sampler.sample(moments))
    assert [s.target for s in got] == moments
    for s in got:
        assert s.target - 1e-6 <= s.time < s.target + 1.0
        assert np.array_equal(s.frame.to_ndarray(format="gray"), truth[round(s.time, 6)])
    assert sampler.stats.decoded < sampler.stats.packets / 2


def test_keyframes_only_when_sampling_no_faster_than_keyframes(drive10: Path) -> None:
    sampler = FrameSampler(drive10, snap_to_keyframes=True)
    got = list(sampler.sample(every_seconds(10, 1)))
    assert [s.time for s in got] == pytest.approx([float(i) for i in range(10)])
    assert all(s.keyframe for s in got)
    assert sampler.stats.decoded == 10, "one packet per sample: only keyframes were decoded"
    assert sampler.stats.packets == 100


def test_snapping_takes_the_nearest_keyframe_and_reports_its_real_time(tmp_path: Path) -> None:
    clip = make_scene(tmp_path / "g.mp4", seconds=8, fps=10, drive=True, gop=20)  # key every 2 s
    sampler = FrameSampler(clip, snap_to_keyframes=True)
    got = list(sampler.sample([0.3, 3.7, 5.9]))
    assert [(s.target, s.time, s.keyframe) for s in got] == [
        (0.3, 0.0, True),
        (3.7, 4.0, True),
        (5.9, 6.0, True),
    ]
    assert sampler.stats.decoded == 3


def test_gops_without_moments_are_never_decoded(drive10: Path) -> None:
    sampler = FrameSampler(drive10, snap_to_keyframes=False)
    got = list(sampler.sample([4.25, 4.75]))
    assert [round(s.time, 3) for s in got] == [4.3, 4.8]
    assert sampler.stats.decoded <= 9, "only the GOP at 4 s, up to the frame at 4.8 s"
    assert sampler.stats.gops_skipped >= 4


def test_times_come_from_timestamps_not_frame_counts(tmp_path: Path) -> None:
    """A variable-rate clip: 10 fps for 1 s, nothing for 3 s, 10 fps again (a camera that
    paused). Counting frames would put the second burst at 1.0 s."""
    path = tmp_path / "vfr.mp4"
    img = texture(160, 96)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        assert isinstance(stream, av.video.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"bf": "0", "g": "10"}
        for ms in [*range(0, 1000, 100), *range(4000, 5000, 100)]:
            frame = av.VideoFrame.from_ndarray(np.roll(img, ms // 10, axis=1), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    got = list(FrameSampler(path, snap_to_keyframes=False).sample([0.5, 2.0, 4.5]))
    assert [(s.target, round(s.time, 3)) for s in got] == [(0.5, 0.5), (2.0, 4.0), (4.5, 4.5)]


def test_moments_must_increase(drive10: Path) -> None:
    with pytest.raises(ValueError, match="increase"):
        list(FrameSampler(drive10).sample([2.0, 1.0]))


def test_every_seconds() -> None:
    assert every_seconds(3, 2) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert every_seconds(0.2, 1) == [0.0]
    with pytest.raises(ValueError):
        every_seconds(10, 0)


# --------------------------------------------------------------------------- positions
def line(speeds_mps: list[float], *, start: tuple[float, float] = (51.5, -0.1)) -> list[Fix]:
    """One fix per second heading north at the given speeds (m/s); speed recorded in km/h."""
    fixes, lat = [], start[0]
    for i, v in enumerate(speeds_mps):
        fixes.append(Fix(T0 + timedelta(seconds=i), lat, start[1], speed_kmh=v * 3.6))
        lat += v / 111_195.0  # metres of latitude per degree on the mean sphere
    return fixes


def test_position_is_interpolated_at_the_exact_time() -> None:
    a = Fix(T0, 51.0, -1.0, speed_kmh=36.0, bearing_deg=350.0, alt_m=10.0)
    b = Fix(T0 + timedelta(seconds=1), 51.001, -0.998, speed_kmh=54.0, bearing_deg=10.0)
    mid = position_at([a, b], T0 + timedelta(milliseconds=250))
    assert mid is not None
    assert (mid.lat, mid.lon) == pytest.approx((51.00025, -0.9995))
    assert mid.speed_kmh == pytest.approx(40.5)
    assert mid.bearing_deg == pytest.approx(355.0), "the short way round through north"
    assert mid.alt_m == 10.0, "altitude missing at one end: the nearer fix's"
    assert position_at([a, b], T0 + timedelta(seconds=1)) == b


def test_no_position_in_gaps_or_far_outside_the_track() -> None:
    a, b = Fix(T0, 51.0, -1.0), Fix(T0 + timedelta(seconds=30), 51.01, -1.0)
    assert position_at([a, b], T0 + timedelta(seconds=15)) is None
    assert position_at([a], T0 - timedelta(seconds=1)) is not None, "within half a gap: the fix"
    assert position_at([a], T0 + timedelta(seconds=10)) is None
    assert position_at([], T0) is None


def test_distance_moments_every_step_and_none_while_stopped() -> None:
    # 10 m/s for 10 s, stopped 20 s (GPS wander of a metre, speed ~0), 10 m/s for 10 s
    speeds = [10.0] * 10 + [0.0] * 20 + [10.0] * 10
    fixes = line(speeds)
    wander = [
        Fix(f.time, f.lat + (1e-5 if i % 2 else 0), f.lon, speed_kmh=0.5) if 10 < i <= 30 else f
        for i, f in enumerate(fixes)
    ]
    moments = [(t - T0).total_seconds() for t in times_every(wander, 20.0, stopped_below_kmh=3)]
    assert moments[0] == 0.0
    assert not [m for m in moments if 11.0 < m < 30.0], "no moment while standing still"
    assert len(moments) == pytest.approx(200 / 20 + 1, abs=1)
    for a, b in itertools.pairwise(moments):
        pa, pb = (
            position_at(wander, T0 + timedelta(seconds=a)),
            position_at(wander, T0 + timedelta(seconds=b)),
        )
        assert pa is not None and pb is not None
        assert haversine_m(pa, pb) == pytest.approx(20.0, abs=0.5)


# --------------------------------------------------------------------------- motion
def test_motion_scores_what_changed_and_hashes_match_repeats() -> None:
    still = texture(160, 90)
    looker = MotionFilter(pixel_threshold=25)
    first = looker.look(np.ascontiguousarray(still[:, :, 0]))
    rng = np.random.default_rng(3)
    noisy = np.clip(still[:, :, 0].astype(int) + rng.integers(-6, 7, still.shape[:2]), 0, 255)
    again = looker.look(noisy.astype(np.uint8))
    moved = still[:, :, 0].copy()
    moved[30:60, 40:80] = 255
    event = looker.look(moved)

    assert first.motion == 0.0, "nothing to compare the first sample with"
    assert again.motion < 0.005, "sensor noise is not motion"
    assert event.motion == pytest.approx(30 * 40 / (160 * 90), rel=0.35)
    assert distance(first.hash, again.hash) <= 4
    assert len(first.hash_hex) == 16


# --------------------------------------------------------------------------- read ahead
def test_read_ahead_yields_everything_in_order_and_raises_where_it_happened() -> None:
    def numbers(fail_at: int | None = None) -> Iterator[int]:
        for i in range(50):
            if i == fail_at:
                raise ValueError(f"bad item {i}")
            yield i

    assert list(read_ahead(numbers(), depth=3)) == list(range(50))
    got = []
    with pytest.raises(ValueError, match="bad item 7"):
        for i in read_ahead(numbers(fail_at=7)):
            got.append(i)
    assert got == list(range(7))


def test_read_ahead_stops_and_closes_the_source_when_the_caller_stops() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    for i in read_ahead(endless(), depth=2):
        if i == 5:
            break
    assert closed.wait(5), "the producer thread closed the source"
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_samples_read_ahead_match_samples_read_in_line(drive10: Path) -> None:
    plain = [
        (s.time, s.frame.to_ndarray(format="gray"))
        for s in FrameSampler(drive10).sample(every_seconds(10, 3))
    ]
    ahead = [
        (s.time, s.frame.to_ndarray(format="gray"))
        for s in read_ahead(FrameSampler(drive10).sample(every_seconds(10, 3)))
    ]
    assert [t for t, _ in plain] == [t for t, _ in ahead]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plain, ahead, strict=True))


def test_a_stream_without_timestamps_serves_nothing_and_says_so(
    drive10: Path, tmp_path: Path
) -> None:
    """A raw H.264 stream has no timestamps at all: no frame can be placed in time, and a
    frame count is not a time (the stream may have gaps)."""
    raw = tmp_path / "clip.h264"
    with av.open(str(drive10)) as src, av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    sampler = FrameSampler(raw)
    assert list(sampler.sample(every_seconds(10, 1))) == []
    assert sampler.stats.untimed == 100 and sampler.stats.streamed_from == 0
    assert sampler.stats.unserved == 10
