"""``preprocess`` (Jetson + Coral): which frames of a clip matter, and does it need heavy at all?

For each clip ingest filed (``refs.video``), one pass:

1. **Sample** moments: every ``1/fps`` seconds, or every ``every_m`` metres along the clip's GPS
   track (``sample_by = "distance"``; a standing vehicle yields no frames). Only the frames
   needed are decoded (:mod:`stages.frames`).
2. **Look** at each sample on a small grey copy (:mod:`stages.motion`): motion since the
   previous sample and a perceptual hash.
3. **Detect** with the light detector (``stages/detectors/``: ``edgetpu``, ``litert`` or
   ``none``), skipped on a still frame that repeats the last one the detector saw.
4. **Keep** a sample when something moved or an object of interest is in it, unless it is a
   still near-duplicate of the last kept frame; keep at most ``max_frames`` (thinned evenly).
   Locked and event clips keep every sample that is not a near-duplicate.
5. **Route**: kept frames (JPEG) and a per-frame record (time, motion, detections,
   interpolated position) go to ``heavy``; a clip with nothing kept goes to ``archive`` with
   the reason heavy was skipped. Locked and event clips always go to heavy.

The clip's ``track.gpx`` / ``track.geojson`` travel on either way.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import av
import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stages.detectors import Detection, Detector, DetectorSettings, NoneSettings, build_detector
from stages.frames import FrameSampler, Sample, every_seconds, read_ahead
from stages.gps import Fix
from stages.gps import track as gpstrack
from stages.motion import Look, MotionFilter, distance
from watchers.config import Policies
from watchers.errors import ConfigError, PermanentError
from watchers.sidecar import Sidecar
from watchers.stage import Context, Stage

log = logging.getLogger(__name__)

COCO_ROAD = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
CARRIED = ("track.gpx", "track.geojson")  # ingest's outputs, handed on whichever way we route
MAX_DETECTIONS_PER_FRAME = 50  # in the sidecar; heavy looks again anyway


class PreprocessSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_by: Literal["time", "distance"] = "time"
    fps: float = Field(1.0, gt=0, le=60)
    every_m: float = Field(10.0, gt=0)
    stopped_below_kmh: float = Field(3.0, ge=0)
    position_max_gap_seconds: float = Field(5.0, gt=0)
    snap_to_keyframes: bool = True
    decode_threads: int = Field(0, ge=0, le=64)
    motion_width: int = Field(160, ge=32, le=1280)
    pixel_threshold: int = Field(25, ge=1, le=254)
    motion_threshold: float = Field(0.02, gt=0, le=1)
    duplicate_distance: int = Field(4, ge=0, le=63)
    classes: tuple[str, ...] = COCO_ROAD
    detector: DetectorSettings = NoneSettings()
    max_frames: int = Field(120, ge=1, le=10_000)
    jpeg_quality: int = Field(90, ge=1, le=100)
    jpeg_max_side: int = Field(0, ge=0)
    heavy_stage: str = "heavy"
    skip_stage: str = "archive"


class _IngestFacts(BaseModel):
    """What preprocess reads of ingest's facts (from another machine: checked, bounded)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    camera: dict[str, Any] = {}
    media: dict[str, Any] = {}
    time: dict[str, Any] = {}
    gps: dict[str, Any] = {}


@dataclass
class _Kept:
    """A kept sample, without its decoded picture (written out as JPEG at once)."""

    time: float
    keyframe: bool
    look: Look
    detections: list[Detection]
    reused: bool
    record: dict[str, Any] = field(default_factory=dict)


