"""policies.toml → typed, frozen settings that reject unknown keys.

Every error names the file and the dotted key, e.g.
``policies.toml: spool.rescan_secs: unknown key (did you mean one of: rescan_seconds, ...)``.
Relative paths are resolved against the folder of the policies file, or the current directory
when there is no file (the embedded default: everything under ``.``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watchers.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_CONFIG = "DASHSPOOL_CONFIG"
ENV_SPOOL = "DASHSPOOL_SPOOL"
DEFAULT_CONFIG_NAME = "policies.toml"
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _store_location(value: str) -> str:
    """A folder, or a URL of a storage scheme the backends know (checked again when opened),
    never with a password in it (the message does not repeat the value)."""
    if "://" not in value:
        return value
    if value.split("://", 1)[0] not in ("file", "smb"):
        raise ValueError(f"{value.split('://', 1)[0]!r} is not a storage scheme (file, smb)")
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None  # a malformed URL: the backend says what is wrong when it opens it
    if password is not None:
        raise ValueError(
            "the URL must not contain a password: put it in DASHSPOOL_SMB_PASSWORD or in a "
            "credentials file named by DASHSPOOL_SMB_CREDENTIALS (docs/smb.md)"
        )
    return value


class SpoolSettings(Strict):
    path: str = "spool"
    rescan_seconds: float = Field(10.0, gt=0)
    settle_seconds: float = Field(5.0, ge=0)
    prune_empty_after_seconds: float = Field(60.0, ge=0)
    heartbeat_seconds: float = Field(10.0, gt=0)
    lease_seconds: float = Field(120.0, gt=0)
    offline_after_seconds: float = Field(3600.0, gt=0)
    fsync: bool = True
    ignore_patterns: tuple[str, ...] = (".*", "*.part", "*.tmp", "*.crdownload", "*~")
    max_sidecar_kb: int = Field(1024, gt=0)

    _where = field_validator("path")(_store_location)


class RetrySettings(Strict):
    in_process_attempts: int = Field(3, ge=1)
    in_process_initial_seconds: float = Field(0.5, ge=0)
    in_process_max_seconds: float = Field(10.0, ge=0)
    defer_initial_seconds: float = Field(60.0, ge=0)
    defer_max_seconds: float = Field(3600.0, ge=0)
    max_attempts: int = Field(5, ge=1)


def _local_folder(value: str) -> str:
    if "://" in value:
        raise ValueError(
            "must be a local or mounted folder (the spool and the stores may be smb:// URLs, "
            "not this): mount the share and give its path"
        )
    return value


class StoreSettings(Strict):
    # a local or mounted folder (relative: to policies.toml's folder), or smb://user@host/share/path
    raw: str = "raw"
    archive: str = "archive"

    _where = field_validator("raw", "archive")(_store_location)


class LedgerSettings(Strict):
    path: str = "dashspool.db"
    busy_timeout_seconds: float = Field(30.0, gt=0)
    ingest_batch: int = Field(500, ge=1)
    trip_gap_seconds: float = Field(300.0, gt=0)
    moment_window_seconds: float = Field(2.0, ge=0)


class CoordinatorSettings(Strict):
    device_id: str = "coordinator"
    ingest_interval_seconds: float = Field(1.0, gt=0)
    reaper_interval_seconds: float = Field(30.0, gt=0)
    deferred_interval_seconds: float = Field(15.0, gt=0)


class RetentionSettings(Strict):
    interval_seconds: float = Field(3600.0, gt=0)
    raw_days: float = Field(90.0, gt=0)
    done_days: dict[str, float] = {"ingest": 30.0, "preprocess": 30.0, "heavy": 7.0}
    done_days_default: float = Field(30.0, gt=0)
    delete_locked: bool = False
    raw_min_free_percent: float = Field(10.0, ge=0, lt=100)
    archive_min_free_percent: float = Field(5.0, ge=0, lt=100)
    max_sweep_fraction: float = Field(0.5, gt=0, le=1)

    @field_validator("done_days")
    @classmethod
    def _days(cls, v: dict[str, float]) -> dict[str, float]:
        for stage, days in v.items():
            if days <= 0:
                raise ValueError(f"done_days.{stage}: must be more than 0")
        return v


class BackupSettings(Strict):
    dir: str = "backups"
    _local = field_validator("dir")(_local_folder)
    time_utc: str = Field("02:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    keep_days: float = Field(30.0, gt=0)


class WebSettings(Strict):
    """``[web]``: ``dashspool web`` (the token is never a setting: see docs/web.md)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # map tiles, e.g. "https://tiles.example/{z}/{x}/{y}.png"; empty: the track on a blank map
    tile_url: str = Field("", pattern=r"^(https?://[^\s\"'<>]+)?$")
    tile_attribution: str = Field("", max_length=200)
    page_size: int = Field(100, ge=1, le=1000)
    # server processes: more than one uses more cores under load (each opens the ledger read-only)
    workers: int = Field(1, ge=1, le=64)


