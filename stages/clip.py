"""What a stage after ingest reads about a clip: ingest's facts (from another machine, so
untrusted: each part is checked on its own) and the clip's own header.

Shared by preprocess and heavy, so both read the same facts the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import av
import av.error

from stages.gps import Fix
from stages.gps import track as gpstrack
from watchers.errors import PermanentError

MAX_TRACK_POINTS = 100_000  # read from the sidecar at most (18 Hz for 90 minutes)
TRACK_MARGIN_SECONDS = 10  # fixes this far outside the clip still help interpolate


@dataclass
class IngestFacts:
    """What a later stage reads of ingest's facts. They come from another machine: each part is
    taken only when it has the right shape, and a line in ``problems`` says what was not."""

    camera: dict[str, Any] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    time: dict[str, Any] = field(default_factory=dict)
    gps: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def find(cls, facts: dict[str, Any], problems: list[str]) -> IngestFacts:
        """The facts of the stage that filed the clip (``kind: video``), whatever its name."""
        found = [f for f in facts.values() if isinstance(f, dict) and f.get("kind") == "video"]
        if not found:
            problems.append("no ingest facts in the sidecar: no GPS, camera or duration")
            return cls()
        out = cls()
        for part in ("camera", "media", "time", "gps"):
            value = found[-1].get(part)
            if isinstance(value, dict):
                setattr(out, part, value)
            elif value is not None:
                problems.append(f"ingest facts: {part} is not an object: ignored")
        return out


def track(
    facts: IngestFacts, start: datetime | None, duration: float, problems: list[str]
) -> list[Fix]:
    """The clip's fixes from ingest's facts: valid points only, in time order, cleaned of
    jumps, and only those in the clip's time span (with a margin for interpolation)."""
    raw = facts.gps.get("track") or []
    if not isinstance(raw, list):
        problems.append("ingest gps.track is not a list: ignored")
        return []
    fixes = []
    for i, point in enumerate(raw[:MAX_TRACK_POINTS]):
        try:
            fixes.append(Fix.from_json(point))
        except ValueError as err:
            problems.append(f"gps point {i}: {err}")
    fixes.sort(key=lambda f: f.time)
    if start is not None:
        margin = timedelta(seconds=TRACK_MARGIN_SECONDS)
        lo, hi = start - margin, start + timedelta(seconds=duration) + margin
        fixes = [f for f in fixes if lo <= f.time <= hi]
    cleaned, dropped = gpstrack.clean(fixes)
    problems.extend(dropped[:5])
    return list(cleaned)


def utc(value: Any) -> datetime | None:
    """An ISO time from the facts as an aware UTC datetime (naive: taken as UTC), else None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def local(value: Any) -> datetime | None:
    """A camera-local ISO time from the facts, naive, else None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        return None


def duration(video: Path, facts: IngestFacts) -> float:
    """The clip's length from its own header (ingest's figure crossed a machine boundary and
    is used only when the header has none)."""
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise PermanentError("not a video: the clip has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
    except av.error.FFmpegError as err:
        raise PermanentError(f"unreadable: PyAV could not open the clip: {err}") from None
    value = facts.media.get("duration_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 86_400:
        return float(value)
    raise PermanentError("unreadable: the clip's duration is unknown")