class PreprocessStage(Stage):
    type_name = "preprocess"
    Settings = PreprocessSettings

    detector: Detector

    def setup(self, policies: Policies) -> None:
        s = self._settings
        where = f"{policies.label}: stages.{self.name}"
        nxt = policies.stages[self.name].next
        for key, target in (("heavy_stage", s.heavy_stage), ("skip_stage", s.skip_stage)):
            if target not in nxt:
                raise ConfigError(
                    f"{where}.{key}: {target!r} is not one of this stage's next stages {nxt}"
                )
        self.detector = build_detector(
            s.detector, classes=s.classes, resolve=policies.path, where=f"{where}.detector"
        )
        log.info("%s: detector %s", self.name, self.detector.describe())

    @property
    def _settings(self) -> PreprocessSettings:
        assert isinstance(self.settings, PreprocessSettings)
        return self.settings

    # -------------------------------------------------------------------- job
    def process(self, job: Sidecar, ctx: Context) -> None:
        s = self._settings
        if "video" not in ctx.refs:
            raise PermanentError("preprocess needs the clip: the job has no refs.video")
        video = ctx.resolve_ref("video")
        try:
            facts = _IngestFacts.model_validate(job.facts.get("ingest") or {})
        except ValidationError:
            facts = _IngestFacts()
        problems: list[str] = []
        track = _track(facts, problems)
        start = _utc(facts.time.get("utc_start"))
        locked = bool(facts.camera.get("locked")) or facts.camera.get("mode") == "event"
        duration = _duration(video, facts)
        moments, sampling = self._moments(duration, track, start, facts)

        sampler = FrameSampler(
            video, snap_to_keyframes=s.snap_to_keyframes, threads=s.decode_threads
        )
        looker = MotionFilter(pixel_threshold=s.pixel_threshold)
        kept: list[_Kept] = []
        seen: Counter[str] = Counter()
        sampled = moving = duplicates = 0
        motion_max = 0.0
        last_kept: Look | None = None
        last_detected: tuple[Look, list[Detection]] | None = None
        try:
            for sample in read_ahead(sampler.sample(moments)):
                sampled += 1
                look = looker.look(_gray(sample.frame, s.motion_width))
                is_moving = look.motion >= s.motion_threshold
                moving += is_moving
                motion_max = max(motion_max, look.motion)
                detections, reused = self._detect(sample, look, is_moving, last_detected)
                if not reused:
                    last_detected = (look, detections)
                interesting = is_moving or bool(detections) or locked
                repeat = (
                    last_kept is not None
                    and not is_moving
                    and distance(look.hash, last_kept.hash) <= s.duplicate_distance
                )
                if interesting and repeat:
                    duplicates += 1
                if interesting and not repeat:
                    kept.append(_Kept(sample.time, sample.keyframe, look, detections, reused))
                    last_kept = look
                    self._write_frame(ctx, sample, kept[-1], len(kept))
        except av.error.FFmpegError as err:
            raise PermanentError(f"unreadable: PyAV could not decode the clip: {err}") from None

        capped = _thin(kept, s.max_frames)
        for k in capped:
            ctx.remove_output(k.record["file"])
        dropped = {id(k) for k in capped}
        kept = [k for k in kept if id(k) not in dropped]
        for k in kept:
            k.record.update(_record(k, start, track, s.position_max_gap_seconds))
            seen.update({d.label for d in k.detections})

        for name in CARRIED:
            if name in ctx.inputs:
                ctx.copy_input(name)
        if kept:
            route, why, skipped = s.heavy_stage, _why_heavy(locked, moving, seen), None
        else:
            route, why = s.skip_stage, self._why_skip(sampled, motion_max)
            skipped = why
        ctx.route(route)
        ctx.set_facts(
            kind="screening",
            route=route,
            reason=why,
            heavy_skipped=skipped,
            sampling=sampling,
            decode=sampler.stats.to_json(),
            detector=self.detector.describe(),
            frames_sampled=sampled,
            frames_moving=moving,
            frames_duplicate=duplicates,
            frames_capped=len(capped),
            frames_kept=len(kept),
            motion_max=round(motion_max, 4),
            objects=dict(seen.most_common()),
            problems=problems[:20],
            frames=[k.record for k in kept],
        )
        ctx.log.info(
            "%s: %d/%d frames kept → %s (%s)", job.source_name, len(kept), sampled, route, why
        )

    def _moments(
        self, duration: float, track: list[Fix], start: datetime | None, facts: _IngestFacts
    ) -> tuple[list[float], dict[str, Any]]:
        s = self._settings
        if s.sample_by == "distance":
            why = None
            if facts.camera.get("mode") == "parking":
                why = "a parking clip: the camera stands still"
            elif not track or start is None:
                why = "no GPS track"
            if why is None:
                assert start is not None
                times = gpstrack.times_every(
                    track, s.every_m, stopped_below_kmh=s.stopped_below_kmh
                )
                moments = [(t - start).total_seconds() for t in times]
                moments = [m for m in moments if 0 <= m < duration]
                return moments, {"by": "distance", "every_m": s.every_m, "moments": len(moments)}
            moments = every_seconds(duration, s.fps)
            return moments, {"by": "time", "fps": s.fps, "moments": len(moments), "note": why}
        moments = every_seconds(duration, s.fps)
        return moments, {"by": "time", "fps": s.fps, "moments": len(moments)}

    def _detect(
        self,
        sample: Sample,
        look: Look,
        is_moving: bool,
        last: tuple[Look, list[Detection]] | None,
    ) -> tuple[list[Detection], bool]:
        """Run the detector, or reuse its last answer for a still repeat of the frame it saw."""
        if self.detector.input_size is None:
            return [], False
        s = self._settings
        if (
            last is not None
            and not is_moving
            and distance(look.hash, last[0].hash) <= s.duplicate_distance
        ):
            return last[1], True
        frame = sample.frame
        width, height = self.detector.input_size
        scale = min(width / frame.width, height / frame.height, 1.0)
        w, h = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
        rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        found = self.detector.detect(rgb)
        if scale == 1.0:
            return found, False
        back = frame.width / w, frame.height / h
        return [_scaled(d, back) for d in found], False

    def _write_frame(self, ctx: Context, sample: Sample, kept: _Kept, n: int) -> None:
        s = self._settings
        frame = sample.frame
        scale = 1.0
        if s.jpeg_max_side and max(frame.width, frame.height) > s.jpeg_max_side:
            scale = s.jpeg_max_side / max(frame.width, frame.height)
        w, h = round(frame.width * scale) // 2 * 2, round(frame.height * scale) // 2 * 2
        bgr = frame.reformat(width=w, height=h, format="bgr24", interpolation="AREA").to_ndarray()
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            raise PermanentError(f"could not encode frame {sample.time:.3f}s as JPEG")
        name = f"frame-{n:04d}-t{sample.time:09.3f}.jpg"
        ctx.output_path(name).write_bytes(data.tobytes())
        kept.record["file"] = name
        kept.record["width"], kept.record["height"] = w, h

    def _why_skip(self, sampled: int, motion_max: float) -> str:
        s = self._settings
        things = ", ".join(s.classes) if s.classes else "any object"
        looked = "" if self.detector.input_size is None else f" and no {things}"
        return (
            f"nothing to look at: no motion above {s.motion_threshold:g} "
            f"(most: {motion_max:.4f}){looked} in {sampled} sampled frames"
        )