class HealthSettings(Strict):
    """``[health]``: what ``dashspool health`` calls a problem (the owner's alert thresholds;
    monitoring/rules/dashspool.rules.yml holds the same numbers for Prometheus)."""

    # warning: more jobs than this waiting in one stage's inbox
    max_pending_jobs: int = Field(10, ge=0)
    # critical: a job waiting in an inbox for longer than this
    max_pending_age_seconds: float = Field(86400.0, gt=0)
    # warning: a device (not stopped cleanly) with no heartbeat for longer than this
    device_silent_seconds: float = Field(3600.0, gt=0)
    # warning: the indoor NAS (the spool, the raw store) with less free space than this
    spool_min_free_percent: float = Field(10.0, ge=0, lt=100)
    raw_min_free_percent: float = Field(10.0, ge=0, lt=100)
    # critical: the archive NAS with less free space than this
    archive_min_free_percent: float = Field(5.0, ge=0, lt=100)
    # warning: an event file waiting in ledger/inbox/ for longer than this (coordinator down?)
    ledger_max_lag_seconds: float = Field(3600.0, gt=0)


class PipelineSettings(Strict):
    entry: str = "ingest"


class StageTable(BaseModel):
    """One ``[stages.NAME]`` table: ``type``, ``next`` and the stage type's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str | None = None
    next: tuple[str, ...] = ()
    terminal_state: str = "done"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _default_stages() -> dict[str, StageTable]:
    chain = ["ingest", "preprocess", "heavy", "archive"]
    nexts: dict[str, tuple[str, ...]] = {
        "ingest": ("preprocess",),
        "preprocess": ("heavy", "archive"),
        "heavy": ("archive",),
        "archive": (),
    }
    own: dict[str, dict[str, Any]] = {  # the stage types' settings, as policies.toml shows them
        "ingest": {
            "type": "ingest",
            "timezone": "UTC",
            "gpx_clock_offset_seconds": 0,
            "max_speed_kmh": 300,
            "gpx_max_mb": 64,
        },
        "preprocess": {
            "type": "preprocess",
            "sample_by": "time",
            "fps": 1,
            "every_m": 10,
            "stopped_below_kmh": 3,
            "position_max_gap_seconds": 5,
            "snap_to_keyframes": True,
            "decode_threads": 0,
            "motion_width_px": 160,
            "pixel_threshold": 25,
            "motion_threshold": 0.02,
            "duplicate_distance": 4,
            "classes": ["person", "bicycle", "car", "motorcycle", "bus", "truck"],
            "max_frames": 120,
            "jpeg_quality": 90,
            "jpeg_max_side_px": 0,
            "heavy_stage": "heavy",
            "skip_stage": "archive",
            "detector": {"type": "none"},
        },
        "archive": {
            "type": "archive",
            "terminal_state": "archived",
            "readback": True,
            "fsync": True,
            "poster_max_side_px": 1280,
            "poster_quality": 85,
            "threads": 0,
            "preview": {"mode": "auto", "max_height": 720, "crf": 23, "preset": "veryfast"},
        },
    }
    return {
        name: StageTable.model_validate({"type": "copy", **own.get(name, {}), "next": nexts[name]})
        for name in chain
    }


class Policies(Strict):
    spool: SpoolSettings = SpoolSettings()
    retry: RetrySettings = RetrySettings()
    stores: StoreSettings = StoreSettings()
    ledger: LedgerSettings = LedgerSettings()
    coordinator: CoordinatorSettings = CoordinatorSettings()
    retention: RetentionSettings = RetentionSettings()
    backup: BackupSettings = BackupSettings()
    health: HealthSettings = HealthSettings()
    web: WebSettings = WebSettings()
    pipeline: PipelineSettings = PipelineSettings()
    stages: dict[str, StageTable] = Field(default_factory=_default_stages)

    # where relative paths are resolved, and where the settings came from (None: defaults)
    base_dir: Path = Path(".")
    source: Path | None = None

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, stages: dict[str, StageTable]) -> dict[str, StageTable]:
        for name in stages:
            if not NAME_RE.match(name):
                raise ValueError(f"stage name {name!r} must match {NAME_RE.pattern}")
        return stages

    def path(self, value: str) -> Path:
        """A configured filesystem path, relative ones against :attr:`base_dir`."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def spool_url(self) -> str:
        return self.spool.path if "://" in self.spool.path else str(self.path(self.spool.path))

    @property
    def ledger_path(self) -> Path:
        return self.path(self.ledger.path)

    @property
    def label(self) -> str:
        return str(self.source) if self.source else "built-in defaults"

    def check_pipeline(self) -> None:
        """Cross-field checks: the entry exists, ``next`` names existing stages, no cycles."""
        where = self.label
        if self.pipeline.entry not in self.stages:
            raise ConfigError(f"{where}: pipeline.entry: no stage named {self.pipeline.entry!r}")
        for name, table in self.stages.items():
            for nxt in table.next:
                if nxt not in self.stages:
                    raise ConfigError(f"{where}: stages.{name}.next: no stage named {nxt!r}")
        seen: set[str] = set()
        stack: list[tuple[str, tuple[str, ...]]] = [(self.pipeline.entry, (self.pipeline.entry,))]
        while stack:
            name, path = stack.pop()
            seen.add(name)
            for nxt in self.stages[name].next:
                if nxt in path:
                    cycle = " -> ".join((*path, nxt))
                    raise ConfigError(f"{where}: stages: the pipeline loops ({cycle})")
                stack.append((nxt, (*path, nxt)))
        unreachable = sorted(set(self.stages) - seen)
        if unreachable:
            raise ConfigError(
                f"{where}: stages.{unreachable[0]}: not reachable from pipeline.entry "
                f"{self.pipeline.entry!r}"
            )

    def order(self) -> list[str]:
        """Stages in pipeline order (breadth-first from the entry)."""
        out: list[str] = []
        queue = [self.pipeline.entry]
        while queue:
            name = queue.pop(0)
            if name not in out:
                out.append(name)
                queue.extend(self.stages[name].next)
        return out


