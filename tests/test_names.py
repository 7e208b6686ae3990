"""Dashcam file names: every pattern in the Viofo reference, folders, bad dates, garbage."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from stages.names import ClipName, local_to_utc, parse_clip_name, priority_of


@pytest.mark.parametrize(
    ("path", "expected"),
    [  # the examples of the reference table, one per family
        (
            "2026_0513_172152_000120F.MP4",
            ClipName(datetime(2026, 5, 13, 17, 21, 52), "000120", "F", "normal", False,
                     "A129/A229/A329"),
        ),
        (
            "2026_0513_172152_000122PF.MP4",
            ClipName(datetime(2026, 5, 13, 17, 21, 52), "000122", "F", "parking", False,
                     "A229/A329"),
        ),
        (
            "2021_0610_174405_029F.MP4",
            ClipName(datetime(2021, 6, 10, 17, 44, 5), "029", "F", "normal", False,
                     "A129/A229/A329"),
        ),
        (
            "2023_0516_192739_F.MP4",
            ClipName(datetime(2023, 5, 16, 19, 27, 39), None, "F", "normal", False, "A139"),
        ),
        (
            "2016_1224_094105_116.MP4",
            ClipName(datetime(2016, 12, 24, 9, 41, 5), "116", None, "normal", False, "A119"),
        ),
    ],
)  # fmt: skip
def test_reference_examples(path: str, expected: ClipName) -> None:
    assert parse_clip_name(path) == expected


@pytest.mark.parametrize(
    ("name", "channel", "channel_name", "mode", "family"),
    [
        ("2026_0513_172152_000120F.MP4", "F", "front", "normal", "A129/A229/A329"),
        ("2026_0513_172152_000120R.MP4", "R", "rear", "normal", "A129/A229/A329"),
        ("2026_0513_172152_000120I.MP4", "I", "interior", "normal", "A229/A329"),
        ("2026_0513_172152_000120T.MP4", "T", "telephoto", "normal", "A229/A329"),
        ("2026_0513_172152_000120PR.MP4", "R", "rear", "parking", "A229/A329"),
        ("2026_0513_172152_000120EF.MP4", "F", "front", "event", "A229/A329"),
        ("2026_0513_172152_000120EI.MP4", "I", "interior", "event", "A229/A329"),
        ("2026_0513_172152_000120PT.MP4", "T", "telephoto", "parking", "A229/A329"),
        ("2023_0516_192739_R.MP4", "R", "rear", "normal", "A139"),
        ("2023_0516_192739_I.MP4", "I", "interior", "normal", "A139"),
        ("2016_1224_094105_116.MP4", None, None, "normal", "A119"),
    ],
)
def test_channels_modes_and_families(
    name: str, channel: str | None, channel_name: str | None, mode: str, family: str
) -> None:
    clip = parse_clip_name(name)
    assert clip is not None
    assert (clip.channel, clip.channel_name, clip.mode, clip.family) == (
        channel,
        channel_name,
        mode,
        family,
    )


@pytest.mark.parametrize("seq", ["029", "1234", "00120", "000120"])
def test_sequence_keeps_its_digits(seq: str) -> None:
    clip = parse_clip_name(f"2026_0513_172152_{seq}F.MP4")
    assert clip is not None and clip.sequence == seq


@pytest.mark.parametrize("seq", ["12", "1234567"])
def test_sequence_of_wrong_length_is_unknown(seq: str) -> None:
    assert parse_clip_name(f"2026_0513_172152_{seq}F.MP4") is None


@pytest.mark.parametrize(
    ("path", "mode", "locked"),
    [
        ("DCIM/Movie/2026_0513_172152_000120F.MP4", "normal", False),
        ("DCIM/Movie/RO/2026_0513_172152_000120F.MP4", "event", True),
        ("DCIM/Movie/ro/2026_0513_172152_000120F.MP4", "event", True),
        ("DCIM/Movie/RO/2026_0513_172152_000120PF.MP4", "parking", True),
        ("DCIM/Movie/RO/2026_0513_172152_000120EF.MP4", "event", True),
        ("DCIM/Movie/Parking/2026_0513_172152_000120F.MP4", "parking", False),
        ("DCIM/Movie/PARKING/2026_0513_172152_000120F.MP4", "parking", False),
        ("DCIM/Movie/Parking/2026_0513_172152_000120EF.MP4", "event", False),
        ("RO/2026-05-13/2026_0513_172152_000120F.MP4", "event", True),
        ("2026-05-13/2026_0513_172152_000122PF.MP4", "parking", False),
        ("2026-05-13/2026_0513_172152_000120F.MP4", "normal", False),
        ("DCIM\\Movie\\RO\\2026_0513_172152_000120F.MP4", "event", True),
        ("DCIM/Movie/ROAD/2026_0513_172152_000120F.MP4", "normal", False),
    ],
)
def test_folders(path: str, mode: str, locked: bool) -> None:
    clip = parse_clip_name(path)
    assert clip is not None
    assert (clip.mode, clip.locked) == (mode, locked)


@pytest.mark.parametrize(
    "name",
    [
        "2026_0513_172152_000120F.mp4",
        "2026_0513_172152_000120F.Mp4",
        "2026_0513_172152_000120F.MOV",
        "2026_0513_172152_000120F.mov",
        "2026_0513_172152_000120F.TS",
        "2026_0513_172152_000120F.ts",
        "2026_0513_172152_000120pf.mp4",
    ],
)
def test_extensions_and_letters_in_any_case(name: str) -> None:
    clip = parse_clip_name(name)
    assert clip is not None and clip.channel == "F"
    assert clip.local_time == datetime(2026, 5, 13, 17, 21, 52)


def test_lower_case_letters_are_normalised() -> None:
    clip = parse_clip_name("2026_0513_172152_000120pf.mp4")
    assert clip is not None and (clip.channel, clip.mode) == ("F", "parking")


@pytest.mark.parametrize(
    "name",
    [
        "2026_1313_172152_000120F.MP4",  # month 13
        "2026_0013_172152_000120F.MP4",  # month 0
        "2026_0230_172152_000120F.MP4",  # 30 February
        "2025_0229_172152_000120F.MP4",  # not a leap year
        "2026_0513_252152_000120F.MP4",  # hour 25
        "2026_0513_176052_000120F.MP4",  # minute 60
        "2026_0513_172160_000120F.MP4",  # second 60
        "2026_0500_172152_000120F.MP4",  # day 0
    ],
)
def test_impossible_dates_are_unknown(name: str) -> None:
    assert parse_clip_name(name) is None


def test_leap_day_is_fine() -> None:
    clip = parse_clip_name("2024_0229_235959_001F.MP4")
    assert clip is not None and clip.local_time == datetime(2024, 2, 29, 23, 59, 59)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "DCIM/Movie/",
        "video.mp4",
        "IMG_1234.MOV",
        "GX010042.MP4",
        "2026_0513_172152_000120F.MP4.gpx",  # viofosync's GPX beside the clip
        ".2026_0513_172152_000120F.MP4",  # viofosync's temp name
        "._2026_0513_172152_000120F.MP4",  # macOS AppleDouble
        "2026_0513_172152_000120F.JPG",
        "2026_0513_172152_000120F",
        "2026_0513_172152_000120X.MP4",  # no such channel
        "2026_0513_172152_000120PP.MP4",
        "2026_0513_172152_000120P.MP4",  # a mode letter needs a channel
        "2026_0513_172152_T.MP4",  # A139 has no telephoto
        "2026_0513_172152_.MP4",
        "2026_0513_172152_000120F .MP4",
        " 2026_0513_172152_000120F.MP4",
        "2026-0513-172152-000120F.MP4",
        "26_0513_172152_000120F.MP4",
        "2026_513_172152_000120F.MP4",
        "2026_0513_172152_000120F.MP4\n",
        "\uff12\uff10\uff12\uff16_0513_172152_000120F.MP4",  # full-width digits
        "2026_0513_172152_\u0660\u0660\u0660\u0661\u0662\u0660F.MP4",  # Arabic-Indic digits
        "2026_0513_172152_000120\uff26.MP4",  # full-width F
        "ダッシュカム.MP4",
        "\x00\x01\x02.MP4",
        "a" * 5000,
        "2026_0513_172152_000120F.MP4" * 3,
    ],
)
def test_garbage_is_unknown(path: str) -> None:
    assert parse_clip_name(path) is None


def test_unicode_folders_are_fine() -> None:
    clip = parse_clip_name("Fahrten/Ölwechsel 🚗/RO/2026_0513_172152_000120F.MP4")
    assert clip is not None and clip.locked


def test_random_names_never_crash() -> None:
    rng = random.Random(7)
    alphabet = "0123456789_FRITPE.MP4mov/\\RO é\x00"
    for _ in range(2000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        clip = parse_clip_name(name)
        assert clip is None or isinstance(clip, ClipName)


@pytest.mark.parametrize(
    ("path", "priority"),
    [
        ("DCIM/Movie/RO/2026_0513_172152_000120F.MP4", 10),
        ("DCIM/Movie/RO/2026_0513_172152_000120PF.MP4", 10),  # locked beats parking
        ("2026_0513_172152_000120EF.MP4", 10),
        ("2026_0513_172152_000120F.MP4", 0),
        ("2026_0513_172152_000120PF.MP4", -1),
        ("DCIM/Movie/Parking/2026_0513_172152_000120F.MP4", -1),
        ("holiday.mp4", 0),
    ],
)
def test_priority(path: str, priority: int) -> None:
    assert priority_of(parse_clip_name(path)) == priority


UTC = timezone.utc


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        (datetime(2026, 1, 15, 12, 0), datetime(2026, 1, 15, 12, 0, tzinfo=UTC)),  # GMT
        (datetime(2026, 5, 13, 17, 21, 52), datetime(2026, 5, 13, 16, 21, 52, tzinfo=UTC)),  # BST
        # spring forward, 29 March 2026: 01:00 GMT becomes 02:00 BST
        (datetime(2026, 3, 29, 0, 59, 59), datetime(2026, 3, 29, 0, 59, 59, tzinfo=UTC)),
        (datetime(2026, 3, 29, 1, 30), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),  # skipped
        (datetime(2026, 3, 29, 2, 0), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # fall back, 25 October 2026: 02:00 BST becomes 01:00 GMT; 01:xx happens twice
        (datetime(2026, 10, 25, 0, 59), datetime(2026, 10, 24, 23, 59, tzinfo=UTC)),
        (datetime(2026, 10, 25, 1, 30), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),  # first
        (datetime(2026, 10, 25, 2, 0), datetime(2026, 10, 25, 2, 0, tzinfo=UTC)),
    ],
)
def test_local_to_utc_london(local: datetime, utc: datetime) -> None:
    result = local_to_utc(local, "Europe/London")
    assert result == utc
    assert result.tzinfo == UTC


def test_local_to_utc_other_zones() -> None:
    local = datetime(2026, 5, 13, 17, 21, 52)
    assert local_to_utc(local, "UTC") == local.replace(tzinfo=UTC)
    assert local_to_utc(local, "America/New_York") == datetime(2026, 5, 13, 21, 21, 52, tzinfo=UTC)
    assert local_to_utc(local, "Asia/Kolkata") == datetime(2026, 5, 13, 11, 51, 52, tzinfo=UTC)


def test_local_to_utc_from_a_parsed_name() -> None:
    clip = parse_clip_name("2026_0513_172152_000120F.MP4")
    assert clip is not None
    assert local_to_utc(clip.local_time, "Europe/London") == datetime(
        2026, 5, 13, 16, 21, 52, tzinfo=UTC
    )


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "Europe", "../etc/passwd", "/etc/UTC"])
def test_unknown_zone_is_a_clear_value_error(tz: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone") as info:
        local_to_utc(datetime(2026, 5, 13, 17, 21, 52), tz)
    assert "Europe/London" in str(info.value)  # says what a good name looks like


def test_aware_local_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_to_utc(datetime(2026, 5, 13, 17, 21, 52, tzinfo=UTC), "Europe/London")
