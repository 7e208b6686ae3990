"""``ingest`` (indoor NAS): a dropped file becomes a known clip in the raw store.

One pass per clip: the sha256 of the content (the video id is its first 16 hex digits), a
PyAV check that it is a whole, real video, the camera's file name (time, channel, mode), the
embedded GPS track (Novatek freeGPS, GoPro GPMF, phone ISO 6709) or an external GPX, then a
hard link into ``<raw>/YYYY/MM/DD/<name>``. The job handed on references the clip (``refs.video``)
and carries the track as facts and as ``track.gpx`` / ``track.geojson``.

A GPX dropped on its own is filed under ``<raw>/tracks/`` and ends here (ledger state
``track``); clips without GPS whose time falls inside it take their points from it.

Bad input is refused with one sentence (:class:`Rejected` → ``inbox/rejected/``); content seen
before (:class:`Duplicate` → ``inbox/duplicates/``) is never processed twice.
"""

from __future__ import annotations

import json
import posixpath
import zoneinfo
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stages import names
from stages.gps import Fix, read_track
from stages.gps import track as gpstrack
from stages.probe import VideoInfo, probe_video
from stages.rawstore import TRACKS, IndexEntry, RawStore
from watchers import stores
from watchers.config import Policies
from watchers.errors import (
    ConfigError,
    DashspoolError,
    Duplicate,
    NotFound,
    Rejected,
    StorageUnavailable,
    UnsafePath,
)
from watchers.files import sha256_file
from watchers.sidecar import Sidecar
from watchers.stage import Context, Stage

VIDEO_ID_HEX = 16
GPX_SUFFIX = ".gpx"


class IngestSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = Field("UTC", description="the cameras' clock zone (IANA name)")
    gpx_clock_offset_seconds: float = Field(
        0.0, description="camera clock minus GPS time, for matching clips to a dropped GPX"
    )
    max_speed_kmh: float = Field(300.0, gt=0, description="faster jumps are GPS glitches")
    gpx_max_mb: int = Field(64, gt=0, description="larger GPX files are refused")


