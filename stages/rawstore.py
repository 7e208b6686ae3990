"""The raw store: where ingest files clips (``<raw>/YYYY/MM/DD/<original name>``) and dropped
GPX tracks (``<raw>/tracks/YYYY/MM/DD/<name>``), and the content index that recognises a clip
dropped twice under any name.

The index is one small JSON file per content hash, ``<raw>/.index/ab/<sha256>.json``, created
with an exclusive link: of two devices ingesting the same content, exactly one owns it. A file
enters the store by a hard link from the claim folder (same filesystem: no copy, and the claim
keeps its file until the job is complete, so a crash at any point is redone, not lost).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from watchers.files import fsync_dir

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
    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync

    def check(self) -> None:
        """Make the root and prove it writable (at start, not in the middle of a job)."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".write-test-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()

    # ------------------------------------------------------------------ index
    def owner(self, sha256: str) -> IndexEntry | None:
        path = self._index_path(sha256)
        try:
            raw = json.loads(path.read_bytes()[:65536])
            entry = IndexEntry(
                sha256=sha256,
                raw_path=self.inside(str(raw["raw_path"])),
                job=str(raw["job"]),
                source_path=str(raw.get("source_path", "")),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # a torn or foreign file: treat as unowned
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
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "sha256": entry.sha256,
            "raw_path": entry.raw_path,
            "job": entry.job,
            "source_path": entry.source_path,
        }
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        self._write(tmp, json.dumps(body, indent=2).encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            found = self.owner(entry.sha256)
            if found is not None:
                return found
            os.replace(tmp, path)  # a torn entry left by a crash: ours now
            tmp = None  # type: ignore[assignment]
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._sync_dir(path.parent)
        return entry

    def _index_path(self, sha256: str) -> Path:
        return self.root / INDEX / sha256[:2] / f"{sha256}.json"

    # ------------------------------------------------------------------ files
    def place_new(self, src: Path, folder: str, name: str, sha256: str) -> str:
        """Put ``src`` at ``folder/name``, or at ``folder/<stem>-<hash>.<ext>`` when another
        file already has that name (two cameras, one name). Never replaces anything; a retry
        that finds ``src`` already there is done. Returns where it went."""
        stem, dot, ext = name.rpartition(".")
        for rel in (
            f"{folder}/{name}",
            f"{folder}/{stem or ext}-{sha256[:8]}{dot}{ext if stem else ''}",
        ):
            if self.place(src, rel):
                return rel
        raise FileExistsError(f"raw/{folder}/{name} and its alternative name are taken")

    def place(self, src: Path, rel: str) -> bool:
        """Link ``src`` at ``rel`` (a synced copy when links are impossible: another
        filesystem, or one without hard links). False when ``rel`` holds another file."""
        dst = self.root / self.inside(rel)
        if dst.exists():
            return _same_file(src, dst) or _same_content(src, dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except FileExistsError:
            return _same_file(src, dst)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}")
            try:
                with open(src, "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 8 << 20)
                    fout.flush()
                    os.fsync(fout.fileno())
                os.link(tmp, dst)  # exclusive: never over another clip
            except FileExistsError:
                return _same_content(src, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        self._sync_dir(dst.parent)
        return True

    def unplace(self, src: Path, rel: str) -> None:
        """Remove our own link at ``rel`` (lost a race for the content to another device)."""
        dst = self.root / self.inside(rel)
        if _same_file(src, dst):
            dst.unlink()

    # ----------------------------------------------------------------- tracks
    def add_track_range(self, sha256: str, rel: str, start: datetime, end: datetime) -> None:
        path = self.root / RANGES / f"{sha256[:16]}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {"path": rel, "start": start.isoformat(), "end": end.isoformat()}
        tmp = path.with_name(f".{path.name}.tmp")
        self._write(tmp, json.dumps(body).encode())
        os.replace(tmp, path)
        self._sync_dir(path.parent)

    def tracks_between(self, start: datetime, end: datetime) -> list[Path]:
        """Filed GPX tracks whose time range overlaps ``[start, end]`` (UTC)."""
        out: list[Path] = []
        folder = self.root / RANGES
        if not folder.is_dir():
            return out
        for item in sorted(folder.glob("*.json")):
            try:
                raw: dict[str, Any] = json.loads(item.read_bytes()[:65536])
                t0 = datetime.fromisoformat(raw["start"])
                t1 = datetime.fromisoformat(raw["end"])
                path = (self.root / self.inside(str(raw["path"]))).resolve()
                if t0 <= end and t1 >= start and self.root.resolve() in path.parents:
                    out.append(path)
            except (OSError, ValueError, KeyError, TypeError):  # naive times included
                continue
        return out

    # ---------------------------------------------------------------- helpers
    def _write(self, path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _sync_dir(self, folder: Path) -> None:
        if not self.fsync:
            return
        fsync_dir(folder)


def _same_content(a: Path, b: Path) -> bool:
    """Byte for byte (a copy made by an earlier attempt across filesystems)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(8 << 20), fb.read(8 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
