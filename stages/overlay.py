"""GPS from the overlay a dashcam burns into its frames, for clips without embedded GPS.

A Viofo-style camera writes one line at the bottom of every frame, in the camera's local time::

    045KM/H N:9.2985 W:75.3856 VIOFO A229 28-01-2026 18:13:32

The way from frames to a track, one step per function:

1. :func:`crop_strip` cuts the bottom ``strip_height_fraction`` of a frame;
   :func:`text_box` finds the line in it (white or coloured glyphs with a dark outline), so the
   recogniser sees a tight crop (on a whole 1080p strip small text is read badly).
2. A :data:`ReadLine` (injected: the OCR engine's recognition-only call) reads the crop.
3. :func:`parse_overlay` accepts the text only if it fits a strict grammar (below); a reading it
   is unsure of is dropped, never guessed: a wrong position is worse than none.
4. :func:`build_track` catches the misreads the grammar cannot see (one digit read as another:
   8 for 3, 5 for 6): readings far from the clip's own time or from the other frames', speeds
   no car drives, jumps (:func:`stages.gps.track.clean`), single fixes off the line between
   their neighbours, and (the speed alone) single speeds off the line between theirs. It keeps
   one fix per overlay second and converts local time to UTC (:mod:`zoneinfo`).

:func:`read_overlay` runs 1-3 over sampled frames, :func:`overlay_track` all of it, giving a
:class:`~stages.gps.Track` with source ``"overlay"``. With :mod:`stages.frames`::

    moments = every_seconds(duration, settings.fps)
    frames = ((s.time, s.frame.to_ndarray(format="bgr24")) for s in sampler.sample(moments))
    track = overlay_track(frames, read_line, settings, clip_local_start=..., timezone=...)

**The grammar** (after upper-casing; fields in this order, spaces between them optional):

- speed: exactly 3 digits, then ``KM/H`` (also ``KMH``, ``KM H``, ``KM|H``) or ``MPH``
  (converted to km/h); at most :data:`MAX_SPEED_KMH`.
- latitude: ``N`` or ``S``, an optional ``:`` (``;`` read as ``:``), 1-2 digits, ``.`` (or
  ``,``), exactly 4 decimals; at most 90.
- longitude: ``E`` or ``W``, optional ``:``, 1-3 digits, ``.``, exactly 4 decimals; at most 180.
  ``0.0000, 0.0000`` (no fix) is rejected.
- model: free text without ``:`` (``VIOFO A229``), possibly empty.
- date, one of: ``DD-MM-YYYY`` (Viofo's); ``YYYY-MM-DD`` and ``YYYY/MM/DD`` (year first:
  unambiguous); ``NN/NN/YYYY`` in the order ``slash_date_order`` says (``"dmy"`` or ``"mdy"``),
  or, when that is ``None``, only where one order is impossible (a number over 12). Years
  2000-2099; the date must exist (no 31-02). ``=``, en and em dashes are read as ``-``.
- time: ``HH:MM:SS``, 24 h (``;`` or ``.`` read as ``:``); no 24:00, no leap second.

Inside numbers the letter ``O`` is read as ``0``; nothing else is corrected (``I``/``1``,
``S``/``5``, ``B``/``8`` are left to fail). Punctuation and spaces around the line are ignored;
anything else before the speed or after the seconds rejects the line.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from stages.gps import Fix, Track
from stages.gps import track as gpstrack

log = logging.getLogger(__name__)

# (text, confidence 0-1) for one line of text in a BGR crop, or None when nothing was read
ReadLine = Callable[[NDArray[Any]], "tuple[str, float] | None"]

SOURCE = "overlay"
MAX_SPEED_KMH = 300.0  # over this the overlay was misread (the track's own limit may be lower)
KMH_PER_MPH = 1.609344
OFFSET_TOLERANCE_SECONDS = 1.25  # overlay minus frame time, frame to frame (under 1 s + jitter)
MAX_PROBLEM_LINES = 20
KINK_M = 20.0  # a fix this far off the line between its neighbours is a misread digit ...
KINK_SPAN_SECONDS = 2.0  # ... when they are this close in time
SPEED_KINK_KMH = 25.0  # a speed this far off the line between its neighbours' is misread
TEXT_MIN_GREY = 180  # a glyph pixel is at least this bright (max over B, G, R) ...
TEXT_MIN_CONTRAST = 100  # ... and has its dark outline this much darker close by
MARGIN_Y = 1 / 3  # around the text band, in band heights (the recogniser likes some room) ...
MARGIN_X = 1.0  # ... and at the ends, where a faint first or last glyph may have gone unseen
BLOCK_GAP = 4.0  # glyph columns closer than this (band heights) are one block of text ...
BLOCK_SHARE = 0.1  # ... and a block with less than this share of the biggest one's pixels is not

_EDGE = " \t.,;:'\"`|_-"  # punctuation OCR adds around a line
_NUM = "[0-9O]"
_LINE = re.compile(
    rf"""
    (?P<speed>{_NUM}{{3}}) \s? (?P<unit>KM\s?[/|]?\s?H|MPH) \s*
    (?P<ns>[NS]) \s? [:;]? \s? (?P<lat>{_NUM}{{1,2}}[.,]{_NUM}{{4}}) \s*
    (?P<ew>[EW]) \s? [:;]? \s? (?P<lon>{_NUM}{{1,3}}[.,]{_NUM}{{4}}) \s*
    (?P<model>[^:]*?) \s*
    (?:
        (?P<yf_y>{_NUM}{{4}}) (?P<yf_s>[-/]) (?P<yf_m>{_NUM}{{2}}) (?P=yf_s) (?P<yf_d>{_NUM}{{2}})
      | (?P<dash_d>{_NUM}{{2}}) - (?P<dash_m>{_NUM}{{2}}) - (?P<dash_y>{_NUM}{{4}})
      | (?P<sl_a>{_NUM}{{2}}) / (?P<sl_b>{_NUM}{{2}}) / (?P<sl_y>{_NUM}{{4}})
    )
    \s*
    (?P<hh>{_NUM}{{2}}) [:;.] (?P<mi>{_NUM}{{2}}) [:;.] (?P<ss>{_NUM}{{2}})
    """,
    re.VERBOSE,
)
_DASHES = str.maketrans({"=": "-", "\u2013": "-", "\u2014": "-"})

SlashOrder = Literal["dmy", "mdy"]


class OverlaySettings(BaseModel):
    """``[stages.<name>.overlay]``: reading GPS from the burned-in overlay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    strip_height_fraction: float = Field(0.08, gt=0, le=0.5)
    fps: float = Field(1.0, gt=0, le=30)  # frames read per second of clip
    max_clock_skew_seconds: float = Field(120.0, ge=0)  # overlay time vs the clip's name
    min_confidence: float = Field(0.5, ge=0, le=1)
    slash_date_order: SlashOrder | None = None  # how to read NN/NN/YYYY; None: only if evident
    give_up_after_frames: int = Field(10, ge=0)  # none of the first N read: no overlay (0: never)


