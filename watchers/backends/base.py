"""The storage interface the spool protocol is written against.

A backend knows nothing of jobs or stages: it moves bytes and names under one root. Paths are
POSIX strings relative to that root (``"ingest/inbox/x-3fa2c1/job.json"``); a backend refuses
absolute paths and ``..``. Every backend must pass ``tests/backend_contract.py``.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from watchers.errors import UnsafePath

Kind = Literal["file", "dir", "link", "other"]


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    size: int
    mtime: float  # seconds since the epoch, as the storage reports it


def clean_rel(rel: str) -> str:
    """Normalise a root-relative path; refuse anything that could leave the root."""
    if rel in ("", "."):
        return ""
    if rel.startswith("/") or "\\" in rel or "\x00" in rel:
        raise UnsafePath(f"path {rel!r} is not relative to the spool root")
    norm = posixpath.normpath(rel)
    if norm == ".." or norm.startswith("../"):
        raise UnsafePath(f"path {rel!r} leaves the spool root")
    return "" if norm == "." else norm


class Notifier(Protocol):
    """Change reports in progress (:meth:`Backend.notify`); ``stop`` ends them."""

    def stop(self) -> None: ...


class Backend(ABC):
    """Files and folders under one root, local or remote."""

    url: str

    @property
    def local_root(self) -> Path | None:
        """The root as a local path when the storage is a local (or mounted) filesystem."""
        return None

    def local_path(self, rel: str) -> Path | None:
        root = self.local_root
        return None if root is None else root / clean_rel(rel)

    @property
    def watchable(self) -> bool:
        """True when inotify on :meth:`local_path` sees every writer (not a network mount)."""
        return False

    @abstractmethod
    def list(self, rel: str) -> list[Entry]:
        """Entries of a folder, unsorted; a missing folder lists as empty; links not followed."""

    @abstractmethod
    def stat(self, rel: str) -> Entry | None:
        """The entry itself (a link is reported as a link), or None when absent."""

    @abstractmethod
    def makedirs(self, rel: str) -> None:
        """Create a folder and its parents; no error if it exists."""

    @abstractmethod
    def read_bytes(self, rel: str, limit: int) -> bytes:
        """A regular file's content (NotFound if absent, UnsafePath for a link, BadJob if larger
        than ``limit`` bytes)."""

    @abstractmethod
    def write_bytes(self, rel: str, data: bytes, *, fsync: bool) -> None:
        """Create or truncate a file with ``data``; with ``fsync`` the data is on disk on return."""

    @abstractmethod
    @contextmanager
    def open_write(self, rel: str, *, fsync: bool) -> Iterator[BinaryIO]:
        """A file to stream into (create or truncate); flushed and fsynced on a clean exit."""

    @abstractmethod
    @contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        """A regular file to stream from (links refused)."""

    @abstractmethod
    def replace(self, src: str, dst: str) -> None:
        """Atomically rename a file over ``dst`` (which may exist): heartbeats, sidecar rewrites."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically and exclusively rename ``src`` to ``dst``: of many concurrent callers with
        the same ``src`` exactly one succeeds; the others get NotFound. AlreadyExists when ``dst``
        exists (never replaced)."""

    @abstractmethod
    def fsync_dir(self, rel: str) -> None:
        """Make the folder's entries (renames into it) durable. A no-op where meaningless."""

    @abstractmethod
    def remove_file(self, rel: str) -> None:
        """Delete a file or link (NotFound if absent)."""

    @abstractmethod
    def remove_dir(self, rel: str) -> None:
        """Delete an empty folder (NotFound if absent)."""

    def remove_tree(self, rel: str) -> None:
        """Delete a folder and everything in it, never following links out of it (a link or a
        file given as the folder: UnsafePath)."""
        top = self.stat(rel)
        if top is not None and top.kind != "dir":
            raise UnsafePath(f"{rel}: not a folder ({top.kind}): not removed as a tree")
        self._remove_tree(rel)

    def _remove_tree(self, rel: str) -> None:
        for entry in self.list(rel):
            child = posixpath.join(rel, entry.name)
            if entry.kind == "dir":
                self._remove_tree(child)
            else:
                self.remove_file(child)
        self.remove_dir(rel)

    def exists(self, rel: str) -> bool:
        return self.stat(rel) is not None

    def notify(self, rels: Sequence[str], wake: Callable[[], None]) -> Notifier | None:
        """Call ``wake`` (from another thread) whenever something changes in one of the folders
        ``rels``, as the storage itself reports it (SMB2 CHANGE_NOTIFY); None when this backend
        has no such reports. Returns once every folder is being watched, so a listing made after
        it misses nothing. A report only means "look again"; the rescan stays the truth."""
        return None

    def disk_usage(self) -> tuple[int, int] | None:
        """Total and free bytes of the storage under the root; None when unknown."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (remote backends)."""
