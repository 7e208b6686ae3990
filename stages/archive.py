"""``archive`` (shed NAS): the clip's verified copy and everything known about it, in one folder.

``<archive>/YYYY/MM/DD/<video id>/`` (the camera's local date) holds:

* the clip, byte for byte, under its file name. It is streamed to a temporary name, synced,
  and read back from the store. Both the bytes sent and the bytes read back must hash to the
  clip's identity (its sha256 from ingest, which begins with the video id). A mismatch is a
  transient error: the runtime retries, defers, and after ``retry.max_attempts`` fails the job.
  It is never reported as archived.
* ``meta.json``: everything the pipeline learned (see :func:`_meta`).
* ``track.gpx`` / ``track.geojson`` when the clip has a GPS track (embedded, a GPX, the overlay).
* ``poster.jpg``: one frame, from the best-scored object track when heavy found one.
* ``thumbs/``: heavy's annotated thumbnails and plate crops.
* ``preview.mp4``: an H.264 copy of at most ``preview.max_height`` lines, faststart, for
  clips a browser cannot play (HEVC, above 1080p), per ``preview.mode``.

A new entry is built in ``.<video id>.partial-<device>/`` beside its final place and renamed in
whole, so a browsing person never sees half an entry. Archiving an archived clip (a retry, a
repair) reads the copy back: when it verifies, only the small files are refreshed; when it
does not, the bad copy is moved aside as ``<name>.corrupt-<time>`` (never deleted) and the clip
is copied again.
"""

from __future__ import annotations

import contextlib
import json
import math
import posixpath
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field

