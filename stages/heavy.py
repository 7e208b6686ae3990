"""``heavy`` (the GPU machine): what was seen, which plates, where and when.

For each clip preprocess sent on (its kept frames in ``frames.json``), one pass over the raw
clip (``refs.video``):

1. **Frames**: the kept frames' moments, plus a window around each (``window_seconds`` at
   ``window_fps``), so a passing car is seen in enough frames to be tracked; decoded exactly
   (:mod:`stages.frames`), at most ``max_frames``.
2. **Detect** in batches (``stages/detectors/``: ``ultralytics`` on CUDA, ``onnx`` on the CPU,
   ``litert``), then **track** with ByteTrack (:mod:`stages.tracking`): a car seen in 40 frames
   is one object.
3. **Plates**: on each vehicle track's largest sightings, find plates (:mod:`stages.plates`),
   read them (``stages/ocr/``), and vote per track.
4. **Where**: the clip's GPS track from ingest, or else one read from the burned-in overlay
   (:mod:`stages.overlay`); every track and plate gets the position at its exact frame time
   (``clock_offset_seconds`` corrects the camera clock), or none outside the track.
5. **Outputs** to archive: ``tracks.json``, ``plates.json``, an annotated thumbnail of each
   track's best frame, each plate's crop, and the facts the ledger turns into ``detections``
   and ``plates`` rows.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from stages import clip
from stages import plates as plate_tools
from stages.detectors import Detection, Detector, DetectorSettings, build_detector
from stages.detectors.litert import LiteRTSettings
from stages.frames import FrameSampler, every_seconds, read_ahead
from stages.gps import Fix
from stages.gps import track as gpstrack
from stages.ocr import OcrEngine, OcrSettings, RapidOcrSettings, build_ocr
from stages.overlay import OverlaySettings, overlay_track
from stages.tracking import Tracker, TrackerSettings
from watchers.config import Policies
from watchers.errors import ConfigError, PermanentError
from watchers.sidecar import Sidecar
from watchers.stage import Context, Stage

log = logging.getLogger(__name__)

FRAMES_FILE = "frames.json"
CARRIED = ("track.gpx", "track.geojson")
MAX_FRAMES_FILE_BYTES = 16 << 20
VEHICLES = ("car", "truck", "bus", "motorcycle")
THUMB_WIDTH = 640


class HeavySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    detector: DetectorSettings = LiteRTSettings()
    classes: tuple[str, ...] = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
    batch_size: int = Field(8, ge=1, le=256)
    window_seconds: float = Field(1.0, ge=0, le=30)
    window_fps: float = Field(5.0, gt=0, le=60)
    max_frames: int = Field(600, ge=1, le=20_000)
    tracker: TrackerSettings = TrackerSettings()
    plates: plate_tools.PlateFinderSettings = plate_tools.PlateFinderSettings()
    plate_classes: tuple[str, ...] = VEHICLES
    plate_reads_per_track: int = Field(6, ge=0, le=100)
    plate_settled_reads: int = Field(2, ge=1, le=100)
    plate_min_vehicle_px: int = Field(80, ge=16)
    ocr: OcrSettings = RapidOcrSettings()
    overlay: OverlaySettings = OverlaySettings()
    clock_offset_seconds: float = 0.0
    position_max_gap_seconds: float = Field(5.0, gt=0)
    thumbnail_quality: int = Field(85, ge=1, le=100)


@dataclass
class _TrackExtras:
    reads: list[plate_tools.PlateRead] = field(default_factory=list)
    read_crops: list[NDArray[np.uint8]] = field(default_factory=list)
    thumb: NDArray[np.uint8] | None = None
    thumb_score: float = -1.0


class HeavyStage(Stage):
    type_name = "heavy"
    Settings = HeavySettings

    detector: Detector
    ocr: OcrEngine

    def setup(self, policies: Policies) -> None:
        s = self._settings
        where = f"{policies.label}: stages.{self.name}"
        self.detector = build_detector(
            s.detector, classes=s.classes, resolve=policies.path, where=f"{where}.detector"
        )
        self.ocr = build_ocr(s.ocr, resolve=policies.path, where=f"{where}.ocr")
        self.plates = plate_tools.build_plate_finder(s.plates, where=f"{where}.plates")
        unknown = set(s.plate_classes) - set(s.classes)
        if unknown:
            raise ConfigError(
                f"{where}.plate_classes: {sorted(unknown)} are not among classes {list(s.classes)}"
            )
        log.info(
            "%s: detector %s; OCR %s", self.name, self.detector.describe(), self.ocr.describe()
        )

    def teardown(self) -> None:
        for part in (getattr(self, "detector", None), getattr(self, "ocr", None)):
            if part is not None:
                part.close()

    @property
    def _settings(self) -> HeavySettings:
        assert isinstance(self.settings, HeavySettings)
        return self.settings

    # -------------------------------------------------------------------- job
    def process(self, job: Sidecar, ctx: Context) -> None:
        s = self._settings
        if "video" not in ctx.refs:
            raise PermanentError("heavy needs the clip: the job has no refs.video")
        video = ctx.resolve_ref("video")
        problems: list[str] = []
        ingest = clip.IngestFacts.find(job.facts, problems)
        start = clip.utc(ingest.time.get("utc_start"))
        kept = self._kept_times(ctx, problems)
        duration = clip.duration(video, ingest)
        moments = _window(kept, duration, s.window_seconds, s.window_fps, s.max_frames)

        tracker = Tracker(s.tracker)
        extras: dict[int, _TrackExtras] = {}
        looked = 0
        sampler = FrameSampler(video, snap_to_keyframes=False)
        batch: list[tuple[float, NDArray[Any]]] = []
        samples = read_ahead(sampler.sample(moments))
        try:
            for sample in samples:
                batch.append((sample.time, sample.frame.to_ndarray(format="rgb24")))
                if len(batch) == s.batch_size:
                    looked += self._batch(batch, tracker, extras)
                    batch = []
            if batch:
                looked += self._batch(batch, tracker, extras)
        finally:
            samples.close()
        if moments and not looked:
            raise PermanentError("unreadable: not one frame of the clip could be decoded")

        track, gps_source = self._gps(ingest, video, start, duration, problems, ctx)
        offset = timedelta(seconds=s.clock_offset_seconds)
        times = [f.time for f in track]

        def place(t: float) -> tuple[str | None, Fix | None]:
            if start is None:
                return None, None
            when = start + timedelta(seconds=t) - offset
            fix = (
                gpstrack.position_at(
                    track, when, max_gap_seconds=s.position_max_gap_seconds, times=times
                )
                if track
                else None
            )
            return _iso(when), fix

        tracks_out, plates_out = [], []
        for t in tracker.tracks():
            x = extras.get(t.track_id, _TrackExtras())
            best = t.best
            first_utc, _ = place(t.first)
            last_utc, _ = place(t.last)
            _, where = place(best.time)
            thumb = None
            if x.thumb is not None:
                thumb = f"track-{t.track_id:04d}.jpg"
                _write_jpeg(ctx, thumb, x.thumb, s.thumbnail_quality)
            tracks_out.append(
                {
                    "track_id": t.track_id,
                    "label": t.label,
                    "first": round(t.first, 3),
                    "last": round(t.last, 3),
                    "first_utc": first_utc,
                    "last_utc": last_utc,
                    "score": round(best.detection.score, 3),
                    "frames": len(t.seen),
                    "box": list(best.detection.box),
                    "best_time": round(best.time, 3),
                    "lat": None if where is None else round(where.lat, 7),
                    "lon": None if where is None else round(where.lon, 7),
                    "thumbnail": thumb,
                }
            )
            winner = plate_tools.vote(x.reads)
            if winner is not None:
                index = x.reads.index(
                    max((r for r in x.reads if r.text == winner.text), key=lambda r: r.confidence)
                )
                crop = f"plate-{t.track_id:04d}.jpg"
                _write_jpeg(ctx, crop, x.read_crops[index], 92)
                seen_at = x.reads[index].time or 0.0  # set by .at() for every read
                utc, pos = place(seen_at)
                plates_out.append(
                    {
                        "track_id": t.track_id,
                        "text": winner.text,
                        "confidence": round(winner.confidence, 3),
                        "reads": sum(1 for r in x.reads if r.text == winner.text),
                        "time": round(seen_at, 3),
                        "utc": utc,
                        "lat": None if pos is None else round(pos.lat, 7),
                        "lon": None if pos is None else round(pos.lon, 7),
                        "crop": crop,
                    }
                )
        for name in CARRIED:
            if name in ctx.inputs:
                ctx.copy_input(name)
        ctx.write_output("tracks.json", json.dumps({"tracks": tracks_out}, indent=1).encode())
        ctx.write_output("plates.json", json.dumps({"plates": plates_out}, indent=1).encode())
        ctx.set_facts(
            kind="labels",
            tracks=tracks_out,
            plates=plates_out,
            gps_source=gps_source,
            frames_looked_at=looked,
            detector=self.detector.describe(),
            decode=sampler.stats.to_json(),
            problems=problems[:20],
        )
        ctx.log.info(
            "%s: %d frames, %d tracks, %d plates",
            job.source_name,
            looked,
            len(tracks_out),
            len(plates_out),
        )

    # -------------------------------------------------------------------- parts
    def _kept_times(self, ctx: Context, problems: list[str]) -> list[float]:
        """The moments of the frames preprocess kept (``frames.json``, untrusted)."""
        if FRAMES_FILE not in ctx.inputs:
            problems.append("no frames.json from preprocess: the whole clip at window_fps")
            return []
        path = ctx.input_path(FRAMES_FILE)
        if path.stat().st_size > MAX_FRAMES_FILE_BYTES:
            raise PermanentError(f"bad input: {FRAMES_FILE} is over {MAX_FRAMES_FILE_BYTES} bytes")
        try:
            records = json.loads(path.read_bytes())["frames"]
            times = sorted({float(r["time"]) for r in records})
        except (ValueError, KeyError, TypeError) as err:
            raise PermanentError(f"bad input: {FRAMES_FILE} is malformed ({err})") from None
        return [t for t in times if t >= 0 and t == t]  # drop negatives and NaN

    def _batch(
        self,
        batch: list[tuple[float, NDArray[Any]]],
        tracker: Tracker,
        extras: dict[int, _TrackExtras],
    ) -> int:
        s = self._settings
        found = self.detector.detect_batch([img for _, img in batch])
        for (t, rgb), detections in zip(batch, found, strict=True):
            for track_id, d in tracker.update(t, detections):
                x = extras.setdefault(track_id, _TrackExtras())
                if d.score > x.thumb_score:
                    x.thumb, x.thumb_score = _thumbnail(rgb, d), d.score
                width = d.box[2] - d.box[0]
                if (
                    d.label in s.plate_classes
                    and len(x.reads) < s.plate_reads_per_track
                    and not _settled(x.reads, s.plate_settled_reads)
                    and width >= s.plate_min_vehicle_px
                ):
                    self._read_plate(rgb, d, t, x)
        return len(batch)

    def _read_plate(self, rgb: NDArray[Any], d: Detection, t: float, x: _TrackExtras) -> None:
        x1, y1, x2, y2 = d.box
        vehicle = np.ascontiguousarray(rgb[y1:y2, x1:x2, ::-1])  # BGR for OpenCV and OCR
        read = plate_tools.best_plate(vehicle, self.plates, self.ocr)
        if read is None or read.box is None:
            return
        bx1, by1, bx2, by2 = read.box
        x.reads.append(read.at(t))
        x.read_crops.append(np.ascontiguousarray(vehicle[by1:by2, bx1:bx2]))

    def _gps(
        self,
        ingest: clip.IngestFacts,
        video: Path,
        start: datetime | None,
        duration: float,
        problems: list[str],
        ctx: Context,
    ) -> tuple[list[Fix], str | None]:
        """The best track: ingest's (embedded or GPX), else one read from the overlay."""
        fixes = clip.track(ingest, start, duration, problems)
        if fixes:
            source = ingest.gps.get("source")
            return fixes, source if isinstance(source, str) else "ingest"
        s = self._settings
        if not s.overlay.enabled:
            return [], None
        local = clip.local(ingest.time.get("local"))
        zone = ingest.time.get("timezone") or "UTC"
        sampler = FrameSampler(video)
        frames = (
            (sample.time, sample.frame.to_ndarray(format="bgr24"))
            for sample in sampler.sample(every_seconds(duration, s.overlay.fps))
        )

        def read_line(image: NDArray[Any]) -> tuple[str, float] | None:
            r = self.ocr.read_line(image)
            return None if r is None else (r.text, r.confidence)

        found = overlay_track(
            frames, read_line, s.overlay, clip_local_start=local, timezone=str(zone)
        )
        problems.extend(found.problems[:10])
        if not found.fixes:
            return [], None
        fixes = list(found.fixes)
        ctx.write_output(
            "track.gpx", gpstrack.to_gpx(fixes, name=f"{ctx.job.source_name} (overlay)").encode()
        )
        geo = gpstrack.to_geojson(fixes, properties={"video_id": ctx.job.video_id})
        ctx.write_output("track.geojson", json.dumps(geo).encode())
        return fixes, "overlay"


