"""probe_video: good videos give facts, each kind of bad file gives a sentence by category."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from mediagen import (
    make_audio_only,
    make_image,
    make_video,
    open_ended_mdat,
    pad_mdat,
    random_bytes,
    remove_box,
    scramble_samples,
    top_boxes,
    truncate,
)

from stages.probe import VideoInfo, probe_video
from watchers.errors import Rejected


def rejected(path: Path) -> str:
    with pytest.raises(Rejected) as info:
        probe_video(path)
    return str(info.value)


# --- good files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "container", "codec"),
    [
        ("clip.MP4", "mp4", "h264"),
        ("clip.MOV", "mov", "h264"),
        ("clip.TS", "mpegts", "h264"),
        ("clip.mkv", "matroska", "h264"),
        ("clip.AVI", "avi", "mjpeg"),  # old dashcams: a motion-JPEG video is no still image
        ("clip.mov", "mov", "mjpeg"),
    ],
)
def test_good_video_in_each_container(
    tmp_path: Path, name: str, container: str, codec: str
) -> None:
    path = make_video(tmp_path / name, seconds=2, fps=10, container=container, codec=codec)
    info = probe_video(path)
    assert (info.width, info.height, info.codec) == (160, 120, codec)
    assert info.fps == pytest.approx(10)
    assert info.duration_seconds == pytest.approx(2, abs=0.2)
    assert not info.has_audio
    assert info.creation_time is None


def test_mp4_facts(tmp_path: Path) -> None:
    info = probe_video(make_video(tmp_path / "a.MP4", seconds=1.5, fps=20, audio=True))
    assert info == VideoInfo(
        duration_seconds=pytest.approx(1.5),  # type: ignore[arg-type]
        width=160,
        height=120,
        fps=20.0,
        codec="h264",
        frames=30,
        has_audio=True,
        creation_time=None,
        container="mov,mp4,m4a,3gp,3g2,mj2",
    )


def test_transport_stream_has_no_frame_count(tmp_path: Path) -> None:
    info = probe_video(make_video(tmp_path / "a.TS", container="mpegts", audio=True))
    assert info.frames is None and info.has_audio and info.container == "mpegts"


def test_hevc(tmp_path: Path) -> None:
    info = probe_video(make_video(tmp_path / "a.MP4", codec="hevc", size=(192, 108)))
    assert (info.codec, info.width, info.height) == ("hevc", 192, 108)


def test_moov_first_is_fine(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.MP4", faststart=True)
    assert [b[0] for b in top_boxes(path)].index("moov") < [b[0] for b in top_boxes(path)].index(
        "mdat"
    )
    assert probe_video(path).codec == "h264"


def test_open_ended_mdat_is_fine(tmp_path: Path) -> None:
    path = open_ended_mdat(make_video(tmp_path / "a.MP4", faststart=True))
    mdat = top_boxes(path)[-1]
    assert mdat[0] == "mdat" and path.read_bytes()[mdat[1] : mdat[1] + 4] == bytes(4)
    assert probe_video(path).frames == 10


@pytest.mark.parametrize("tail", [bytes(4096), b"\x00\x00\x00\x03junk" * 100])
def test_padding_after_the_last_box_is_fine(tmp_path: Path, tail: bytes) -> None:
    path = make_video(tmp_path / "a.MP4")
    with path.open("ab") as f:
        f.write(tail)
    assert probe_video(path).frames == 10


def test_creation_time_read_back_in_utc(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.MP4", creation_time="2026-05-13T16:21:52Z")
    assert probe_video(path).creation_time == datetime(2026, 5, 13, 16, 21, 52, tzinfo=timezone.utc)


@pytest.mark.parametrize("when", ["1970-01-01T00:00:00Z", "1904-01-01T00:00:00Z"])
def test_implausible_creation_time_is_none(tmp_path: Path, when: str) -> None:
    path = make_video(tmp_path / "a.MP4", creation_time=when)
    assert probe_video(path).creation_time is None


def _bytes_read() -> int:
    """Bytes this process has read so far (Linux ``/proc/self/io``: ``rchar``)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize("faststart", [False, True])
def test_big_file_is_probed_from_its_ends(tmp_path: Path, faststart: bool) -> None:
    """50 MB of padding in mdat (offsets fixed, so still valid): a probe reads a tiny part."""
    path = pad_mdat(make_video(tmp_path / "a.MP4", faststart=faststart), 50_000_000)
    assert path.stat().st_size > 50_000_000
    before = _bytes_read()
    info = probe_video(path)
    assert _bytes_read() - before < 2_000_000
    assert (info.width, info.height, info.frames) == (160, 120, 10)