@dataclass(frozen=True)
class OverlayReading:
    """One overlay line, parsed. ``local_time`` is naive: the camera clock's local time."""

    local_time: datetime
    lat: float
    lon: float
    speed_kmh: float
    model: str = ""

    def describe(self) -> str:
        return (
            f"{self.local_time:%Y-%m-%d %H:%M:%S} {self.lat:.4f},{self.lon:.4f} "
            f"{self.speed_kmh:.0f} km/h"
        )


class OverlayTrack(NamedTuple):
    fixes: tuple[Fix, ...]
    problems: list[str]


# --- pixels -------------------------------------------------------------------------------


def crop_strip(frame_bgr: NDArray[Any], *, height_fraction: float = 0.08) -> NDArray[Any]:
    """The bottom ``height_fraction`` of the frame (a view, not a copy), at least one row."""
    if not 0 < height_fraction <= 1:
        raise ValueError(f"strip height fraction must be in (0, 1], not {height_fraction!r}")
    height = frame_bgr.shape[0]
    rows = min(height, max(1, round(height * height_fraction)))
    return frame_bgr[height - rows :]


def text_box(strip_bgr: NDArray[Any]) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of the overlay text in the strip, with a margin, or
    ``None`` when nothing looks like outlined text. Glyph pixels are bright next to a dark
    outline; the text is the band of rows with most of them, from its first to its last such
    column."""
    grey = strip_bgr.max(axis=2) if strip_bgr.ndim == 3 else strip_bgr
    grey = np.ascontiguousarray(grey, dtype=np.uint8)
    height, width = grey.shape
    k = max(3, (height // 16) | 1)
    kernel = np.ones((k, k), np.uint8)
    contrast = cv2.dilate(grey, kernel).astype(np.int16) - cv2.erode(grey, kernel)
    mask = (grey >= TEXT_MIN_GREY) & (contrast >= TEXT_MIN_CONTRAST)
    rows = mask.sum(axis=1)
    peak = int(rows.argmax())
    if rows[peak] < 3:
        return None
    on = rows >= max(2, rows[peak] // 10)
    top = bottom = peak
    while top > 0 and on[top - 1]:
        top -= 1
    while bottom < height - 1 and on[bottom + 1]:
        bottom += 1
    bottom += 1
    band = bottom - top
    left, right = _text_columns(mask[top:bottom].sum(axis=0), gap=round(BLOCK_GAP * band))
    margin_y = max(2, round(MARGIN_Y * band))
    margin_x = max(2, round(MARGIN_X * band))
    return (
        max(0, top - margin_y),
        min(height, bottom + margin_y),
        max(0, left - margin_x),
        min(width, right + margin_x),
    )


def _text_columns(counts: NDArray[Any], *, gap: int) -> tuple[int, int]:
    """``(left, right)`` of the text in a column profile: runs of columns closer than ``gap``
    form blocks (words join, a line's parts too); blocks with at least :data:`BLOCK_SHARE` of
    the biggest one's pixels are text, the rest (a lane marking, a reflection) is left out."""
    cols = np.flatnonzero(counts)
    splits = np.flatnonzero(np.diff(cols) > gap) + 1
    blocks = [(int(c[0]), int(c[-1]) + 1) for c in np.split(cols, splits)]
    mass = [int(counts[a:b].sum()) for a, b in blocks]
    text = [block for block, m in zip(blocks, mass, strict=True) if m >= BLOCK_SHARE * max(mass)]
    return text[0][0], text[-1][1]


def read_strip(strip_bgr: NDArray[Any], read_line: ReadLine) -> tuple[str, float] | None:
    """The recogniser's reading of the text in the strip (a tight crop when the text is found,
    the whole strip otherwise)."""
    box = text_box(strip_bgr)
    crop = strip_bgr if box is None else strip_bgr[box[0] : box[1], box[2] : box[3]]
    return read_line(np.ascontiguousarray(crop))


# --- text ---------------------------------------------------------------------------------


def parse_overlay(
    text: str, *, slash_date_order: SlashOrder | None = None
) -> OverlayReading | None:
    """The reading in one overlay line, or ``None`` when the line does not fit the grammar (see
    the module's docstring) or holds an impossible value."""
    line = text.upper().translate(_DASHES).strip(_EDGE)
    m = _LINE.fullmatch(line)
    if m is None:
        return None
    g = {
        k: v.replace("O", "0") if v is not None and k != "model" else v
        for k, v in m.groupdict().items()
    }
    speed = int(g["speed"]) * (KMH_PER_MPH if g["unit"] == "MPH" else 1.0)
    lat = float(g["lat"].replace(",", "."))
    lon = float(g["lon"].replace(",", "."))
    if speed > MAX_SPEED_KMH or lat > 90 or lon > 180 or (lat == 0 and lon == 0):
        return None
    date = _date(g, slash_date_order)
    if date is None:
        return None
    try:
        when = datetime(*date, int(g["hh"]), int(g["mi"]), int(g["ss"]))
    except ValueError:  # 31-02, minute 61, hour 24
        return None
    if not 2000 <= when.year <= 2099:
        return None
    return OverlayReading(
        local_time=when,
        lat=-lat if g["ns"] == "S" else lat,
        lon=-lon if g["ew"] == "W" else lon,
        speed_kmh=round(speed, 3),
        model=" ".join(g["model"].split()),
    )


def _date(g: dict[str, str | None], slash_order: SlashOrder | None) -> tuple[int, int, int] | None:
    """(year, month, day) from whichever date form matched."""
    if g["yf_y"] is not None:
        return _ints(g["yf_y"], g["yf_m"], g["yf_d"])
    if g["dash_y"] is not None:
        return _ints(g["dash_y"], g["dash_m"], g["dash_d"])
    a, b, y = _ints(g["sl_a"], g["sl_b"], g["sl_y"])
    order = slash_order
    if order is None:  # only when one reading is impossible
        order = "dmy" if a > 12 >= b else "mdy" if b > 12 >= a else None
    if order is None:
        return None
    return (y, b, a) if order == "dmy" else (y, a, b)


def _ints(*values: str | None) -> tuple[int, int, int]:
    y, m, d = (int(v or "") for v in values)
    return y, m, d


# --- track --------------------------------------------------------------------------------


def build_track(
    readings: Sequence[tuple[float, OverlayReading]],
    *,
    clip_local_start: datetime | None,
    timezone: str,
    max_speed_kmh: float = 300.0,
    max_clock_skew_seconds: float = 120.0,
) -> OverlayTrack:
    """Fixes from ``(frame time in seconds from the clip's start, reading)`` pairs, and one line
    per rejected reading (at most :data:`MAX_PROBLEM_LINES`, then a count).

    A reading is rejected when its speed is over ``max_speed_kmh``; when its time is more than
    ``max_clock_skew_seconds`` from ``clip_local_start`` + frame time (when the clip's local
    start is known, e.g. from its name: naive local time, or aware and converted); when its
    time disagrees with the other frames' by more than :data:`OFFSET_TOLERANCE_SECONDS` (the
    overlay clock runs with the video); when ``clean`` finds it an implausible jump or it is
    outside the clip's main run of fixes (:func:`_main_run`); or when it lies off the line
    between its neighbours (:func:`_kinks`). A speed off the line between its neighbours'
    (:func:`_speed_kinks`) is replaced by one from the positions, the fix kept. Frames showing
    the same overlay second give one fix (:func:`_one_per_second`). Local time becomes UTC in
    the IANA zone ``timezone``; in the hour a DST change repeats, the first (summer) offset is
    assumed."""
    zone = _zone(timezone)
    if clip_local_start is not None and clip_local_start.tzinfo is not None:
        clip_local_start = clip_local_start.astimezone(zone).replace(tzinfo=None)
    problems = _Problems()

    kept: list[tuple[float, OverlayReading]] = []
    for t, r in sorted(readings, key=lambda pair: pair[0]):
        if r.speed_kmh > max_speed_kmh:
            problems.add(t, r, f"speed over {max_speed_kmh:g} km/h")
            continue
        if clip_local_start is not None:
            expected = clip_local_start + timedelta(seconds=t)
            skew = abs((r.local_time - expected).total_seconds())
            if skew > max_clock_skew_seconds:
                when = f"{expected:%Y-%m-%d %H:%M:%S}"
                why = (
                    f"{skew:.0f} s from the clip's time {when} (over {max_clock_skew_seconds:g} s)"
                )
                problems.add(t, r, why)
                continue
        kept.append((t, r))
    chosen = _one_per_second(_consistent(kept, problems), problems, max_speed_kmh)

    fixes: list[Fix] = []
    frames: dict[datetime, tuple[float, OverlayReading]] = {}  # fix time: its reading
    folds = 0
    for t, r in chosen:
        local = r.local_time.replace(tzinfo=zone, fold=0)
        folds += local.utcoffset() != r.local_time.replace(tzinfo=zone, fold=1).utcoffset()
        fix = Fix(local, r.lat, r.lon, speed_kmh=r.speed_kmh)
        fixes.append(fix)
        frames[fix.time] = (t, r)
    fixes.sort(key=lambda f: f.time)
    if folds:
        problems.lines.append(f"{folds} overlay times fall in a DST change: first offset assumed")

    # big jumps first (clean() weighs runs of fixes against each other), then the small
    # misreads they let through; clean() again so that no bearing comes from a dropped fix
    plausible, _ = gpstrack.clean(fixes, max_speed_kmh=max_speed_kmh)
    main = _main_run(plausible, max_speed_kmh)
    kinks = _kinks([f for f in plausible if f.time in main])
    good = [f for f in fixes if f.time in main and f.time not in kinks]
    for i, shown in _speed_kinks(good).items():  # the position stands, the speed goes
        t, r = frames[good[i].time]
        problems.add(t, r, f"speed {r.speed_kmh:.0f} km/h, its neighbours' {shown:.0f}: dropped")
        good[i] = dataclasses.replace(good[i], speed_kmh=None)
    cleaned, _ = gpstrack.clean(good, max_speed_kmh=max_speed_kmh)  # fills in those speeds

    left, jumped = {f.time for f in cleaned}, {f.time for f in fixes} - {f.time for f in plausible}
    for fix in fixes:
        if fix.time in left:
            continue
        if fix.time in kinks:
            why = f"{kinks[fix.time]:.0f} m off the line between its neighbours"
        elif fix.time in jumped:
            why = f"an implausible jump (over {max_speed_kmh:g} km/h)"
        else:
            why = "away from the clip's main run of fixes"
        problems.add(*frames[fix.time], why)
    return OverlayTrack(cleaned, problems.done())


def _kinks(fixes: Sequence[Fix]) -> dict[datetime, float]:
    """``{time: metres}`` of the fixes further than :data:`KINK_M` from where the line between
    their neighbours (each at most :data:`KINK_SPAN_SECONDS` away) puts them, and further than
    either neighbour is from its own line: one misread digit moves one fix, not the car (at a
    fix a second, hard braking or a tight turn bends the path by a few metres)."""
    off = [0.0] * len(fixes)
    for i in range(1, len(fixes) - 1):
        a, fix, b = fixes[i - 1], fixes[i], fixes[i + 1]
        before = (fix.time - a.time).total_seconds()
        after = (b.time - fix.time).total_seconds()
        if max(before, after) <= KINK_SPAN_SECONDS:
            guess = gpstrack.position_at([a, b], fix.time, max_gap_seconds=2 * KINK_SPAN_SECONDS)
            off[i] = 0.0 if guess is None else gpstrack.haversine_m(fix, guess)
    return {
        fixes[i].time: off[i]
        for i in range(1, len(fixes) - 1)
        if off[i] > KINK_M and off[i] > off[i - 1] and off[i] > off[i + 1]
    }


def _speed_kinks(fixes: Sequence[Fix]) -> dict[int, float]:
    """``{index: km/h between its neighbours}`` of the fixes whose speed is more than
    :data:`SPEED_KINK_KMH` off the line between their neighbours' speeds (each at most
    :data:`KINK_SPAN_SECONDS` away), and further off than either neighbour's: a misread digit.
    Braking as hard as a car can (1 g) from a steady speed puts the speed 18 km/h off that
    line; a tens digit read wrong (3 for 8) is off by 50."""

    def between(i: int) -> float | None:
        a, fix, b = fixes[i - 1], fixes[i], fixes[i + 1]
        before = (fix.time - a.time).total_seconds()
        after = (b.time - fix.time).total_seconds()
        if max(before, after) > KINK_SPAN_SECONDS:
            return None
        if a.speed_kmh is None or b.speed_kmh is None:
            return None
        return a.speed_kmh + (b.speed_kmh - a.speed_kmh) * before / (before + after)

    off = [0.0] * len(fixes)
    guess: dict[int, float] = {}
    for i in range(1, len(fixes) - 1):
        g = between(i)
        speed = fixes[i].speed_kmh
        if g is not None and speed is not None:
            guess[i], off[i] = g, abs(speed - g)
    return {
        i: g
        for i, g in guess.items()
        if off[i] > SPEED_KINK_KMH and off[i] > off[i - 1] and off[i] > off[i + 1]
    }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a folder of zones
        raise ValueError(f"unknown time zone {name!r} (an IANA name: Europe/Paris)") from None


def _consistent(
    readings: list[tuple[float, OverlayReading]], problems: _Problems
) -> list[tuple[float, OverlayReading, float]]:
    """``(frame time, reading, offset)`` of the readings whose overlay time minus frame time
    (the clip start they imply) is within :data:`OFFSET_TOLERANCE_SECONDS` of the median over
    all readings; ``offset`` is how far (seconds). On a steady clock the overlay shows the time
    truncated to the second, so correct readings are less than a second apart."""
    if not readings:
        return []
    origin = readings[0][1].local_time
    implied = [(r.local_time - origin).total_seconds() - t for t, r in readings]
    middle = statistics.median_low(implied)
    out = []
    for (t, r), start in zip(readings, implied, strict=True):
        off = start - middle
        if abs(off) > OFFSET_TOLERANCE_SECONDS:
            problems.add(t, r, f"time {off:+.1f} s off the other frames'")
        else:
            out.append((t, r, off))
    return out


def _one_per_second(
    readings: list[tuple[float, OverlayReading, float]], problems: _Problems, max_speed_kmh: float
) -> list[tuple[float, OverlayReading]]:
    """One reading per overlay second: the value most of its frames show. On a tie between
    values close together (the GPS updated within the second, or a second misread by one
    landed here), the reading whose time fits the other frames' best; between values far
    apart (a misread), the one nearest the previous second's, or none for the first second.
    Readings far from the one kept are reported."""
    near_m = max_speed_kmh / 3.6 + gpstrack.JITTER_M
    groups: dict[datetime, list[tuple[float, OverlayReading, float]]] = {}
    for t, r, off in readings:
        groups.setdefault(r.local_time, []).append((t, r, off))
    out: list[tuple[float, OverlayReading]] = []
    for second in sorted(groups):
        group = groups[second]
        votes = Counter((r.lat, r.lon, r.speed_kmh) for _, r, _ in group)
        best = max(votes.values())
        top = [p for p in group if votes[(p[1].lat, p[1].lon, p[1].speed_kmh)] == best]
        if all(gpstrack.haversine_m(top[0][1], p[1]) <= near_m for p in top):
            t, winner, _ = min(top, key=lambda p: abs(p[2]))
        elif out:
            t, winner, _ = min(top, key=lambda p: gpstrack.haversine_m(out[-1][1], p[1]))
        else:
            for t, r, _ in group:
                problems.add(t, r, f"the frames of {second:%H:%M:%S} disagree")
            continue
        out.append((t, winner))
        for t, r, _ in group:
            if gpstrack.haversine_m(r, winner) > near_m:
                problems.add(t, r, f"disagrees with the other frames of {second:%H:%M:%S}")
    return sorted(out, key=lambda pair: pair[0])


def _main_run(fixes: Sequence[Fix], max_speed_kmh: float) -> set[datetime]:
    """Times of the fixes in the biggest run of fixes that follow each other plausibly (the
    way ``clean`` builds runs). One clip is one drive: a second run that ``clean`` kept (three
    fixes or more) is the same digit misread in frame after frame (48 read as 43)."""
    limit = max_speed_kmh / 3.6
    runs: list[list[Fix]] = []
    for fix in fixes:
        home = next(
            (
                run
                for run in reversed(runs)
                if gpstrack.haversine_m(run[-1], fix)
                <= limit * abs((fix.time - run[-1].time).total_seconds()) + gpstrack.JITTER_M
            ),
            None,
        )
        if home is None:
            runs.append([fix])
        else:
            home.append(fix)
    return {f.time for f in max(runs, key=len, default=[])}


class _Problems:
    """Problem lines, bounded: the first :data:`MAX_PROBLEM_LINES`, then how many more."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.more = 0

    def add(self, t: float, r: OverlayReading, why: str) -> None:
        if len(self.lines) < MAX_PROBLEM_LINES:
            self.lines.append(f"overlay at {t:.1f} s ({r.describe()}) rejected: {why}")
        else:
            self.more += 1

    def done(self) -> list[str]:
        return self.lines + (
            [f"and {self.more} more overlay readings rejected"] if self.more else []
        )


# --- frames to track ------------------------------------------------------------------------


def read_overlay(
    frames: Iterable[tuple[float, NDArray[Any]]],
    read_line: ReadLine,
    settings: OverlaySettings,
) -> tuple[list[tuple[float, OverlayReading]], list[str]]:
    """Readings from ``(seconds from the clip's start, BGR frame)`` pairs, and one line saying
    how many frames gave none and why. Stops early when none of the first
    ``give_up_after_frames`` frames reads (a clip without an overlay)."""
    readings: list[tuple[float, OverlayReading]] = []
    unread = Counter[str]()
    seen = 0
    for t, frame in frames:
        seen += 1
        strip = crop_strip(frame, height_fraction=settings.strip_height_fraction)
        result = read_strip(strip, read_line)
        if result is None or not result[0].strip():
            unread["no text"] += 1
        elif result[1] < settings.min_confidence:
            unread[f"confidence under {settings.min_confidence:g}"] += 1
        elif (
            reading := parse_overlay(result[0], slash_date_order=settings.slash_date_order)
        ) is None:
            unread["not an overlay line"] += 1
            log.debug("overlay at %.1f s does not parse: %r", t, result[0])
        else:
            readings.append((t, reading))
        if not readings and seen == settings.give_up_after_frames:
            break
    problems = []
    if unread:
        why = ", ".join(f"{n} {reason}" for reason, n in unread.most_common())
        problems.append(f"overlay unread in {sum(unread.values())} of {seen} frames ({why})")
    if not readings and seen and seen == settings.give_up_after_frames:
        problems.append(f"no overlay in the first {seen} frames: gave up")
    return readings, problems


def overlay_track(
    frames: Iterable[tuple[float, NDArray[Any]]],
    read_line: ReadLine,
    settings: OverlaySettings,
    *,
    clip_local_start: datetime | None,
    timezone: str,
    max_speed_kmh: float = 300.0,
) -> Track:
    """The clip's track from its overlay: :func:`read_overlay` then :func:`build_track`.
    ``Track(None, ...)`` when no fix came out of it."""
    readings, problems = read_overlay(frames, read_line, settings)
    fixes, more = build_track(
        readings,
        clip_local_start=clip_local_start,
        timezone=timezone,
        max_speed_kmh=max_speed_kmh,
        max_clock_skew_seconds=settings.max_clock_skew_seconds,
    )
    return Track(SOURCE if fixes else None, fixes, tuple(problems + more))
