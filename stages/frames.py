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
import itertools
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

MAX_GOP_PACKETS = 1200  # a GOP held longer than this (40 s at 30 fps) is decoded as it comes
MAX_GOP_BYTES = 256 << 20

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

    packets: int = 0  # video packets read (the rest of the clip is not read once all is served)
    decoded: int = 0  # packets sent to the decoder
    gops: int = 0
    gops_skipped: int = 0  # no moment in them: never decoded
    gops_keyframe_only: int = 0  # served by their keyframe alone
    leading_dropped: int = 0  # packets before the first keyframe: nothing to decode them from
    streamed_from: int | None = None  # packet from which every frame was decoded (no plan)
    unserved: int = 0  # moments no frame was found for (past the end, or frames lost)
    untimed: int = 0  # frames decoded without a timestamp (raw streams): never served
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "packets": self.packets,
            "decoded": self.decoded,
            "gops": self.gops,
            "gops_skipped": self.gops_skipped,
            "gops_keyframe_only": self.gops_keyframe_only,
            "leading_dropped": self.leading_dropped,
            "streamed_from": self.streamed_from,
            "unserved": self.unserved,
            "untimed": self.untimed,
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

    def rest(self) -> Iterator[float]:
        while (t := self.peek()) is not None:
            self._front.popleft()
            yield t


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
            self._streaming = False  # no plan possible: decode all, serve by the frames' times
            self._previous_whole = False  # the previous GOP was decoded to its last packet
            gop: list[Packet] = []
            held = 0  # bytes in ``gop``
            seen_key = False
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                self.stats.packets += 1
                if self._streaming:
                    yield from self._decode(packet)
                elif packet.is_keyframe and gop and not seen_key:
                    self.stats.leading_dropped += len(gop)  # no reference to decode them from
                    gop, held = [], 0
                elif packet.is_keyframe and gop:
                    yield from self._gop(gop, packet.pts)
                    gop, held = [], 0
                if self._moments.peek() is None:
                    break  # every moment is served or in the decoder: the rest is not needed
                if self._streaming:
                    continue
                seen_key = seen_key or bool(packet.is_keyframe)
                gop.append(packet)
                held += packet.size
                if packet.pts is None or len(gop) > MAX_GOP_PACKETS or held > MAX_GOP_BYTES:
                    self._stream_from(gop)  # no timestamps, or no keyframe in sight
                    yield from self._stream_gop(gop)
                    gop, held = [], 0
            else:
                if gop and not self._streaming:
                    yield from self._gop(gop, None)
            yield from self._decode(None)
            left = itertools.islice(self._moments.rest(), 1_000_000)
            self.stats.unserved = len(self._wanted) + sum(1 for _ in left)

    # ---------------------------------------------------------------- one GOP
    def _gop(self, gop: list[Packet], next_key: int | None) -> Iterator[Sample]:
        self.stats.gops += 1
        key = gop[0]
        if self._origin is None:
            self._origin = key.pts
        # Leading pictures of an open GOP (shown before the keyframe, decoded after it) need the
        # previous GOP's frames: they are served only when that GOP was decoded to its end.
        whole, self._previous_whole = self._previous_whole, False
        lowest = None if whole or key.pts is None else key.pts
        pts = sorted(
            p.pts for p in gop if p.pts is not None and (lowest is None or p.pts >= lowest)
        )
        if next_key is not None:
            end = self._time(next_key)
        else:  # the last GOP: up to one frame past its last frame
            end = self._time(pts[-1]) + (self._time(pts[-1]) - self._time(pts[0])) / len(pts)
        moments = self._moments.take_before(end)
        if not moments:
            self.stats.gops_skipped += 1
            return
        if self.snap and key.pts is not None and next_key is not None:
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
        self._previous_whole = last == len(gop) - 1
        for packet in gop[: last + 1]:
            yield from self._decode(packet)

    def _stream_from(self, gop: list[Packet]) -> None:
        why = "packets without timestamps" if gop[-1].pts is None else "no keyframe in sight"
        log.info("%s: %s: decoding every frame from here on", self.path.name, why)
        self.stats.streamed_from = self.stats.packets - len(gop)
        self._streaming = True

    def _stream_gop(self, gop: list[Packet]) -> Iterator[Sample]:
        for packet in gop:
            yield from self._decode(packet)

    # ---------------------------------------------------------------- decoding
    def _decode(self, packet: Packet | None) -> Iterator[Sample]:
        for frame in self._frames(packet):
            if frame.pts is None:
                self.stats.untimed += 1
                continue
            if self._origin is None:
                self._origin = frame.pts
            wanted = self._wanted.pop(frame.pts, None)
            if wanted is not None:
                yield Sample(self._time(frame.pts), wanted[0], wanted[1], frame)
            elif self._streaming:  # the first frame at or after each moment, by its own time
                t = self._time(frame.pts)
                served = self._moments.take_before(t + 1e-6)
                if served:
                    yield Sample(t, served[0], bool(frame.key_frame), frame)

    def _frames(self, packet: Packet | None) -> list[av.video.VideoFrame]:
        if packet is not None:
            self.stats.decoded += 1
        try:
            return [f for f in self._codec.decode(packet) if isinstance(f, av.video.VideoFrame)]
        except av.error.FFmpegError as err:  # a damaged frame costs that frame, not the clip
            pts = None if packet is None else packet.pts
            where = "flush" if pts is None else f"{self._time(pts):.3f}s"
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


def read_ahead(source: Generator[T, None, None], depth: int = 4) -> Generator[T, None, None]:
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
