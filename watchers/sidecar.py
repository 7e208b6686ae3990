"""The job sidecar (``job.json``) and the ledger event: frozen, versioned, strict.

Both cross machine boundaries, so both are decoded as untrusted input: size-limited by the caller,
unknown schema versions refused with a sentence that says what to do, unknown keys refused.
New fields must get defaults so that older files still load.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watchers.errors import BadJob, SchemaVersionError

SIDECAR_VERSION = 1
EVENT_VERSION = 1

JOB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}-[0-9a-f]{6}$")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REF_RE = re.compile(r"^(?P<root>[a-z][a-z0-9_]*):(?P<path>[^\x00]+)$")
TIME_PREFIX_RE = re.compile(r"^\d{4}_\d{4}_\d{6}")


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HistoryEntry(Frozen):
    stage: str
    device: str
    finished_at: datetime
    duration_seconds: float
    route: str | None = None


class Sidecar(Frozen):
    """What a job carries from stage to stage: paths and facts, never file contents."""

    schema_version: int = SIDECAR_VERSION
    job: str
    video_id: str = Field(pattern=r"^[0-9a-f]{6,64}$")
    source_name: str = Field(max_length=1024)
    source_path: str | None = Field(None, max_length=4096)  # where it was dropped, in the inbox
    stage: str
    priority: int = 0
    created_at: datetime
    recorded_at: str | None = None  # camera-local time, never mixed with UTC
    attempts: int = Field(0, ge=0)
    not_before: datetime | None = None
    last_error: str | None = None
    files: tuple[str, ...] = ()  # payload files inside the job folder
    refs: dict[str, str] = {}  # named paths into configured roots, "root:relative/path"
    facts: dict[str, Any] = {}  # per-stage results, keyed by stage name
    history: tuple[HistoryEntry, ...] = ()

    @field_validator("job")
    @classmethod
    def _job(cls, v: str) -> str:
        if not JOB_NAME_RE.match(v):
            raise ValueError("not a dashspool job name")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not FILE_NAME_RE.match(name) or name == "job.json":
                raise ValueError(f"payload name {name!r} is not a plain file name")
        return v

    @field_validator("refs")
    @classmethod
    def _refs(cls, v: dict[str, str]) -> dict[str, str]:
        for key, ref in v.items():
            if not REF_RE.match(ref):
                raise ValueError(f"ref {key!r} is not 'root:relative/path'")
        return v

    def encode(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> Sidecar:
        return _decode(cls, data, where, SIDECAR_VERSION, "sidecar")


class EventKind(str, Enum):
    VIDEO_NEW = "video.new"
    STAGE_STARTED = "stage.started"
    STAGE_COMPLETED = "stage.completed"
    STAGE_SKIPPED = "stage.skipped"
    STAGE_DEFERRED = "stage.deferred"
    STAGE_FAILED = "stage.failed"
    JOB_RECOVERED = "job.recovered"
    JOB_REQUEUED = "job.requeued"
    DROP_REJECTED = "drop.rejected"
    DROP_DUPLICATE = "drop.duplicate"


class Event(Frozen):
    """One progress fact for the ledger, written by any device, ingested once by id."""

    schema_version: int = EVENT_VERSION
    event_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    kind: EventKind
    at: datetime
    device: str
    stage: str | None = None
    job: str | None = None
    video_id: str | None = None
    attempt: int = 0
    data: dict[str, Any] = {}

    def encode(self) -> bytes:
        return self.model_dump_json().encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> Event:
        return _decode(cls, data, where, EVENT_VERSION, "event")

    @staticmethod
    def stable_id(*parts: object) -> str:
        """An event id that a retry of the same transition reproduces (idempotent ingestion)."""
        return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]

    @staticmethod
    def random_id() -> str:
        return uuid.uuid4().hex


M = TypeVar("M", bound=BaseModel)


def _decode(model: type[M], data: bytes, where: str, version: int, what: str) -> M:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadJob(f"{where}: malformed {what}: not JSON ({err})") from None
    if not isinstance(raw, dict):
        raise BadJob(f"{where}: malformed {what}: expected a JSON object")
    found = raw.get("schema_version")
    if not isinstance(found, int) or isinstance(found, bool):
        raise BadJob(f"{where}: malformed {what}: no integer schema_version")
    if found > version or found < 1:
        raise SchemaVersionError(
            f"{where}: {what} schema version {found} is not understood by this dashspool "
            f"(it reads versions 1 to {version}); upgrade dashspool on this device"
        )
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
        raise BadJob(f"{where}: malformed {what}: {key}: {msg}{more}") from None


def safe_component(name: str, limit: int = 80) -> str:
    """A file-name component anyone can type: letters, digits, ``._-``; never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:limit].rstrip("._-") or "clip"


def job_name(stem: str, when: datetime | None, video_id: str) -> str:
    """``<recording time>_<original name>-<6 hex>``; a camera name that already starts with its
    time (``2024_0101_123456_000120F``) is not prefixed twice."""
    safe = safe_component(stem)
    if not TIME_PREFIX_RE.match(safe) and when is not None:
        safe = f"{when.strftime('%Y_%m%d_%H%M%S')}_{safe}"
    return f"{safe[:110]}-{video_id[:6]}"
