"""The stores of ``[stores]`` (``raw``, ``archive``) as places that keep files: a backend each,
picked like the spool's, so a store is a local or mounted folder or an ``smb://`` URL.

The raw store, the archive stage, retention and verify are written against :class:`Store`; a
local store keeps its fast paths (hard links, paths handed straight to FFmpeg, uncached
read-back), a remote one streams. Relative paths that come from sidecars or the ledger are
untrusted: :meth:`Store.checked` refuses anything that could leave the store, and on a local
store :meth:`Store.local_path` also refuses a path that leaves it through a symbolic link.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import secrets
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from watchers.backends import Backend, open_backend
from watchers.backends.base import clean_rel
from watchers.errors import NotFound, UnsafePath
from watchers.files import HASH_CHUNK, sha256_file

if TYPE_CHECKING:
    from watchers.config import Policies

RAW, ARCHIVE = "raw", "archive"


class Store:
    """One store: a name (``raw``, ``archive``) and the backend that holds its files."""

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self.backend = backend

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self.url!r})"

    @property
    def url(self) -> str:
        """Where the store is, as shown to people (an SMB URL never carries a password)."""
        return self.backend.url

    @property
    def local_root(self) -> Path | None:
        return self.backend.local_root

    # ------------------------------------------------------------------ paths
    def checked(self, rel: str, *, hidden: bool = True) -> str:
        """``rel`` normalised, if it is a plain relative path inside the store; UnsafePath if
        not. ``hidden=False`` also refuses names starting with a dot (the raw store's index,
        half-built archive entries), for paths read from the ledger."""
        parts = rel.split("/")
        if not rel or "\x00" in rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            raise UnsafePath(f"{self.name}:{rel!r} is not a plain path inside the store")
        if not hidden and any(p.startswith(".") for p in parts):
            raise UnsafePath(f"{self.name}:{rel!r} names a hidden entry")
        return clean_rel(rel)

    def local_path(self, rel: str) -> Path | None:
        """The local path of ``rel`` (links on the way resolved, and required to stay inside
        the store; the last name is not followed), or None for a remote store."""
        return self._inside(rel, last=False)

    def resolved(self, rel: str) -> Path | None:
        """The local file ``rel`` names with every link resolved, the last one included, and
        required to stay inside the store: a path to read from. None for a remote store."""
        return self._inside(rel, last=True)

    def _inside(self, rel: str, *, last: bool) -> Path | None:
        root = self.local_root
        if root is None:
            return None
        real_root = root.resolve()
        path = real_root / self.checked(rel)
        real = path.resolve() if last else path.parent.resolve()
        if real != real_root and real_root not in real.parents:
            raise UnsafePath(f"{self.name}:{rel} resolves outside {real_root} (symbolic link?)")
        return real if last else real / path.name

    # ------------------------------------------------------------------ files
    def file_size(self, rel: str) -> int | None:
        """The size of a regular file at ``rel`` (a link is not one); None when there is none."""
        local = self.local_path(rel)
        if local is not None:
            try:
                st = os.lstat(local)
            except OSError:
                return None
            return st.st_size if stat.S_ISREG(st.st_mode) else None
        entry = self.backend.stat(self.checked(rel))
        return entry.size if entry is not None and entry.kind == "file" else None

    def sha256(self, rel: str, *, uncached: bool = False) -> str:
        """The file's sha256 read from the store (``uncached``: past a local page cache)."""
        local = self.resolved(rel)
        if local is not None:
            return sha256_file(local, uncached=uncached)
        h = hashlib.sha256()
        with self.backend.open_read(self.checked(rel)) as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def fetch(self, rel: str, folder: Path) -> Path:
        """A local path to read ``rel`` from: the file itself on a local store, else a copy
        under ``folder``, with the file's own name (kept: a second call reuses it)."""
        local = self.resolved(rel)
        if local is not None:
            return local
        rel = self.checked(rel)
        # under its own name, in a folder per path: two files of one name never meet
        dst = folder / hashlib.sha256(rel.encode()).hexdigest()[:16] / posixpath.basename(rel)
        if dst.is_file():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.parent / f".{dst.name}.{secrets.token_hex(4)}"
        try:
            with self.backend.open_read(rel) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, HASH_CHUNK)
            os.replace(tmp, dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return dst

    def put(self, src: Path, rel: str, *, fsync: bool) -> str:
        """Stream the local file ``src`` to ``rel`` (create or truncate), hashing what was read;
        returns that sha256."""
        h = hashlib.sha256()
        with open(src, "rb") as fin, self.backend.open_write(rel, fsync=fsync) as out:
            while chunk := fin.read(HASH_CHUNK):
                h.update(chunk)
                out.write(chunk)
        return h.hexdigest()

    def same_content(self, src: Path, rel: str) -> bool:
        """``rel`` holds exactly the bytes of the local file ``src``."""
        try:
            size = src.stat().st_size
            if self.file_size(rel) != size:
                return False
            with open(src, "rb") as fa, self.backend.open_read(self.checked(rel)) as fb:
                while True:
                    x, y = fa.read(HASH_CHUNK), fb.read(HASH_CHUNK)
                    if x != y:
                        return False
                    if not x:
                        return True
        except (OSError, NotFound, UnsafePath):
            return False

    def space(self) -> tuple[int, int] | None:
        """Total and free bytes where the store is; None when unknown (or not made yet)."""
        return self.backend.disk_usage()


def location(policies: Policies, name: str) -> str:
    """Where store ``name`` is: its URL, or its folder made absolute against policies.toml's."""
    value: str = getattr(policies.stores, name)
    return value if "://" in value else str(policies.path(value))


def open_store(policies: Policies, name: str) -> Store:
    return Store(name, open_backend(location(policies, name)))


def open_stores(policies: Policies) -> dict[str, Store]:
    return {name: open_store(policies, name) for name in (RAW, ARCHIVE)}