from stages import clip
from stages import preview as media
from stages.gps import track as gpstrack
from stages.probe import probe_video
from watchers.errors import AlreadyExists, BadJob, NotFound, PermanentError, TransientError
from watchers.files import fsync_file
from watchers.sidecar import Sidecar
from watchers.stage import Context, Stage
from watchers.stores import Store

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
THUMB_RE = re.compile(r"^(track|plate)-\d{4,6}\.jpg$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TRACK_FILES = ("track.gpx", "track.geojson")
META_SCHEMA = 1
GPX_MAX_BYTES = 64 << 20
META_MAX_BYTES = 16 << 20


class PreviewSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["auto", "always", "never"] = "auto"
    max_height: int = Field(720, ge=144, le=2160)
    crf: int = Field(23, ge=0, le=51)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = (
        "veryfast"
    )


class ArchiveSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    readback: bool = True
    fsync: bool = True
    poster_max_side_px: int = Field(1280, ge=64)
    poster_quality: int = Field(85, ge=10, le=100)
    threads: int = Field(0, ge=0)
    preview: PreviewSettings = PreviewSettings()


class ArchiveStage(Stage):
    type_name = "archive"
    Settings = ArchiveSettings

    @property
    def _settings(self) -> ArchiveSettings:
        assert isinstance(self.settings, ArchiveSettings)
        return self.settings

    def process(self, job: Sidecar, ctx: Context) -> None:
        if "video" not in ctx.refs:
            raise PermanentError("archive needs the clip: the job has no refs.video")
        video = ctx.resolve_ref("video")
        if not video.is_file():
            # a raw store that is not mounted looks the same as a deleted clip: let the
            # runtime retry and defer, and fail only after max_attempts
            raise TransientError(f"the clip {ctx.refs['video']} is not there (raw store away?)")
        problems: list[str] = []
        found = _facts_of_kind(job.facts)
        sha256 = _identity(job, found.get("video", {}))
        ingest = clip.IngestFacts.find(job.facts, problems)
        name = video.name if NAME_RE.match(video.name) else f"clip{_safe_suffix(video)}"
        day = clip.local(ingest.time.get("local")) or clip.utc(ingest.time.get("utc_start"))
        day = day or job.created_at
        folder = f"{day.year:04d}/{day.month:02d}/{day.day:02d}/{job.video_id}"
        store = ctx.store("archive")
        b = store.backend
        final = folder
        info = probe_video(video)

        there = b.stat(final)
        if there is not None and there.kind == "dir":
            self._repair_clip(store, video, f"{final}/{name}", sha256, ctx)
            target = final
        else:
            target = f"{posixpath.dirname(final)}/.{job.video_id}.partial-{ctx.device}"
            left = b.stat(target)
            if left is not None and left.kind == "dir":
                b.remove_tree(target)  # our own half-built entry from a crash or a failed try
            elif left is not None:
                b.remove_file(target)  # not ours to follow: a link or a file in its place
            b.makedirs(target)
        try:
            if target != final:
                self._copy_verified(store, video, f"{target}/{name}", sha256)
            files = self._extras(job, ctx, store, target, video, info, found, problems)
            track = _track_summary(store, target, ctx, ingest, found.get("labels", {}), problems)
            meta = _meta(job, ctx, name, sha256, video, ingest, found, files, track, problems)
            if target == final:
                meta = _keep_known(meta, store, f"{target}/meta.json")
            body = json.dumps(meta, indent=1).encode()
            _put_atomic(store, f"{target}/meta.json", body, self._fsync)
            if self._fsync:
                b.fsync_dir(target)
        except BaseException:
            if target != final:  # our own half-built entry: nothing in it is anyone's yet
                with contextlib.suppress(Exception):
                    b.remove_tree(target)
            raise
        if target != final:
            try:
                b.rename(target, final)
            except (AlreadyExists, PermissionError):
                there = b.stat(final)
                if there is None or there.kind != "dir":
                    raise
                # another device finished the same entry first: check theirs, drop ours
                self._repair_clip(store, video, f"{final}/{name}", sha256, ctx)
                with contextlib.suppress(Exception):
                    b.remove_tree(target)
            if self._fsync:
                b.fsync_dir(posixpath.dirname(final))

        rel = f"{folder}/{name}"
        ctx.set_ref("archive", "archive", rel)
        ctx.set_facts(
            kind="archived",
            path=rel,
            sha256=sha256,
            size_bytes=store.file_size(rel),
            verified_at=_iso(datetime.now(timezone.utc)),
            readback=self._settings.readback,
            files=sorted(files),
            preview=meta.get("preview"),
            problems=problems[:20],
        )
        ctx.log.info("%s archived as %s", job.source_name, rel)

    # ---------------------------------------------------------------- the clip
    @property
    def _fsync(self) -> bool:
        return self._settings.fsync

    def _copy_verified(self, store: Store, src: Path, dst: str, sha256: str) -> None:
        """Stream ``src`` to ``dst`` (through a temporary name), hashing what was read; read
        the copy back and hash it too. Both must be ``sha256``."""
        tmp = _partial(dst)
        sent = store.put(src, tmp, fsync=self._fsync)
        if sent != sha256:
            _remove(store, tmp)
            raise TransientError(
                f"the raw clip {src.name} does not hash to its identity "
                f"(read {sent[:12]}…, expected {sha256[:12]}…): the raw store copy is damaged"
            )
        if self._settings.readback:
            back = store.sha256(tmp, uncached=True)
            if back != sha256:
                _remove(store, tmp)
                raise TransientError(
                    f"the archive copy of {src.name} reads back wrong "
                    f"({back[:12]}…, expected {sha256[:12]}…): the write was damaged"
                )
        store.backend.replace(tmp, dst)

    def _repair_clip(self, store: Store, src: Path, dst: str, sha256: str, ctx: Context) -> None:
        """An entry exists already: keep its clip when it verifies, else set it aside (never
        deleted) and copy again."""
        if store.file_size(dst) is not None:
            if store.sha256(dst, uncached=True) == sha256:
                return
            aside = f"{dst}.corrupt-{ctx.now:%Y%m%dT%H%M%S}"
            store.backend.replace(dst, aside)
            ctx.log.warning(
                "the archived copy %s did not verify: kept as %s", dst, posixpath.basename(aside)
            )
        self._copy_verified(store, src, dst, sha256)
        if self._fsync:
            store.backend.fsync_dir(posixpath.dirname(dst))

    # ---------------------------------------------------------------- the rest
    def _extras(
        self,
        job: Sidecar,
        ctx: Context,
        store: Store,
        target: str,
        video: Path,
        info: Any,
        found: dict[str, dict[str, Any]],
        problems: list[str],
    ) -> dict[str, Any]:
        """Track files, thumbnails, the poster and the preview; returns name → description."""
        s = self._settings
        files: dict[str, Any] = {}
        for name in ctx.inputs:
            if name in TRACK_FILES:
                out = name
            elif THUMB_RE.match(name):
                store.backend.makedirs(f"{target}/thumbs")
                out = f"thumbs/{name}"
            else:
                continue  # tracks.json, plates.json, frames: their content is in meta.json
            with ctx.open_input(name) as src:
                data = src.read(GPX_MAX_BYTES + 1)[:GPX_MAX_BYTES]
            _put_atomic(store, f"{target}/{out}", data, self._fsync)
            files[out] = "copied"

        at = _poster_time(found.get("labels", {}), info.duration_seconds)
        try:
            bgr = media.poster(video, at, max_side=s.poster_max_side_px)
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, s.poster_quality])
            if ok:
                _put_atomic(store, f"{target}/poster.jpg", jpeg.tobytes(), self._fsync)
                files["poster.jpg"] = f"frame at {at:.2f} s"
        except PermanentError as err:
            problems.append(f"poster: {err}")

        p = s.preview
        wanted = p.mode == "always" or (
            p.mode == "auto"
            and media.needs_preview(info.codec, info.height, max_height=p.max_height)
        )
        done = f"{target}/preview.mp4"
        have = store.file_size(done) is not None
        if wanted and not have:
            tmp = _partial(done)
            # made in place on a local store; in scratch, then sent, on a remote one
            out_path = store.local_path(tmp) or ctx.scratch / "preview.mp4"
            try:
                made = media.make_preview(
                    video,
                    out_path,
                    max_height=p.max_height,
                    crf=p.crf,
                    preset=p.preset,
                    threads=s.threads,
                )
            except PermanentError as err:  # a clip cut short by a power loss: keep the clip
                out_path.unlink(missing_ok=True)
                problems.append(str(err))
            else:
                if store.local_root is None:
                    store.put(out_path, tmp, fsync=self._fsync)
                    out_path.unlink(missing_ok=True)
                elif self._fsync:
                    fsync_file(out_path)
                store.backend.replace(tmp, done)
                files["preview.mp4"] = f"H.264 {made.width}x{made.height}, {made.frames} frames"
        elif have:
            files["preview.mp4"] = "kept"
        return files