def _settled(reads: list[plate_tools.PlateRead], agreeing: int) -> bool:
    """Whether ``agreeing`` readings of a track already give the same text with a digit: more
    reads would only cost time (the cascade and OCR are most of this stage's work)."""
    texts = [r.text for r in reads if any(c.isdigit() for c in r.text)]
    return any(texts.count(t) >= agreeing for t in set(texts))


def _window(
    kept: list[float], duration: float, seconds: float, fps: float, cap: int
) -> list[float]:
    """The kept moments and a window of ``seconds`` around each at ``fps``, sorted, in the
    clip, at most ``cap`` (the kept moments first)."""
    if not kept:
        return every_seconds(duration, fps)[:cap]
    step = 1.0 / fps
    around: set[float] = set()
    for t in kept:
        k = 1
        while k * step <= seconds:
            around.update((round(t - k * step, 4), round(t + k * step, 4)))
            k += 1
    chosen = {round(t, 4) for t in kept if t < duration}
    extra = sorted(m for m in around - chosen if 0 <= m < duration)
    room = max(0, cap - len(chosen))
    if len(extra) > room:
        extra = [extra[round(i * (len(extra) - 1) / max(1, room - 1))] for i in range(room)]
    return sorted(chosen | set(extra))[:cap]


def _thumbnail(rgb: NDArray[Any], d: Detection) -> NDArray[np.uint8]:
    """The frame, shrunk to :data:`THUMB_WIDTH`, with the box and label drawn (BGR)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, THUMB_WIDTH / w)
    small = cv2.resize(rgb[:, :, ::-1], (round(w * scale), round(h * scale)))
    x1, y1, x2, y2 = (round(v * scale) for v in d.box)
    cv2.rectangle(small, (x1, y1), (x2, y2), (0, 200, 255), 2)
    label = f"{d.label} {d.score:.2f}"
    cv2.putText(
        small,
        label,
        (x1, max(12, y1 - 4)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 200, 255),
        1,
        cv2.LINE_AA,
    )
    return np.ascontiguousarray(small)


def _write_jpeg(ctx: Context, name: str, bgr: NDArray[np.uint8], quality: int) -> None:
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        ctx.write_output(name, data.tobytes())


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