def _why_heavy(locked: bool, moving: int, seen: Counter[str]) -> str:
    parts = ["locked or event clip"] if locked else []
    if moving:
        parts.append(f"motion in {moving} samples")
    if seen:
        parts.append("seen: " + ", ".join(f"{k} x{v}" for k, v in seen.most_common()))
    return "; ".join(parts) or "frames kept"


def _thin(kept: list[_Kept], cap: int) -> list[_Kept]:
    """The frames to drop so that at most ``cap`` remain, spread evenly over the clip."""
    if len(kept) <= cap:
        return []
    keep = {round(i * (len(kept) - 1) / (cap - 1)) for i in range(cap)} if cap > 1 else {0}
    return [k for i, k in enumerate(kept) if i not in keep]


def _record(k: _Kept, start: datetime | None, track: list[Fix], max_gap: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": round(k.time, 4),
        "keyframe": k.keyframe,
        "motion": round(k.look.motion, 4),
        "hash": k.look.hash_hex,
        "detections": [d.to_json() for d in k.detections[:MAX_DETECTIONS_PER_FRAME]],
    }
    if k.reused:
        out["detections_reused"] = True
    if start is not None:
        when = start + timedelta(seconds=k.time)
        out["utc"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fix = gpstrack.position_at(track, when, max_gap_seconds=max_gap) if track else None
        out["position"] = (
            None if fix is None else {k2: v for k2, v in fix.to_json().items() if k2 != "time"}
        )
    return out


def _scaled(d: Detection, back: tuple[float, float]) -> Detection:
    x1, y1, x2, y2 = d.box
    sx, sy = back
    box = (round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy))
    return Detection(label=d.label, class_id=d.class_id, score=d.score, box=box)


def _gray(frame: av.VideoFrame, width: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    height = max(2, round(frame.height * width / frame.width))
    small = frame.reformat(width=width, height=height, format="gray", interpolation="AREA")
    return np.ascontiguousarray(small.to_ndarray())


def _track(facts: _IngestFacts, problems: list[str]) -> list[Fix]:
    raw = facts.gps.get("track") or []
    if not isinstance(raw, list):
        problems.append("ingest gps.track is not a list: ignored")
        return []
    fixes = []
    for i, point in enumerate(raw[:100_000]):
        try:
            fixes.append(Fix.from_json(point))
        except ValueError as err:
            problems.append(f"gps point {i}: {err}")
    fixes.sort(key=lambda f: f.time)
    return fixes


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _duration(video: Path, facts: _IngestFacts) -> float:
    """The clip's length: ingest's probe, else the container's own header."""
    value = facts.media.get("duration_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 86_400:
        return float(value)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
    raise PermanentError("unreadable: the clip's duration is unknown")
