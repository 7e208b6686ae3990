"""GPS tracks embedded in video files: one reader per format, tried in order by :func:`read_track`.

A reader is ``read(f, boxes) -> Track | None``; adding a format is one new file plus one line in
:data:`READERS`. Readers never raise on bad data: they return what they could decode and say what
was wrong in ``Track.problems``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

from stages.mp4 import BoxReader

log = logging.getLogger(__name__)


def _number(d: Mapping[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"fix {key} is not a number: {value!r}")
    return float(value)  # the range is checked by Fix itself


@dataclass(frozen=True)
class Fix:
    """One position at one moment. Invalid values cannot be built (``ValueError``)."""

    time: datetime  # UTC, timezone-aware
    lat: float  # degrees, negative S
    lon: float  # degrees, negative W
    speed_kmh: float | None = None
    bearing_deg: float | None = None
    alt_m: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise ValueError(f"fix time must be a timezone-aware datetime, not {self.time!r}")
        object.__setattr__(self, "time", self.time.astimezone(timezone.utc))
        checks = (
            ("lat", self.lat, -90.0, 90.0),
            ("lon", self.lon, -180.0, 180.0),
            ("speed_kmh", self.speed_kmh, 0.0, 10_000.0),
            ("bearing_deg", self.bearing_deg, 0.0, 360.0),
            ("alt_m", self.alt_m, -20_000.0, 100_000.0),
        )
        for name, value, low, high in checks:
            if value is None and name not in ("lat", "lon"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"fix {name} is not a number: {value!r}")
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"fix {name} {value!r} is outside [{low:g}, {high:g}]")
            object.__setattr__(self, name, float(value))

    def to_json(self) -> dict[str, Any]:
        us = self.time.microsecond
        spec = "seconds" if us == 0 else "milliseconds" if us % 1000 == 0 else "microseconds"
        out: dict[str, Any] = {
            "time": self.time.isoformat(timespec=spec).replace("+00:00", "Z"),
            "lat": round(self.lat, 7),
            "lon": round(self.lon, 7),
        }
        for key, digits in (("speed_kmh", 2), ("bearing_deg", 2), ("alt_m", 2)):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, digits)
        return out

    @classmethod
    def from_json(cls, d: Any) -> Fix:
        """A fix from :meth:`to_json` output; anything malformed raises ``ValueError``."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a fix must be an object, not {type(d).__name__}")
        raw = d.get("time")
        if not isinstance(raw, str):
            raise ValueError(f"fix time must be a string, not {raw!r}")
        try:
            time = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"fix time is not an ISO 8601 time: {raw!r}") from None
        lat, lon = _number(d, "lat"), _number(d, "lon")
        if lat is None or lon is None:
            raise ValueError("a fix needs lat and lon")
        return cls(
            time,
            lat,
            lon,
            speed_kmh=_number(d, "speed_kmh"),
            bearing_deg=_number(d, "bearing_deg"),
            alt_m=_number(d, "alt_m"),
        )


@dataclass(frozen=True)
class Track:
    source: str | None  # "novatek" | "gpmf" | "iso6709" | "gpx" | None (no GPS found)
    fixes: tuple[Fix, ...]
    problems: tuple[str, ...] = ()  # human lines: corrupt index, truncated block, void fixes…


Reader = Callable[[BinaryIO, BoxReader], "Track | None"]

# The readers import Fix and Track from here, so they come after them.
from stages.gps import gpmf, iso6709, novatek  # noqa: E402

READERS: dict[str, Reader] = {
    "novatek": novatek.read,
    "gpmf": gpmf.read,
    "iso6709": iso6709.read,
}


def read_track(path: Path) -> Track:
    """The first track a reader finds in ``path``, or ``Track(None, ())``. Only ``OSError``
    (the file cannot be opened or read) escapes; bad data ends up in ``problems``."""
    problems: list[str] = []
    with open(path, "rb") as f:
        boxes = BoxReader(f)
        for name, reader in READERS.items():
            try:
                track = reader(f, boxes)
            except OSError:
                raise
            except Exception as exc:  # a reader bug must not stop the pipeline on one clip
                log.exception("%s: %s reader failed", path, name)
                problems.append(f"{name} reader failed: {type(exc).__name__}: {exc}")
                continue
            if track is None:
                continue
            problems.extend(track.problems)
            if track.fixes:
                return Track(track.source or name, track.fixes, _unique(boxes.problems + problems))
        return Track(None, (), _unique(boxes.problems + problems))


def _unique(lines: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(lines))
