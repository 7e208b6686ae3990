"""Dashcam clip names: what a file's name and folder say about the clip, and local time to UTC.

The patterns (``shared/reference/viofo.md``), the time being camera-local at clip start:

- A229/A329: ``YYYY_MMDD_HHMMSS_<seq><P|E>?<F|R|I|T>``, e.g. ``2026_0513_172152_000122PF.MP4``
- A129 Duo: ``YYYY_MMDD_HHMMSS_<seq><F|R>``, e.g. ``2021_0610_174405_029F.MP4``
- A139: ``YYYY_MMDD_HHMMSS_<F|R|I>`` (no sequence), e.g. ``2023_0516_192739_F.MP4``
- A119: ``YYYY_MMDD_HHMMSS_<seq>`` (no channel), e.g. ``2016_1224_094105_116.MP4``

An A129 Duo name cannot be told from an A229/A329 one without P/E and with channel F or R, so
such names get the family "A129/A229/A329". The sequence has 3 to 6 digits. Extensions .MP4, .MOV
and .TS are accepted in any case, and so are the letters of the name (some copy tools lower-case
names). Folders: a folder ``RO`` anywhere in the path (any case) marks a locked clip, ``Parking``
a parking-mode one; the letters in the name win over folders for the mode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CHANNELS = {"F": "front", "R": "rear", "I": "interior", "T": "telephoto"}

_NAME = re.compile(
    r"(?P<date>\d{4}_\d{4}_\d{6})_"
    r"(?:(?P<seq>\d{3,6})(?P<mode>[PE])?(?P<channel>[FRIT])?|(?P<solo>[FRI]))"
    r"\.(?:mp4|mov|ts)",
    re.IGNORECASE | re.ASCII,
)


@dataclass(frozen=True)
class ClipName:
    """What a clip's path says about it."""

    local_time: datetime  # naive: camera-local time of the clip start
    sequence: str | None  # digits as written ("000120"), 3 to 6 of them; None for A139
    channel: str | None  # "F", "R", "I" or "T"; None for A119
    mode: str  # "normal", "parking" or "event"
    locked: bool  # found in an RO folder
    family: str  # "A229/A329", "A129/A229/A329", "A139" or "A119"

    @property
    def channel_name(self) -> str | None:
        return CHANNELS.get(self.channel) if self.channel else None


def _family(seq: str | None, mode: str | None, channel: str | None) -> str | None:
    if seq is None:
        return "A139"
    if mode is not None and channel is None:
        return None  # a P/E letter without a channel is no known pattern
    if channel is None:
        return "A119"
    if mode is not None or channel in ("I", "T"):
        return "A229/A329"
    return "A129/A229/A329"


def parse_clip_name(path: str) -> ClipName | None:
    """Parse a path relative to the inbox (``DCIM/Movie/RO/2026_0513_172152_000120F.MP4``,
    ``2026-05-13/…``, or a bare name); ``None`` for unknown names and impossible dates."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts:
        return None
    m = _NAME.fullmatch(parts[-1])
    if m is None:
        return None
    d = m["date"]
    try:
        local = datetime(
            int(d[0:4]), int(d[5:7]), int(d[7:9]), int(d[10:12]), int(d[12:14]), int(d[14:16])
        )
    except ValueError:  # month 13, 30 February, hour 25…
        return None
    seq = m["seq"]
    letter = m["mode"].upper() if m["mode"] else None
    channel = (m["channel"] or m["solo"] or "").upper() or None
    family = _family(seq, letter, channel)
    if family is None:
        return None
    folders = {p.casefold() for p in parts[:-1]}
    locked = "ro" in folders
    if letter == "P":
        mode = "parking"
    elif letter == "E":
        mode = "event"
    elif "parking" in folders:
        mode = "parking"
    elif locked:
        mode = "event"
    else:
        mode = "normal"
    return ClipName(local, seq, channel, mode, locked, family)


def priority_of(name: ClipName | None) -> int:
    """Processing priority, higher first: 10 for locked or event clips (someone pressed the
    button or the G-sensor fired), -1 for parking clips (mostly a still street), 0 otherwise,
    including unknown names."""
    if name is None:
        return 0
    if name.locked or name.mode == "event":
        return 10
    if name.mode == "parking":
        return -1
    return 0


def local_to_utc(local: datetime, tz: str) -> datetime:
    """The UTC instant (tz-aware) of a naive camera-local time in the IANA zone ``tz``.

    Times that happen twice when clocks go back take the first (``fold=0``, summer time: in
    Europe/London 01:30 on the last Sunday of October is 00:30 UTC). Times skipped when clocks go
    forward are read with the offset before the change (01:30 London on the last Sunday of March
    is 01:30 UTC). Raises ``ValueError`` for an aware ``local`` or an unknown zone.
    """
    if local.tzinfo is not None:
        raise ValueError(f"expected a naive camera-local time, got one with a zone: {local}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder of zones
        raise ValueError(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/London'"
        ) from None
    return local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