def test_probe_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    probe_video(make_video(tmp_path / "a.MP4"))
    for bad in (
        scramble_samples(make_video(tmp_path / "b.MP4"), seed=1),
        random_bytes(tmp_path / "c.MP4"),
    ):
        with pytest.raises(Rejected):
            probe_video(bad)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.testdata
def test_real_sample(testdata: Path) -> None:
    info = probe_video(testdata / "video" / "udacity_test_video.mp4")
    assert (info.width, info.height, info.codec) == (1280, 720, "h264")
    assert info.fps == pytest.approx(25)
    assert info.duration_seconds == pytest.approx(1.52)
    assert info.has_audio
    assert info.creation_time == datetime(2017, 2, 3, 17, 24, 8, tzinfo=timezone.utc)


# --- bad files ------------------------------------------------------------------------------


def _text(p: Path) -> Path:
    p.write_text("this is not a video, just a note\n" * 20)
    return p


def _subtitles(p: Path) -> Path:
    p.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\n")
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _cut_faststart(p: Path) -> Path:
    return truncate(make_video(p, faststart=True), 0.7)


def _cut_open_ended(p: Path) -> Path:
    return truncate(open_ended_mdat(make_video(p, faststart=True)), 0.7)


BAD: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero bytes": (_empty, "empty: the file has zero bytes"),
    "random bytes": (random_bytes, "not a video: FFmpeg does not recognise it"),
    "text": (_text, "not a video: FFmpeg does not recognise it"),
    "subtitles": (_subtitles, "not a video: no video stream found (only subtitle streams)"),
    "audio only": (make_audio_only, "not a video: no video stream found (audio only)"),
    "png": (lambda p: make_image(p, codec="png"), "not a video: it is a still image (png)"),
    "jpeg": (lambda p: make_image(p, codec="mjpeg"), "not a video: it is a still image (jpeg)"),
    "bmp": (lambda p: make_image(p, codec="bmp"), "not a video: it is a still image (bmp)"),
    "gif": (lambda p: make_image(p, codec="gif"), "not a video: it is a still image (gif)"),
    "webp": (lambda p: make_image(p, codec="libwebp"), "not a video: it is a still image (webp)"),
    "no moov": (lambda p: remove_box(make_video(p)), "truncated: moov atom missing"),
    "cut in mdat": (
        lambda p: truncate(make_video(p), 0.5),
        "truncated: the media data ends",
    ),
    "cut in moov": (lambda p: truncate(make_video(p), 0.95), "truncated: the moov atom ends"),
    "moov first, cut in mdat": (_cut_faststart, "truncated: the media data ends"),
    "open-ended mdat, cut": (_cut_open_ended, "truncated: the sample table points"),
    "samples scrambled": (
        lambda p: scramble_samples(make_video(p)),
        "unreadable: the first video frame cannot be decoded",
    ),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_is_rejected_with_its_category(tmp_path: Path, kind: str) -> None:
    make, expected = BAD[kind]
    path = make(tmp_path / "clip.MP4")
    sentence = rejected(path)
    assert sentence.startswith(expected), sentence
    assert "\n" not in sentence and str(tmp_path) not in sentence


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_image_with_its_own_extension(tmp_path: Path, suffix: str) -> None:
    path = make_image(tmp_path / f"photo{suffix}", codec="png" if suffix == ".png" else "mjpeg")
    assert rejected(path).startswith("not a video: it is a still image")


def test_cut_sentence_counts_missing_bytes(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.MP4")
    mdat = next(b for b in top_boxes(path) if b[0] == "mdat")
    truncate(path, 0.5)
    missing = mdat[1] + mdat[2] - path.stat().st_size
    assert rejected(path) == (
        f"truncated: the media data ends {missing} bytes early and the moov atom is missing"
    )


def test_ftyp_alone(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.MP4")
    path.write_bytes(path.read_bytes()[:32])
    assert top_boxes(path) == [("ftyp", 0, 32)]
    assert rejected(path) == "truncated: moov atom missing"


def test_missing_file_is_not_a_rejection(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "gone.MP4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_permissions_are_not_a_rejection(tmp_path: Path) -> None:
    path = make_video(tmp_path / "a.MP4")
    path.chmod(0)
    with pytest.raises(PermissionError):
        probe_video(path)
