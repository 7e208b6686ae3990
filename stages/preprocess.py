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
5. **Route**: kept frames (JPEG) and ``frames.json`` (one record per frame: time, motion,
   detections, interpolated position) go to ``heavy``; a clip with nothing kept goes to
   ``archive`` with the reason heavy was skipped. Locked and event clips always go to heavy.

The sidecar's facts hold the summary (counts, route, reason); the per-frame records are a file
of their own, so that a clip's sidecar stays small whatever it shows. The clip's ``track.gpx``
/ ``track.geojson`` travel on either way. Ingest's facts come from another machine: each part
is checked on its own, and what is unusable is left out with a line in ``problems``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import av
import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from stages import clip
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
FRAMES_FILE = "frames.json"  # the per-frame records, beside the JPEGs
MAX_FPS = 60  # sampling rate limit, and so the most moments a second of clip can give


class PreprocessSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_by: Literal["time", "distance"] = "time"
    fps: float = Field(1.0, gt=0, le=MAX_FPS)
    every_m: float = Field(10.0, ge=1)
    stopped_below_kmh: float = Field(3.0, ge=0)
    position_max_gap_seconds: float = Field(5.0, gt=0)
    snap_to_keyframes: bool = True
    decode_threads: int = Field(0, ge=0, le=64)
    motion_width_px: int = Field(160, ge=32, le=1280)
    pixel_threshold: int = Field(25, ge=1, le=254)
    motion_threshold: float = Field(0.02, gt=0, le=1)
    duplicate_distance: int = Field(4, ge=0, le=63)
    classes: tuple[str, ...] = COCO_ROAD
    detector: DetectorSettings = NoneSettings()
    max_frames: int = Field(120, ge=1, le=10_000)
    jpeg_quality: int = Field(90, ge=1, le=100)
    jpeg_max_side_px: int = Field(0, ge=0)
    heavy_stage: str = "heavy"
    skip_stage: str = "archive"

    @field_validator("jpeg_max_side_px")
    @classmethod
    def _jpeg_side(cls, v: int) -> int:
        if 0 < v < 64:
            raise ValueError("must be 0 (full size) or at least 64")
        return v


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

    def teardown(self) -> None:
        detector = getattr(self, "detector", None)
        if detector is not None:
            detector.close()

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
        problems: list[str] = []
        facts = clip.IngestFacts.find(job.facts, problems)
        locked = facts.camera.get("locked") is True or facts.camera.get("mode") == "event"
        start = clip.utc(facts.time.get("utc_start"))
        duration = clip.duration(video, facts)
        track = clip.track(facts, start, duration, problems)
        moments, sampling = self._moments(duration, track, start, facts, locked)

        sampler = FrameSampler(
            video, snap_to_keyframes=s.snap_to_keyframes, threads=s.decode_threads
        )
        looker = MotionFilter(pixel_threshold=s.pixel_threshold)
        kept: list[_Kept] = []
        sampled = moving = duplicates = 0
        motion_max = 0.0
        last_kept: Look | None = None
        last_detected: tuple[Look, list[Detection]] | None = None
        try:
            with contextlib.closing(read_ahead(sampler.sample(moments))) as samples:
                for sample in samples:
                    sampled += 1
                    look = looker.look(_gray(sample.frame, s.motion_width_px))
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
        except (av.error.FFmpegError, IndexError) as err:
            raise PermanentError(f"unreadable: PyAV could not decode the clip: {err}") from None
        stats = sampler.stats
        if moments and not sampled and stats.untimed:
            raise PermanentError(
                "unreadable: the video has no timestamps (a raw H.264/HEVC stream?), so no frame "
                "can be placed in time; remux it into MP4 (ffmpeg -i IN -c copy OUT.mp4)"
            )
        if moments and not sampled:
            why = "; ".join(stats.errors[:3]) or "no frame came out of the decoder"
            raise PermanentError(f"unreadable: not one frame of the clip could be decoded ({why})")
        if stats.errors:
            problems.append(f"{len(stats.errors)} decode errors, first: {stats.errors[0]}")
            ctx.log.warning("%s: %d decode errors", job.source_name, len(stats.errors))

        capped = _thin(kept, s.max_frames)
        for k in capped:
            ctx.remove_output(k.record["file"])
        dropped = {id(k) for k in capped}
        kept = [k for k in kept if id(k) not in dropped]
        seen: Counter[str] = Counter()
        positions = _Positions(track, s.position_max_gap_seconds)
        for k in kept:
            k.record.update(_record(k, start, positions))
            seen.update({d.label for d in k.detections})

        for name in CARRIED:
            if name in ctx.inputs:
                ctx.copy_input(name)
        if kept or locked:
            route, why, skipped = s.heavy_stage, _why_heavy(locked, moving, seen), None
            records = [k.record for k in kept]
            ctx.write_output(FRAMES_FILE, json.dumps({"frames": records}, indent=1).encode())
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
            decode=stats.to_json(),
            detector=self.detector.describe(),
            frames_sampled=sampled,
            frames_moving=moving,
            frames_duplicate=duplicates,
            frames_capped=len(capped),
            frames_kept=len(kept),
            frames_file=FRAMES_FILE if route == s.heavy_stage else None,
            motion_max=round(motion_max, 4),
            objects=dict(seen.most_common()),
            problems=problems[:20],
        )
        ctx.log.info(
            "%s: %d/%d frames kept -> %s (%s)", job.source_name, len(kept), sampled, route, why
        )

    def _moments(
        self,
        duration: float,
        track: list[Fix],
        start: datetime | None,
        facts: clip.IngestFacts,
        locked: bool,
    ) -> tuple[list[float], dict[str, Any]]:
        s = self._settings
        by_time = {"by": "time", "fps": s.fps}
        if s.sample_by == "time":
            moments = every_seconds(duration, s.fps)
            return moments, {**by_time, "moments": len(moments)}
        why = None
        if facts.camera.get("mode") == "parking":
            why = "a parking clip: the camera stands still"
        elif locked:
            why = "a locked or event clip: every moment of it counts, moving or not"
        elif not track or start is None:
            why = "no GPS track"
        if why is not None:
            moments = every_seconds(duration, s.fps)
            return moments, {**by_time, "moments": len(moments), "note": why}
        assert start is not None
        end = start + timedelta(seconds=duration)
        times = gpstrack.times_every(
            track,
            s.every_m,
            stopped_below_kmh=s.stopped_below_kmh,
            until=end,
            limit=int(duration * MAX_FPS) + 1,  # never more frames than the clip has
        )
        moments = [m for t in times if 0 <= (m := (t - start).total_seconds()) < duration]
        return moments, {"by": "distance", "every_m": s.every_m, "moments": len(moments)}

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
        if s.jpeg_max_side_px and max(frame.width, frame.height) > s.jpeg_max_side_px:
            scale = s.jpeg_max_side_px / max(frame.width, frame.height)
        w, h = round(frame.width * scale) // 2 * 2, round(frame.height * scale) // 2 * 2
        bgr = frame.reformat(width=w, height=h, format="bgr24", interpolation="AREA").to_ndarray()
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            raise PermanentError(f"could not encode frame {sample.time:.3f}s as JPEG")
        name = f"frame-{n:04d}-t{sample.time:09.3f}.jpg"
        ctx.output_path(name).write_bytes(data.tobytes())
        kept.record["file"] = name
        kept.record["width"], kept.record["height"] = w, h
        if (w, h) != (frame.width, frame.height):  # boxes in the pixels of the JPEG
            back = w / frame.width, h / frame.height
            kept.detections = [_scaled(d, back) for d in kept.detections]

    def _why_skip(self, sampled: int, motion_max: float) -> str:
        s = self._settings
        things = ", ".join(s.classes[:12]) if s.classes else "any object"
        if len(s.classes) > 12:
            things += f" or {len(s.classes) - 12} more classes"
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


class _Positions:
    """Positions along the clip's track at given moments (fix times indexed once)."""

    def __init__(self, track: list[Fix], max_gap: float) -> None:
        self.track, self.max_gap = track, max_gap
        self.times = [f.time for f in track]

    def at(self, when: datetime) -> Fix | None:
        if not self.track:
            return None
        return gpstrack.position_at(
            self.track, when, max_gap_seconds=self.max_gap, times=self.times
        )


def _record(k: _Kept, start: datetime | None, positions: _Positions) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": round(k.time, 4),
        "keyframe": k.keyframe,
        "motion": round(k.look.motion, 4),
        "hash": k.look.hash_hex,
        "detections": [d.to_json() for d in k.detections],
    }
    if k.reused:
        out["detections_reused"] = True
    if start is not None:
        when = start + timedelta(seconds=k.time)
        out["utc"] = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        fix = positions.at(when)
        out["position"] = (
            None if fix is None else {key: v for key, v in fix.to_json().items() if key != "time"}
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
