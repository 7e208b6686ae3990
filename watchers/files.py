"""Local file helpers shared by the runtime and the stages: a streamed sha256 and fsync of a file
or a folder. One copy of each, so the hash that identifies a clip at ingest is the same code that
verifies it at archive, retention and verify."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

HASH_CHUNK = 4 << 20


def sha256_file(path: Path, *, uncached: bool = False) -> str:
    """The file's sha256, streamed in large chunks. ``uncached``: drop its cached pages first
    (after a sync they are clean), so a local disk is really read again (a read-back check)."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(AttributeError, OSError):  # hints; not every OS has them
            if uncached:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
    finally:
        os.close(fd)
    return h.hexdigest()


def fsync_file(path: Path) -> None:
    """Make a file's data durable (a link is refused, never followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (files created or renamed into it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
