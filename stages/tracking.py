"""Objects across frames: a car seen in 40 frames is one track, not 40 detections.

The tracker is Ultralytics' ByteTrack (``ultralytics.trackers.byte_tracker.BYTETracker``), fed
with any backend's :class:`~stages.detectors.Detection` lists through a small adapter, so the
ONNX and LiteRT detectors track exactly as the Ultralytics one does. ByteTrack matches boxes
frame to frame with a Kalman filter and IoU, in two passes (confident detections first, then
weak ones to keep tracks alive through a poor frame), and starts a track only from a confident
detection.

Frames are given in time order with their time; a track keeps every detection that joined it,
so the heavy stage can pick the best frame, vote on its plate, and place it on the map.
Importing this module is cheap; ``ultralytics`` is imported when a :class:`Tracker` is made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from stages.detectors import Detection


class TrackerSettings(BaseModel):
    """ByteTrack's knobs (Ultralytics' ``bytetrack.yaml`` names and defaults), and when a track
    is worth keeping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_score: float = Field(0.25, gt=0, le=1, description="first-pass match threshold")
    low_score: float = Field(0.1, ge=0, le=1, description="second-pass threshold")
    new_track_score: float = Field(0.25, gt=0, le=1, description="a new track needs this")
    lost_frames: int = Field(30, ge=1, description="frames a lost track may come back within")
    match_iou: float = Field(0.8, gt=0, le=1, description="association cost threshold")
    min_detections: int = Field(2, ge=1, description="shorter tracks are dropped as noise")


@dataclass
class Seen:
    """One detection of a track, at a frame's time."""

    time: float  # seconds from the clip's start
    frame: int  # index of the frame in the sequence given to the tracker
    detection: Detection


@dataclass
class Track:
    track_id: int
    label: str
    seen: list[Seen] = field(default_factory=list)

    @property
    def best(self) -> Seen:
        """The most confident sighting (its frame becomes the track's thumbnail)."""
        return max(self.seen, key=lambda s: s.detection.score)

    @property
    def first(self) -> float:
        return self.seen[0].time

    @property
    def last(self) -> float:
        return self.seen[-1].time


class _Boxes:
    """What ByteTrack reads from Ultralytics' ``Boxes``: ``conf``, ``cls``, ``xywh`` (centre x,
    centre y, width, height) and boolean indexing."""

    def __init__(self, conf: NDArray[Any], cls: NDArray[Any], xywh: NDArray[Any]) -> None:
        self.conf, self.cls, self.xywh = conf, cls, xywh

    @classmethod
    def of(cls, detections: Sequence[Detection]) -> _Boxes:
        boxes = np.array([d.box for d in detections], dtype=np.float32).reshape(-1, 4)
        xywh = np.stack(
            [
                (boxes[:, 0] + boxes[:, 2]) / 2,
                (boxes[:, 1] + boxes[:, 3]) / 2,
                boxes[:, 2] - boxes[:, 0],
                boxes[:, 3] - boxes[:, 1],
            ],
            axis=1,
        )
        conf = np.array([d.score for d in detections], dtype=np.float32)
        return cls(conf, np.array([d.class_id for d in detections], dtype=np.float32), xywh)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index: Any) -> _Boxes:
        return _Boxes(self.conf[index], self.cls[index], self.xywh[index])


class Tracker:
    """Feed :meth:`update` the detections of each frame in time order; read :meth:`tracks`."""

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        s = settings or TrackerSettings()
        os.environ.setdefault("YOLO_OFFLINE", "1")  # no network probe on import
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.settings = s
        self._tracker = BYTETracker(  # type: ignore[no-untyped-call]
            SimpleNamespace(
                track_high_thresh=s.high_score,
                track_low_thresh=s.low_score,
                new_track_thresh=s.new_track_score,
                track_buffer=s.lost_frames,
                match_thresh=s.match_iou,
                fuse_score=True,
            )
        )
        self._tracks: dict[int, Track] = {}
        self._frame = -1

    def update(self, time: float, detections: Sequence[Detection]) -> list[tuple[int, Detection]]:
        """Add one frame's detections; returns (track id, detection) for those that joined or
        started a track in this frame."""
        self._frame += 1
        out = self._tracker.update(_Boxes.of(detections))
        joined = []
        for row in np.asarray(out).reshape(-1, 8):
            track_id, index = int(row[4]), int(row[7])
            if not 0 <= index < len(detections):
                continue
            d = detections[index]
            track = self._tracks.setdefault(track_id, Track(track_id, d.label))
            track.seen.append(Seen(time, self._frame, d))
            joined.append((track_id, d))
        return joined

    def tracks(self) -> list[Track]:
        """Tracks with at least ``min_detections`` sightings, in order of first appearance;
        a track's label is the one most of its detections carry."""
        out = []
        for t in self._tracks.values():
            if len(t.seen) < self.settings.min_detections:
                continue
            labels = [s.detection.label for s in t.seen]
            t.label = max(set(labels), key=labels.count)
            out.append(t)
        return sorted(out, key=lambda t: (t.first, t.track_id))
