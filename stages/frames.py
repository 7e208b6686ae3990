"""Frames at chosen moments of a clip, decoding as little of it as possible (PyAV).

The caller asks for moments (seconds from the first frame, in increasing order: every 1/fps, or
every few metres along the GPS track) and gets back, for each, the first frame shown at or after
it, stamped with the container's own timestamp, never a frame count.

Decoding is the cost, so the clip is handled a GOP at a time (a keyframe and the frames that
depend on it; demuxing is nearly free):

- a GOP with no moment in it is never sent to the decoder;
- a GOP with moments is decoded only up to the last frame it needs (in decode order, so every
  reference a frame needs has been decoded before it);
- with ``snap_to_keyframes``, when the moments are no denser than the keyframes (one moment
  per keyframe interval, or fewer), each moment takes the nearest keyframe instead and only
  keyframes are decoded: at 1 fps on a clip with a keyframe every second, that is 1 frame in 30.
  The frame's real time is reported either way.

Packets without timestamps (some raw streams) fall back to decoding every frame.

:func:`read_ahead` runs the decoding in a thread of its own, a few frames ahead of the caller,
so that decoding (which leaves part of the CPU idle between frames) overlaps with what the
caller does with each frame (motion, detector, JPEG).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import av
import av.error
import av.packet
import av.video

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Packet = av.packet.Packet[Any]  # generic in the stubs only


@dataclass(frozen=True)
class Sample:
    """One chosen frame."""

    time: float  # seconds since the clip's first frame, from the container's timestamps
    target: float  # the moment it was chosen for
    keyframe: bool
    frame: av.VideoFrame


@dataclass
class DecodeStats:
    """How much of the clip was touched, for the sidecar and the benchmark."""

    packets: int = 0  # video packets in the clip
    decoded: int = 0  # packets sent to the decoder
    gops: int = 0
    gops_skipped: int = 0  # no moment in them: never decoded
    gops_keyframe_only: int = 0  # served by their keyframe alone
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "decoded": self.decoded,
            "gops": self.gops,
            "gops_skipped": self.gops_skipped,
            "gops_keyframe_only": self.gops_keyframe_only,
            "errors": self.errors[:10],
        }


def every_seconds(duration: float, fps: float) -> list[float]:
    """Moments ``0, 1/fps, 2/fps …`` up to (not including) ``duration``."""
    if fps <= 0:
        raise ValueError(f"frames per second must be positive, not {fps!r}")
    return [i / fps for i in range(max(1, math.ceil(duration * fps)))]


class _Moments:
    """The moments still to serve: increasing, with the ones a GOP hands on pushed back."""

    def __init__(self, moments: Iterable[float]) -> None:
        self._iter = iter(moments)
        self._front: deque[float] = deque()
        self._last = -math.inf

    def peek(self) -> float | None:
        if not self._front:
            nxt = next(self._iter, None)
            if nxt is None:
                return None
            if nxt < self._last:
                raise ValueError(f"moments must increase: {nxt} after {self._last}")
            self._last = nxt
            self._front.append(nxt)
        return self._front[0]

    def take_before(self, end: float) -> list[float]:
        out = []
        while (t := self.peek()) is not None and t < end:
            out.append(self._front.popleft())
        return out

    def give_back(self, moments: list[float]) -> None:
        self._front.extendleft(reversed(moments))


class FrameSampler:
    """Decode the frames for ``moments`` from the first video stream of ``path``."""

    def __init__(self, path: Path, *, snap_to_keyframes: bool = True, threads: int = 0) -> None:
        self.path = path
        self.snap = snap_to_keyframes
        self.threads = threads
        self.stats = DecodeStats()

    def sample(self, moments: Iterable[float]) -> Generator[Sample, None, None]:
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = self.threads
            self._codec = stream.codec_context
            self._tb: Fraction = stream.time_base or Fraction(1, 90_000)
            self._origin: int | None = stream.start_time
            self._wanted: dict[int, tuple[float, bool]] = {}  # pts → (moment, keyframe)
            self._moments = _Moments(moments)
            gop: list[Packet] = []
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                self.stats.packets += 1
                if packet.is_keyframe and gop:
                    yield from self._gop(gop, packet.pts)
                    gop = []
                    if self._moments.peek() is None and not self._wanted:
                        return  # every moment served: the rest of the clip is not needed
                gop.append(packet)
            if gop:
                yield from self._gop(gop, None)
            yield from self._decode(None)

    # ---------------------------------------------------------------- one GOP
    def _gop(self, gop: list[Packet], next_key: int | None) -> Iterator[Sample]:
        self.stats.gops += 1
        if self._origin is None:
            self._origin = gop[0].pts
        if any(p.pts is None for p in gop) or self._origin is None:
            yield from self._gop_untimed(gop)
            return
        pts = sorted(p.pts for p in gop if p.pts is not None)
        if next_key is not None:
            end = self._time(next_key)
        else:  # the last GOP: up to one frame past its last frame
            end = self._time(pts[-1]) + (self._time(pts[-1]) - self._time(pts[0])) / len(pts)
        moments = self._moments.take_before(end)
        if not moments:
            self.stats.gops_skipped += 1
            return
        key = gop[0] if gop[0].is_keyframe else None
        if self.snap and key is not None and key.pts is not None and next_key is not None:
            here = self._time(key.pts)
            to_here = [t for t in moments if t - here <= end - t]
            to_next = [t for t in moments if t - here > end - t]
            if len(to_here) <= 1 and len(to_next) <= 1:
                self._moments.give_back(to_next)  # the next keyframe is nearer: its GOP serves it
                if not to_here:
                    self.stats.gops_skipped += 1
                    return
                self.stats.gops_keyframe_only += 1
                self._wanted[key.pts] = (to_here[0], True)
                yield from self._decode(key)
                return
        chosen: dict[int, float] = {}
        carried = []
        for t in moments:
            i = bisect.bisect_left(pts, self._pts(t))
            if i == len(pts):
                carried.append(t)  # after this GOP's last frame: the next keyframe serves it
            elif pts[i] not in chosen:
                chosen[pts[i]] = t
        self._moments.give_back(carried)
        if not chosen:
            self.stats.gops_skipped += 1
            return
        for p in gop:
            if p.pts in chosen:
                self._wanted[p.pts] = (chosen[p.pts], bool(p.is_keyframe))
        last = max(i for i, p in enumerate(gop) if p.pts in chosen)
        for packet in gop[: last + 1]:
            yield from self._decode(packet)

    def _gop_untimed(self, gop: list[Packet]) -> Iterator[Sample]:
        """No timestamps to plan with: decode it all and keep the first frame at or after
        each moment, by the frames' own times."""
        for packet in [*gop, None]:
            for frame in self._frames(packet):
                if frame.pts is None:
                    continue
                if self._origin is None:
                    self._origin = frame.pts
                t = self._time(frame.pts)
                served = self._moments.take_before(t + 1e-9)
                if served:
                    yield Sample(t, served[0], bool(frame.key_frame), frame)

    # ---------------------------------------------------------------- decoding
    def _decode(self, packet: Packet | None) -> Iterator[Sample]:
        for frame in self._frames(packet):
            if frame.pts is None:
                continue
            wanted = self._wanted.pop(frame.pts, None)
            if wanted is not None:
                yield Sample(self._time(frame.pts), wanted[0], wanted[1], frame)

    def _frames(self, packet: Packet | None) -> list[av.video.VideoFrame]:
        if packet is not None:
            self.stats.decoded += 1
        try:
            return [f for f in self._codec.decode(packet) if isinstance(f, av.video.VideoFrame)]
        except av.error.FFmpegError as err:  # a damaged frame costs that frame, not the clip
            where = (
                "flush"
                if packet is None or packet.pts is None
                else f"{self._time(packet.pts):.3f}s"
            )
            self.stats.errors.append(f"{where}: {err}")
            log.debug("%s: decode error at %s: %s", self.path.name, where, err)
            return []

    def _time(self, pts: int) -> float:
        return float((pts - (self._origin or 0)) * self._tb)

    def _pts(self, seconds: float) -> int:
        """The smallest pts whose time is at or after ``seconds`` (up to rounding)."""
        return (self._origin or 0) + math.ceil(seconds / self._tb - 1e-6)


T = TypeVar("T")
_END = object()


def read_ahead(source: Generator[T, None, None], depth: int = 4) -> Iterator[T]:
    """Items of ``source``, produced by a background thread at most ``depth`` ahead. An
    exception in ``source`` is raised here, at the point it was reached; stopping early (an
    exception in the caller, a ``break``) stops and closes ``source``."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which raises it
            put(_Failed(err))
        finally:
            source.close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a producer waiting to put
                ready.get(timeout=0.05)
        thread.join()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error