# --------------------------------------------------------------------------- meta.json
def _facts_of_kind(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each earlier stage's facts by their ``kind`` (video, screening, labels), whatever the
    stages are called. They came from other machines: only their shape is trusted."""
    out: dict[str, dict[str, Any]] = {}
    for value in facts.values():
        if isinstance(value, dict) and isinstance(value.get("kind"), str):
            out[value["kind"]] = value
    return out


def _identity(job: Sidecar, video_facts: dict[str, Any]) -> str:
    sha = video_facts.get("sha256")
    if not isinstance(sha, str) or not SHA256_RE.match(sha):
        raise PermanentError("cannot verify a copy: the job has no content hash from ingest")
    if not sha.startswith(job.video_id):
        raise PermanentError(
            f"the content hash {sha[:12]}… is not video {job.video_id}'s: the sidecar is wrong"
        )
    return sha


def _poster_time(labels: dict[str, Any], duration: float | None) -> float:
    """The best-scored object track's best frame, else the middle of the clip."""
    best: tuple[float, float] | None = None
    tracks = labels.get("tracks")
    for t in tracks if isinstance(tracks, list) else []:
        if not isinstance(t, dict):
            continue
        score, when = t.get("score"), t.get("best_time")
        if not (isinstance(score, int | float) and isinstance(when, int | float)):
            continue
        if not (math.isfinite(score) and math.isfinite(when) and when >= 0):
            continue
        if best is None or score > best[0]:
            best = (float(score), float(when))
    if best is not None:
        return min(best[1], duration) if duration else best[1]
    return (duration or 0.0) / 2


def _track_summary(
    store: Store,
    target: str,
    ctx: Context,
    ingest: clip.IngestFacts,
    labels: dict[str, Any],
    problems: list[str],
) -> dict[str, Any] | None:
    """Points, times, length and bounding box of the clip's track (``track.gpx``)."""
    rel = f"{target}/track.gpx"
    fixes: list[Any] = []
    if store.file_size(rel) is not None:
        try:
            gpx = store.fetch(rel, ctx.scratch / "entry")
            fixes = list(gpstrack.read_gpx(gpx, max_bytes=GPX_MAX_BYTES))
        except ValueError as err:
            problems.append(f"track.gpx: {err}")
    if not fixes:
        return None
    lats = [f.lat for f in fixes]
    lons = [f.lon for f in fixes]
    return {
        "source": labels.get("gps_source") or ingest.gps.get("source"),
        "points": len(fixes),
        "start": _iso(fixes[0].time),
        "end": _iso(fixes[-1].time),
        "distance_m": round(gpstrack.length_m(fixes), 1),
        "bbox": [
            round(min(lons), 7),
            round(min(lats), 7),
            round(max(lons), 7),
            round(max(lats), 7),
        ],
    }


def _meta(
    job: Sidecar,
    ctx: Context,
    name: str,
    sha256: str,
    video: Path,
    ingest: clip.IngestFacts,
    found: dict[str, dict[str, Any]],
    files: dict[str, Any],
    track: Any,
    problems: list[str],
) -> dict[str, Any]:
    """meta.json: the clip's identity, camera, times, route through the pipeline, track
    summary, object tracks and plates. Written by this code (never copied from a sidecar)."""
    video_facts, screening, labels = (found.get(k, {}) for k in ("video", "screening", "labels"))
    preview = files.get("preview.mp4")
    return {
        "schema": META_SCHEMA,
        "video_id": job.video_id,
        "sha256": sha256,
        "size_bytes": video.stat().st_size,
        "file": name,
        "source_name": job.source_name,
        "source_path": video_facts.get("source_path") or job.source_path,
        "recorded_at": job.recorded_at,
        "camera": ingest.camera,
        "media": ingest.media,
        "time": ingest.time,
        "route": {
            "stages": [
                {
                    "stage": h.stage,
                    "device": h.device,
                    "finished_at": _iso(h.finished_at),
                    "seconds": round(h.duration_seconds, 3),
                    "route": h.route,
                }
                for h in job.history
            ],
            "heavy_skipped": screening.get("heavy_skipped"),
            "frames_sampled": screening.get("frames_sampled"),
            "frames_kept": screening.get("frames_kept"),
        },
        "track": track,
        "objects": labels.get("tracks") if isinstance(labels.get("tracks"), list) else [],
        "plates": labels.get("plates") if isinstance(labels.get("plates"), list) else [],
        "files": files,
        "preview": preview,
        "archived_by": ctx.device,
        "archived_at": _iso(ctx.now),
        "problems": problems[:20],
    }


def _keep_known(meta: dict[str, Any], store: Store, old_rel: str) -> dict[str, Any]:
    """A rerun whose job knows less than the entry (a repair rebuilt from the ledger after
    heavy's outputs aged out of the spool) keeps the entry's objects, plates and track."""
    try:
        old = json.loads(store.backend.read_bytes(old_rel, META_MAX_BYTES))
    except (OSError, ValueError, NotFound, BadJob):
        return meta
    if not isinstance(old, dict) or (old.get("video_id"), old.get("sha256")) != (
        meta["video_id"],
        meta["sha256"],
    ):
        return meta
    out = dict(meta)
    for key in ("objects", "plates", "track"):
        if not out.get(key) and old.get(key):
            out[key] = old[key]
    return out


# --------------------------------------------------------------------------- files
def _partial(rel: str) -> str:
    """A temporary name beside ``rel`` (hidden, unique)."""
    return f"{posixpath.dirname(rel)}/.{posixpath.basename(rel)}.partial-{secrets.token_hex(4)}"


def _remove(store: Store, rel: str) -> None:
    with contextlib.suppress(NotFound):
        store.backend.remove_file(rel)


def _put_atomic(store: Store, rel: str, data: bytes, fsync: bool) -> None:
    tmp = _partial(rel)
    try:
        store.backend.write_bytes(tmp, data, fsync=fsync)
        store.backend.replace(tmp, rel)
    except BaseException:
        _remove(store, tmp)
        raise


def _safe_suffix(path: Path) -> str:
    suffix = path.suffix
    return suffix if re.match(r"^\.[A-Za-z0-9]{1,8}$", suffix) else ".mp4"


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