class IngestStage(Stage):
    type_name = "ingest"
    Settings = IngestSettings
    companion_suffixes = (GPX_SUFFIX,)

    def setup(self, policies: Policies) -> None:
        s = self._settings
        try:
            self.zone = zoneinfo.ZoneInfo(s.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "Europe": a folder
            raise ConfigError(
                f"{policies.label}: stages.{self.name}.timezone: unknown time zone "
                f"{s.timezone!r} (use an IANA name such as 'Europe/London')"
            ) from None
        self.raw = RawStore(stores.open_store(policies, stores.RAW), fsync=policies.spool.fsync)
        try:
            self.raw.check()
        except (OSError, DashspoolError) as err:
            if isinstance(err, StorageUnavailable):
                raise  # the NAS is away: the watcher waits for it
            why = err.strerror if isinstance(err, OSError) and err.strerror else err
            raise ConfigError(
                f"{policies.label}: stores.raw: cannot write to {self.raw.where}: {why}"
            ) from None

    def drop_priority(self, path: str) -> int:
        return names.priority_of(names.parse_clip_name(path))

    @property
    def _settings(self) -> IngestSettings:
        assert isinstance(self.settings, IngestSettings)
        return self.settings

    # -------------------------------------------------------------------- job
    def process(self, job: Sidecar, ctx: Context) -> None:
        clips = [n for n in ctx.inputs if not n.lower().endswith(GPX_SUFFIX)]
        gpx = [n for n in ctx.inputs if n.lower().endswith(GPX_SUFFIX)]
        if not clips:
            self._file_track(job, ctx, gpx[0])
            return
        name = clips[0]
        path = ctx.input_path(name)
        size = path.stat().st_size
        if size == 0:
            raise Rejected("empty: the file has zero bytes")
        info = probe_video(path)
        sha = sha256_file(path)
        self._refuse_seen(job, sha)
        clip = names.parse_clip_name(job.source_path or job.source_name)
        times = self._times(clip, info, path)
        track = read_track(path)
        fixes, problems = gpstrack.clean(track.fixes, max_speed_kmh=self._settings.max_speed_kmh)
        source = track.source if fixes else None
        problems = [*track.problems, *problems]
        if fixes:  # satellite time beats any camera clock (GoPro writes local time as UTC)
            times["utc_start"], times["source"] = fixes[0].time, "gps"
        if not fixes:
            fixes, source = self._external_fixes(ctx, gpx, times, info, problems)
        if info.duration_seconds:
            times["utc_end"] = times["utc_start"] + timedelta(seconds=info.duration_seconds)
        local: datetime = times["local"]

        raw_rel = self._file(job, name, path, sha, f"{local:%Y/%m/%d}", job.source_name)
        ctx.consume_input(name)
        ctx.set_ref("video", "raw", raw_rel)
        ctx.update(
            video_id=sha[:VIDEO_ID_HEX],
            recorded_at=local.isoformat(timespec="seconds"),
            priority=names.priority_of(clip),
        )
        if fixes:
            label = f"{job.source_name} ({source})"
            ctx.write_output("track.gpx", gpstrack.to_gpx(fixes, name=label).encode())
            geo = gpstrack.to_geojson(fixes, properties={"video_id": sha[:VIDEO_ID_HEX]})
            ctx.write_output("track.geojson", json.dumps(geo).encode())
        ctx.set_facts(
            kind="video",
            sha256=sha,
            size_bytes=size,
            source_path=job.source_path or job.source_name,
            raw_path=raw_rel,
            camera=_camera(clip),
            media=_media(info),
            time={k: _iso(v) for k, v in times.items()},
            gps={
                "source": source,
                "points": len(fixes),
                "problems": problems[:20],
                "track": [f.to_json() for f in fixes],
            },
        )

    def _times(self, clip: names.ClipName | None, info: VideoInfo, path: Path) -> dict[str, Any]:
        """``local``: camera-local time from the name, else the container's UTC creation time
        or the file's mtime shown in the cameras' zone. ``utc_start``: the container's creation
        time (Viofo writes the clip start in UTC), else the name's time through the zone, else
        the mtime; an embedded GPS track later takes precedence over all of them. Local and
        UTC are kept side by side and never compared with each other."""
        mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        out: dict[str, Any] = {"timezone": self._settings.timezone, "utc_end": None}
        if clip is not None:
            out["local"], out["local_source"] = clip.local_time, "name"
        else:
            when = info.creation_time or mtime
            out["local"] = when.astimezone(self.zone).replace(tzinfo=None)
            out["local_source"] = "container" if info.creation_time else "mtime"
        if info.creation_time is not None:
            out["utc_start"], out["source"] = info.creation_time, "container"
        elif clip is not None:
            out["utc_start"] = names.local_to_utc(clip.local_time, self._settings.timezone)
            out["source"] = "name"
        else:
            out["utc_start"], out["source"] = mtime, "mtime"
        return out

    def _external_fixes(
        self,
        ctx: Context,
        gpx: list[str],
        times: dict[str, Any],
        info: VideoInfo,
        problems: list[str],
    ) -> tuple[tuple[Fix, ...], str | None]:
        """No embedded GPS: the clip's own GPX (viofosync's ``<name>.MP4.gpx``), else the part
        of a dropped trip GPX that covers the clip's time (corrected by the clock offset)."""
        limit = self._settings.gpx_max_mb << 20
        for name in gpx:
            try:
                fixes = gpstrack.read_gpx(ctx.input_path(name), max_bytes=limit)
            except ValueError as err:
                problems.append(f"{name}: {err}")
                continue
            cleaned, more = gpstrack.clean(fixes, max_speed_kmh=self._settings.max_speed_kmh)
            problems.extend(more)
            if cleaned:
                return cleaned, "gpx"
        start: datetime = times["utc_start"]
        offset = timedelta(seconds=self._settings.gpx_clock_offset_seconds)
        lo = start - offset - timedelta(seconds=1)
        hi = start - offset + timedelta(seconds=(info.duration_seconds or 60.0) + 1)
        for rel in self.raw.tracks_between(lo, hi):
            try:
                path = self.raw.local_copy(rel, ctx.scratch / "tracks")
                fixes = gpstrack.read_gpx(path, max_bytes=limit)
            except (ValueError, OSError, NotFound, UnsafePath) as err:
                problems.append(f"{posixpath.basename(rel)}: {err}")
                continue
            inside = tuple(f for f in fixes if lo <= f.time <= hi)
            cleaned, _ = gpstrack.clean(inside, max_speed_kmh=self._settings.max_speed_kmh)
            if cleaned:
                times["utc_start"], times["source"] = lo + timedelta(seconds=1), "gpx-offset"
                return cleaned, f"gpx:{path.name}"
        return (), None

    def _file(self, job: Sidecar, name: str, path: Path, sha: str, folder: str, base: str) -> str:
        """Own the content in the index (or raise Duplicate), then link it into the store."""
        if "/" in base or base.startswith(".") or not base:
            base = name
        owner = self.raw.owner(sha)
        if owner is not None:  # a retry of ours (else _refuse_seen raises Duplicate)
            self._refuse_seen(job, sha, owner)
            if self.raw.place(path, owner.raw_path):
                return owner.raw_path
        # link first (exclusive, the name that is free), then own the content under that name
        rel, made = self.raw.place_new(path, folder, base, sha)
        owner = self.raw.claim(IndexEntry(sha, rel, job.job, job.source_path or job.source_name))
        if owner.job != job.job:  # another device filed the same content meanwhile
            if owner.raw_path != rel:  # never the file the winner's index entry names
                self.raw.unplace(path, rel, made=made)
            self._refuse_seen(job, sha, owner)
        return rel

    def _refuse_seen(self, job: Sidecar, sha: str, owner: IndexEntry | None = None) -> None:
        """Raise Duplicate when another job owns this content (checked early to save work,
        and again, race-free, when the index entry is created)."""
        owner = owner or self.raw.owner(sha)
        if owner is not None and owner.job != job.job:
            raise Duplicate(
                f"duplicate: the same content was dropped before as {owner.source_path!r} "
                f"and is filed as raw/{owner.raw_path}"
            )

    def _file_track(self, job: Sidecar, ctx: Context, name: str) -> None:
        """A GPX dropped on its own: check it, file it, remember its time range."""
        path = ctx.input_path(name)
        try:
            fixes = gpstrack.read_gpx(path, max_bytes=self._settings.gpx_max_mb << 20)
        except ValueError as err:
            raise Rejected(str(err)) from None
        fixes, problems = gpstrack.clean(fixes, max_speed_kmh=self._settings.max_speed_kmh)
        if not fixes:
            raise Rejected("not a usable GPS track: the GPX file has no points with times")
        sha = sha256_file(path)
        self._refuse_seen(job, sha)
        first, last = fixes[0].time, fixes[-1].time
        rel = self._file(job, name, path, sha, f"{TRACKS}/{first:%Y/%m/%d}", job.source_name)
        self.raw.add_track_range(sha, rel, first, last)
        ctx.consume_input(name)
        ctx.update(video_id=sha[:VIDEO_ID_HEX])
        ctx.set_facts(
            kind="track",
            sha256=sha,
            size_bytes=path.stat().st_size,
            source_path=job.source_path or job.source_name,
            raw_path=rel,
            time={"utc_start": _iso(first), "utc_end": _iso(last)},
            gps={"source": "gpx", "points": len(fixes), "problems": problems[:20]},
        )
        ctx.end_here("track")


def _camera(clip: names.ClipName | None) -> dict[str, Any]:
    if clip is None:
        return {"family": None, "channel": None, "mode": "normal", "locked": False}
    return {
        "family": clip.family,
        "channel": clip.channel,
        "mode": clip.mode,
        "locked": clip.locked,
        "sequence": clip.sequence,
    }


def _media(info: VideoInfo) -> dict[str, Any]:
    return {
        "duration_seconds": info.duration_seconds,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "codec": info.codec,
        "frames": info.frames,
        "has_audio": info.has_audio,
        "container_utc": _iso(info.creation_time),
    }


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return value.isoformat(timespec="seconds")
    return value
