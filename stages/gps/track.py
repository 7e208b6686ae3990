"""Tracks after reading: cleaning, distances, positions between fixes, GPX / GeoJSON in and out."""

from __future__ import annotations

import bisect
import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import geojson  # type: ignore[import-untyped]
import gpxpy
import gpxpy.gpx

from stages.gps import Fix

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
JITTER_M = 30.0  # position noise allowed on top of max speed (10-18 Hz fixes jitter by metres)
MIN_RUN = 3  # fixes consistent with each other that outweigh a jump
OPEN_RUNS = 4  # runs a fix may still join
GPXTPX = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2"
GPX_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?gpx[\s>/]")


class LatLon(Protocol):
    """Anything with a position: a :class:`Fix`, a ledger track point."""

    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


def haversine_m(a: LatLon, b: LatLon) -> float:
    """Great-circle distance in metres."""
    la, lb = math.radians(a.lat), math.radians(b.lat)
    h = math.sin((lb - la) / 2) ** 2
    h += math.cos(la) * math.cos(lb) * math.sin(math.radians(b.lon - a.lon) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(a: Fix, b: Fix) -> float:
    """Initial bearing from ``a`` to ``b``, 0-360 clockwise from north."""
    la, lb = math.radians(a.lat), math.radians(b.lat)
    dlon = math.radians(b.lon - a.lon)
    y = math.sin(dlon) * math.cos(lb)
    x = math.cos(la) * math.sin(lb) - math.sin(la) * math.cos(lb) * math.cos(dlon)
    return math.degrees(math.atan2(y, x)) % 360


def length_m(fixes: Sequence[LatLon]) -> float:
    return sum(haversine_m(a, b) for a, b in itertools.pairwise(fixes))


def position_at(
    fixes: Sequence[Fix],
    when: datetime,
    *,
    max_gap_seconds: float = 5.0,
    times: Sequence[datetime] | None = None,
) -> Fix | None:
    """The position at ``when``, interpolated between the two fixes around it (linear in
    latitude, longitude, speed and altitude; bearing the short way round). ``None`` when
    ``when`` falls in a gap longer than ``max_gap_seconds`` or further than half that outside
    the track: a guess is worse than no position. ``fixes`` must be in time order; ``times``
    (their times) saves rebuilding the index when asking for many moments."""
    if not fixes:
        return None
    times = times if times is not None else [f.time for f in fixes]
    i = bisect.bisect_left(times, when)
    edge = timedelta(seconds=max_gap_seconds / 2)
    if i < len(fixes) and times[i] == when:
        return fixes[i]
    if i == 0:
        return replace(fixes[0], time=when) if times[0] - when <= edge else None
    if i == len(fixes):
        return replace(fixes[-1], time=when) if when - times[-1] <= edge else None
    a, b = fixes[i - 1], fixes[i]
    span = (b.time - a.time).total_seconds()
    if span > max_gap_seconds:
        return None
    k = (when - a.time).total_seconds() / span
    return Fix(
        when,
        a.lat + (b.lat - a.lat) * k,
        a.lon + (b.lon - a.lon) * k,
        speed_kmh=_lerp(a.speed_kmh, b.speed_kmh, k),
        bearing_deg=_lerp_angle(a.bearing_deg, b.bearing_deg, k),
        alt_m=_lerp(a.alt_m, b.alt_m, k),
    )


def times_every(
    fixes: Sequence[Fix],
    metres: float,
    *,
    stopped_below_kmh: float = 0.0,
    until: datetime | None = None,
    limit: int = 1_000_000,
) -> list[datetime]:
    """The moments at which the track has covered 0, ``metres``, 2x``metres``... (the way
    mapillary_tools samples by distance): interpolated in time between fixes, so a vehicle
    that stands still yields no moments after the first. A step between two fixes that both
    report a speed below ``stopped_below_kmh`` counts as no distance (GPS wander at a
    standstill). At most ``limit`` moments, none after ``until``."""
    if metres <= 0:
        raise ValueError(f"distance step must be positive, not {metres!r}")
    if not fixes:
        return []
    out = [fixes[0].time]
    covered, goal = 0.0, metres
    for a, b in itertools.pairwise(fixes):
        step = haversine_m(a, b)
        if _slow(a, stopped_below_kmh) and _slow(b, stopped_below_kmh):
            step = 0.0
        if until is not None and a.time > until:
            break
        while step > 0 and covered + step >= goal and len(out) < limit:
            k = (goal - covered) / step
            out.append(a.time + (b.time - a.time) * k)
            goal += metres
        covered += step
    return [t for t in out if until is None or t <= until]


def _slow(fix: Fix, below_kmh: float) -> bool:
    return fix.speed_kmh is not None and fix.speed_kmh < below_kmh


def _lerp(a: float | None, b: float | None, k: float) -> float | None:
    if a is None or b is None:
        return a if k < 0.5 else b
    return a + (b - a) * k


def _lerp_angle(a: float | None, b: float | None, k: float) -> float | None:
    if a is None or b is None:
        return a if k < 0.5 else b
    turn = (b - a + 180.0) % 360.0 - 180.0
    return (a + turn * k) % 360.0


def clean(
    fixes: Sequence[Fix], *, max_speed_kmh: float = 300.0
) -> tuple[tuple[Fix, ...], list[str]]:
    """Sorted by time, duplicates and implausible jumps dropped, missing speed and bearing
    filled in from positions. Returns the fixes and one line per kind of fix dropped.

    A jump is implausible when covering it needs more than ``max_speed_kmh`` (plus
    ``JITTER_M``). Fixes are grouped into runs that follow each other plausibly; runs shorter
    than ``MIN_RUN`` are dropped, so a lone outlier goes while a real jump after a gap stays.
    """
    problems: list[str] = []
    ordered: list[Fix] = []
    duplicates = 0
    for fix in sorted(fixes, key=lambda f: f.time):
        if ordered and ordered[-1].time == fix.time:
            duplicates += 1
            continue
        ordered.append(fix)
    if duplicates:
        problems.append(f"dropped {duplicates} duplicate fixes (same time)")

    limit = max_speed_kmh / 3.6
    runs: list[list[Fix]] = []
    for fix in ordered:
        home = next((r for r in reversed(runs[-OPEN_RUNS:]) if _plausible(r[-1], fix, limit)), None)
        if home is None:
            runs.append([fix])
        else:
            home.append(fix)
    long_runs = [r for r in runs if len(r) >= MIN_RUN] or sorted(runs, key=len, reverse=True)[:1]
    kept = sorted((f for r in long_runs for f in r), key=lambda f: f.time)
    if len(kept) < len(ordered):
        problems.append(
            f"dropped {len(ordered) - len(kept)} fixes with implausible jumps "
            f"(over {max_speed_kmh:g} km/h)"
        )
    return tuple(_fill(kept)), problems


def _plausible(a: Fix, b: Fix, limit_mps: float) -> bool:
    seconds = abs((b.time - a.time).total_seconds())
    return haversine_m(a, b) <= limit_mps * seconds + JITTER_M


def _fill(fixes: list[Fix]) -> list[Fix]:
    """Speed and bearing from the neighbouring fix where the fix came without them."""
    out: list[Fix] = []
    for i, fix in enumerate(fixes):
        if len(fixes) < 2 or (fix.speed_kmh is not None and fix.bearing_deg is not None):
            out.append(fix)
            continue
        a, b = (fixes[i - 1], fix) if i else (fix, fixes[1])
        seconds = (b.time - a.time).total_seconds()
        metres = haversine_m(a, b)
        speed = fix.speed_kmh
        if speed is None and seconds > 0:
            speed = min(metres / seconds * 3.6, 10_000.0)
        bearing = fix.bearing_deg
        if bearing is None and metres > 0:
            bearing = bearing_deg(a, b)
        out.append(replace(fix, speed_kmh=speed, bearing_deg=bearing))
    return out


def to_gpx(fixes: Sequence[Fix], *, name: str, description: str | None = None) -> str:
    """GPX 1.1: one track, one segment; speed (m/s) and course in Garmin's TrackPointExtension."""
    gpx = gpxpy.gpx.GPX()
    gpx.nsmap["gpxtpx"] = GPXTPX
    track = gpxpy.gpx.GPXTrack(name=name, description=description)
    segment = gpxpy.gpx.GPXTrackSegment()
    for fix in fixes:
        point = gpxpy.gpx.GPXTrackPoint(fix.lat, fix.lon, elevation=fix.alt_m, time=fix.time)
        extra = [("speed", None if fix.speed_kmh is None else fix.speed_kmh / 3.6)]
        extra.append(("course", fix.bearing_deg))
        if any(v is not None for _, v in extra):
            ext = ET.Element(f"{{{GPXTPX}}}TrackPointExtension")
            for tag, value in extra:
                if value is not None:
                    ET.SubElement(ext, f"{{{GPXTPX}}}{tag}").text = f"{value:.6f}".rstrip("0")
            point.extensions.append(ext)
        segment.points.append(point)
    track.segments.append(segment)
    gpx.tracks.append(track)
    return str(gpx.to_xml(version="1.1"))


def to_geojson(fixes: Sequence[Fix], *, properties: dict[str, Any]) -> dict[str, Any]:
    """A Feature: LineString (Point for one fix) of ``[lon, lat(, alt)]`` and the fix times.

    Altitude is included only when every fix has one (positions must have the same length).
    """
    with_alt = bool(fixes) and all(f.alt_m is not None for f in fixes)
    coords = [
        (round(f.lon, 7), round(f.lat, 7)) + ((round(f.alt_m or 0.0, 2),) if with_alt else ())
        for f in fixes
    ]
    geometry = geojson.Point(coords[0]) if len(coords) == 1 else geojson.LineString(coords)
    times = [f.to_json()["time"] for f in fixes]
    feature = geojson.Feature(geometry=geometry, properties={**properties, "times": times})
    return dict(feature)


def read_gpx(path: Path, *, max_bytes: int = 64 << 20) -> tuple[Fix, ...]:
    """Fixes of every track segment of an external (untrusted) GPX file, in file order.

    Points without a time are skipped; waypoints and routes are ignored; naive times are UTC.
    Anything that is not a sane GPX file raises ``ValueError`` with a sentence saying why.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"not a GPX file: {path.name} is {size} bytes, over the {max_bytes} limit")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ValueError(f"not a GPX file: {path.name} declares a DTD or entities")
    if GPX_ROOT.search(data) is None:
        raise ValueError(f"not a GPX file: {path.name} has no <gpx> element")
    try:
        gpx = gpxpy.parse(data.decode("utf-8-sig"))
    except (gpxpy.gpx.GPXException, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not a GPX file: {path.name}: {exc}") from None
    fixes: list[Fix] = []
    for track in gpx.tracks:
        for segment in track.segments:
            for n, point in enumerate(segment.points, 1):
                if point.time is None:
                    continue
                fixes.append(_gpx_fix(point, path.name, n))
    return tuple(fixes)


def _gpx_fix(point: gpxpy.gpx.GPXTrackPoint, name: str, n: int) -> Fix:
    time: datetime = point.time  # type: ignore[assignment]
    time = time.replace(tzinfo=timezone.utc) if time.tzinfo is None else time
    speed, course = point.speed, point.course
    for ext in point.extensions:
        for child in ext.iter():
            tag = child.tag.rsplit("}", 1)[-1]
            if tag in ("speed", "course") and child.text:
                try:
                    value = float(child.text)
                except ValueError:
                    continue
                speed, course = (value, course) if tag == "speed" else (speed, value)
    try:
        return Fix(
            time,
            point.latitude,
            point.longitude,
            speed_kmh=_optional(None if speed is None else speed * 3.6, 0, 10_000),
            bearing_deg=_optional(course, 0, 360),
            alt_m=_optional(point.elevation, -20_000, 100_000),
        )
    except ValueError as exc:
        raise ValueError(f"not a GPX file: {name}, point {n}: {exc}") from None


def _optional(value: float | None, low: float, high: float) -> float | None:
    """An optional value kept only when it is sane (a bad speed does not sink a track)."""
    if value is None or not math.isfinite(value) or not low <= value <= high:
        return None
    return value
