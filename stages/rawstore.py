"""The raw store: where ingest files clips (``<raw>/YYYY/MM/DD/<original name>``) and dropped
GPX tracks (``<raw>/tracks/YYYY/MM/DD/<name>``), and the content index that recognises a clip
dropped twice under any name.

The index is one small JSON file per content hash, ``<raw>/.index/ab/<sha256>.json``, created
with an exclusive link: of two devices ingesting the same content, exactly one owns it. A file
enters the store by a hard link from the claim folder (same filesystem: no copy, and the claim
keeps its file until the job is complete, so a crash at any point is redone, not lost); into a
remote store (``smb://``) or across filesystems it is copied under a temporary name, synced, and
renamed exclusively into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from watchers.errors import AlreadyExists, BadJob, NotFound, UnsafePath
from watchers.stores import Store

INDEX = ".index"
TRACKS = "tracks"
RANGES = "tracks/.ranges"


@dataclass(frozen=True)
class IndexEntry:
    sha256: str
    raw_path: str  # relative to the raw root
    job: str
    source_path: str


class RawStore:
    """The raw store over a :class:`~watchers.stores.Store`, local or remote. On a local store
    a clip enters by hard link; on a remote one (or across filesystems) by a synced copy under
    a temporary name, then an exclusive rename."""

    def __init__(self, store: Store, *, fsync: bool = True) -> None:
        self.store = store
        self.backend = store.backend
        self.fsync = fsync

    @property
    def where(self) -> str:
        return self.store.url

    def check(self) -> None:
        """Make the root and prove it writable (at start, not in the middle of a job)."""
        self.backend.makedirs("")
        probe = f".write-test-{secrets.token_hex(4)}"
        self.backend.write_bytes(probe, b"", fsync=False)
        self.backend.remove_file(probe)

    # ------------------------------------------------------------------ index
    def owner(self, sha256: str) -> IndexEntry | None:
        try:
            raw = json.loads(self.backend.read_bytes(self._index_path(sha256), 65536))
            entry = IndexEntry(
                sha256=sha256,
                raw_path=self.inside(str(raw["raw_path"])),
                job=str(raw["job"]),
                source_path=str(raw.get("source_path", "")),
            )
        except NotFound:
            return None
        except (ValueError, KeyError, TypeError, BadJob):  # torn, foreign or huge: unowned
            return None
        return entry

    def inside(self, rel: str) -> str:
        """``rel`` if it names a place inside the store (index files are untrusted input)."""
        parts = rel.split("/")
        if rel.startswith("/") or "\x00" in rel or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a path inside the raw store: {rel!r}")
        return rel

    def claim(self, entry: IndexEntry) -> IndexEntry:
        """Record ``entry`` as the owner of its content, unless someone already is: returns
        the owner (``entry`` itself when this call won, or on a retry of the same job)."""
        path = self._index_path(entry.sha256)
        folder = posixpath.dirname(path)
        self.backend.makedirs(folder)
        body = {
            "sha256": entry.sha256,
            "raw_path": entry.raw_path,
            "job": entry.job,
            "source_path": entry.source_path,
        }
        tmp = f"{folder}/.{entry.sha256}.{secrets.token_hex(4)}"
        self.backend.write_bytes(tmp, json.dumps(body, indent=2).encode(), fsync=self.fsync)
        try:
            self._create(tmp, path)  # exclusive: of racing devices exactly one wins
        except AlreadyExists:
            found = self.owner(entry.sha256)
            if found is not None:
                return found
            self.backend.replace(tmp, path)  # a torn entry left by a crash: ours now
        finally:
            with contextlib.suppress(NotFound):
                self.backend.remove_file(tmp)
        self._sync_dir(folder)
        return entry

    def _index_path(self, sha256: str) -> str:
        return f"{INDEX}/{sha256[:2]}/{sha256}.json"

    # ------------------------------------------------------------------ files
    def place_new(self, src: Path, folder: str, name: str, sha256: str) -> tuple[str, bool]:
        """Put ``src`` at ``folder/name``, or at ``folder/<stem>-<hash>.<ext>`` when another
        file already has that name (two cameras, one name). Never replaces anything; a retry
        that finds ``src`` already there is done. Returns where it went, and whether this call
        put it there."""
        stem, dot, ext = name.rpartition(".")
        for rel in (
            f"{folder}/{name}",
            f"{folder}/{stem or ext}-{sha256[:8]}{dot}{ext if stem else ''}",
        ):
            placed = self.place(src, rel)
            if placed:
                return rel, placed == "made"
        raise FileExistsError(f"raw/{folder}/{name} and its alternative name are taken")

    def place(self, src: Path, rel: str) -> Literal["made", "there", ""]:
        """Link ``src`` at ``rel`` (a synced copy when links are impossible: a remote store,
        another filesystem, or one without hard links): "made"; "there" when ``rel`` already
        holds these bytes; "" when it holds another file."""
        rel = self.inside(rel)
        if self.backend.stat(rel) is not None:
            return "there" if self._same(src, rel) else ""
        self.backend.makedirs(posixpath.dirname(rel))
        dst = self.store.local_path(rel)
        if dst is not None:
            try:
                os.link(src, dst)
            except FileExistsError:
                return "there" if _same_file(src, dst) else ""
            except OSError as err:
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
            else:
                self._sync_dir(posixpath.dirname(rel))
                return "made"
        tmp = f"{posixpath.dirname(rel)}/.{posixpath.basename(rel)}.{secrets.token_hex(4)}"
        try:
            self.store.put(src, tmp, fsync=True)
            self._create(tmp, rel)  # exclusive: never over another clip
        except AlreadyExists:
            return "there" if self._same(src, rel) else ""
        finally:
            with contextlib.suppress(NotFound):
                self.backend.remove_file(tmp)
        self._sync_dir(posixpath.dirname(rel))
        return "made"

    def unplace(self, src: Path, rel: str, *, made: bool) -> None:
        """Remove our own file at ``rel`` (lost a race for the content to another device):
        one this job put there, or our own hard link; never a file someone else made."""
        rel = self.inside(rel)
        dst = self.store.local_path(rel)
        if made or (dst is not None and _same_file(src, dst)):
            with contextlib.suppress(NotFound):
                self.backend.remove_file(rel)

    def _create(self, tmp: str, rel: str) -> None:
        """Give the file ``tmp`` the name ``rel`` unless ``rel`` exists (AlreadyExists), so that
        of devices racing for one name exactly one wins, each with a temporary file of its own.
        Locally a hard link (exclusive on every filesystem, NFS included; a rename is only
        where ``RENAME_NOREPLACE`` works), then the temporary name goes; on SMB the rename
        that fails when the target exists."""
        tmp_path, dst = self.store.local_path(tmp), self.store.local_path(rel)
        if tmp_path is None or dst is None:
            self.backend.rename(tmp, rel)
            return
        try:
            os.link(tmp_path, dst)
        except FileExistsError:
            raise AlreadyExists(f"raw/{rel}: already exists") from None
        tmp_path.unlink()

    def _same(self, src: Path, rel: str) -> bool:
        dst = self.store.local_path(rel)
        return (dst is not None and _same_file(src, dst)) or self.store.same_content(src, rel)

    # ----------------------------------------------------------------- tracks
    def add_track_range(self, sha256: str, rel: str, start: datetime, end: datetime) -> None:
        path = f"{RANGES}/{sha256[:16]}.json"
        self.backend.makedirs(RANGES)
        body = {"path": rel, "start": start.isoformat(), "end": end.isoformat()}
        tmp = f"{RANGES}/.{sha256[:16]}.json.{secrets.token_hex(4)}"
        self.backend.write_bytes(tmp, json.dumps(body).encode(), fsync=self.fsync)
        self.backend.replace(tmp, path)
        self._sync_dir(RANGES)

    def tracks_between(self, start: datetime, end: datetime) -> list[str]:
        """Filed GPX tracks (paths in the store) whose time range overlaps ``[start, end]``."""
        out: list[str] = []
        for item in sorted(self.backend.list(RANGES), key=lambda e: e.name):
            if item.kind != "file" or item.name.startswith(".") or not item.name.endswith(".json"):
                continue
            try:
                raw: dict[str, Any] = json.loads(
                    self.backend.read_bytes(f"{RANGES}/{item.name}", 65536)
                )
                t0 = datetime.fromisoformat(raw["start"])
                t1 = datetime.fromisoformat(raw["end"])
                rel = self.inside(str(raw["path"]))
                if t0 <= end and t1 >= start:
                    self.store.resolved(rel)  # a local store: not out through a link
                    out.append(rel)
            except (NotFound, BadJob, UnsafePath, ValueError, KeyError, TypeError):
                continue  # naive times included
        return out

    def local_copy(self, rel: str, folder: Path) -> Path:
        """A local path to read the stored file ``rel`` from (a copy under ``folder`` when
        the store is remote)."""
        return self.store.fetch(self.inside(rel), folder)

    # ---------------------------------------------------------------- helpers
    def _sync_dir(self, folder: str) -> None:
        if self.fsync:
            self.backend.fsync_dir(folder)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