def _format_validation(where: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def parse(data: dict[str, Any], *, source: Path | None, base_dir: Path) -> Policies:
    where = str(source) if source else "built-in defaults"
    for forbidden in ("base_dir", "source"):
        if forbidden in data:
            raise ConfigError(f"{where}: {forbidden}: unknown key")
    try:
        policies = Policies.model_validate({**data, "base_dir": base_dir, "source": source})
    except ValidationError as err:
        raise ConfigError(_format_validation(where, err)) from None
    policies.check_pipeline()
    return policies


def load(config: str | os.PathLike[str] | None = None, spool: str | None = None) -> Policies:
    """Load settings: ``config`` argument, else ``$DASHSPOOL_CONFIG``, else ``./policies.toml`` if
    present, else the built-in defaults. ``spool`` (or ``$DASHSPOOL_SPOOL``) overrides
    ``spool.path``."""
    chosen = config or os.environ.get(ENV_CONFIG)
    path: Path | None
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: no such settings file")
    else:
        candidate = Path.cwd() / DEFAULT_CONFIG_NAME
        path = candidate if candidate.is_file() else None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    spool_override = spool or os.environ.get(ENV_SPOOL)
    if spool_override:
        data.setdefault("spool", {})
        if not isinstance(data["spool"], dict):
            raise ConfigError(f"{path}: spool: must be a table")
        if "://" not in spool_override:  # a command-line path is relative to where it was typed
            spool_override = str(Path(spool_override).expanduser().absolute())
        data["spool"] = {**data["spool"], "path": spool_override}
    base = path.resolve().parent if path else Path.cwd()
    return parse(data, source=path, base_dir=base)
