"""The ledger's side of the archive: which clips are safely archived (migration 0005), and the
record of what retention deleted and what the coordinator alerted about.

A clip counts as archived only with ``archive_sha256`` equal to its own ``sha256``: the archive
stage read the copy back and hashed it. Retention deletes a raw clip on that condition alone,
never on the ``archived`` state (a custom pipeline may call any state that).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Field as Column
from sqlmodel import SQLModel

ARCHIVE_MIGRATION = (
    "0005_archive",
    """
    ALTER TABLE videos ADD COLUMN archive_path TEXT;
    ALTER TABLE videos ADD COLUMN archive_sha256 TEXT;
    ALTER TABLE videos ADD COLUMN archived_at TEXT;
    ALTER TABLE videos ADD COLUMN raw_deleted_at TEXT;
    CREATE INDEX ix_videos_archived_at ON videos (archived_at);
    CREATE TABLE deletions (
        id INTEGER PRIMARY KEY, at TEXT NOT NULL, store TEXT NOT NULL, path TEXT NOT NULL,
        video_id TEXT, reason TEXT NOT NULL, bytes INTEGER
    );
    CREATE INDEX ix_deletions_at ON deletions (at);
    CREATE INDEX ix_deletions_video_id ON deletions (video_id);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY, at TEXT NOT NULL, level TEXT NOT NULL, source TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX ix_alerts_at ON alerts (at)
    """,
)

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# YYYY/MM/DD/<video id>/<file name>: the only shape an archived clip's path may have
ARCHIVE_PATH_RE = re.compile(r"^\d{4}/\d{2}/\d{2}/[0-9a-f]{6,64}/[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class Deletion(SQLModel, table=True):
    """One file or folder retention removed (or, in the CLI's dry run, would remove)."""

    __tablename__ = "deletions"
    id: int | None = Column(default=None, primary_key=True)
    at: str = Column(index=True)
    store: str  # "raw", "archive", "spool"
    path: str  # relative to the store's root
    video_id: str | None = Column(default=None, index=True)
    reason: str
    bytes: int | None = None


class Alert(SQLModel, table=True):
    __tablename__ = "alerts"
    id: int | None = Column(default=None, primary_key=True)
    at: str = Column(index=True)
    level: str  # "warning", "critical"
    source: str  # what raised it: "retention:raw", "retention:archive", "verify", ...
    message: str


class ArchiveFacts(BaseModel):
    """The archive stage's facts (``kind: archived``), as the ledger takes them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: str
    path: str = Field(pattern=ARCHIVE_PATH_RE.pattern)
    sha256: str = Field(pattern=SHA256_RE.pattern)
    verified_at: str = Field(max_length=40)
    readback: bool = False  # the copy was read back from the store and hashed


def parse_archive(raw: Any) -> ArchiveFacts | None:
    """The archive stage's facts of an event (``kind: archived``), or None when they are
    absent or malformed."""
    if not isinstance(raw, dict) or raw.get("kind") != "archived":
        return None
    try:
        return ArchiveFacts.model_validate(raw)
    except ValidationError:
        return None


def apply_archive(video: Any, facts: ArchiveFacts) -> None:
    """Record the verified copy. A hash that is not the clip's own, or a copy that was not read
    back (``readback = false``), is not a verified archive: retention keeps the raw clip."""
    if not facts.readback or (video.sha256 is not None and facts.sha256 != video.sha256):
        return
    video.archive_path = facts.path
    video.archive_sha256 = facts.sha256
    video.archived_at = facts.verified_at
