"""The local filesystem backend (also a mounted share: then inotify is not trusted, see
:attr:`LocalBackend.watchable`).

Exclusive renames use ``renameat2(RENAME_NOREPLACE)`` where the kernel and filesystem have it, so
a rename never replaces a target; elsewhere a check-then-rename fallback is used, which is still
exclusive for claims (both racers rename the same *source*: only one finds it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from watchers.backends.base import Backend, Entry, Kind, clean_rel
from watchers.errors import AlreadyExists, BadJob, NotFound, StorageUnavailable, UnsafePath

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
NETWORK_FS = {
    "cifs",
    "smb3",
    "smbfs",
    "nfs",
    "nfs4",
    "fuse.sshfs",
    "fuse.smbnetfs",
    "fuse.rclone",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
}


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _kind(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def mount_fstype(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """The filesystem type of the mount holding ``path`` (the longest matching mount point in
    ``mounts``), if known."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
            best, best_type = mnt, parts[2]
    return best_type


class LocalBackend(Backend):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.url = self._root = str(self.root)
        self._noreplace_ok = _renameat2 is not None

    @property
    def local_root(self) -> Path:
        return self.root

    @property
    def watchable(self) -> bool:
        return mount_fstype(self.root) not in NETWORK_FS

    def _p(self, rel: str) -> str:
        clean = clean_rel(rel)
        return os.path.join(self._root, clean) if clean else self._root

    @staticmethod
    def _oserror(err: OSError, rel: str) -> Exception:
        if err.errno == errno.ENOENT:
            return NotFound(f"{rel}: not found")
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return AlreadyExists(f"{rel}: already exists")
        if err.errno in (errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.EHOSTDOWN, errno.ETIMEDOUT):
            return StorageUnavailable(f"{rel}: storage unavailable ({err.strerror})")
        return err

    def list(self, rel: str) -> list[Entry]:
        out: list[Entry] = []
        try:
            with os.scandir(self._p(rel)) as it:
                for de in it:
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append(Entry(de.name, _kind(st.st_mode), st.st_size, st.st_mtime))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise self._oserror(err, rel) from err
        return out

    def stat(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(self._p(rel))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self._oserror(err, rel) from err
        return Entry(Path(rel).name, _kind(st.st_mode), st.st_size, st.st_mtime)

    def makedirs(self, rel: str) -> None:
        os.makedirs(self._p(rel), exist_ok=True)

    def read_bytes(self, rel: str, limit: int) -> bytes:
        with self.open_read(rel) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BadJob(f"{rel}: larger than {limit} bytes")
        return data

    def write_bytes(self, rel: str, data: bytes, *, fsync: bool) -> None:
        with self.open_write(rel, fsync=fsync) as f:
            f.write(data)

    @contextmanager
    def open_write(self, rel: str, *, fsync: bool) -> Iterator[BinaryIO]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._p(rel), flags, 0o644)
        except OSError as err:
            raise self._oserror(err, rel) from err
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())

    @contextmanager
    def open_read(self, rel: str) -> Iterator[BinaryIO]:
        try:
            fd = os.open(self._p(rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise UnsafePath(f"{rel}: is a symbolic link") from None
            raise self._oserror(err, rel) from err
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BadJob(f"{rel}: not a regular file")
            yield f

    def replace(self, src: str, dst: str) -> None:
        try:
            os.replace(self._p(src), self._p(dst))
        except OSError as err:
            raise self._oserror(err, src) from err

    def rename(self, src: str, dst: str) -> None:
        s, d = self._p(src), self._p(dst)
        if self._noreplace_ok and _renameat2 is not None:
            rc = _renameat2(_AT_FDCWD, os.fsencode(s), _AT_FDCWD, os.fsencode(d), _RENAME_NOREPLACE)
            if rc == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.EINVAL, errno.ENOSYS):
                raise self._oserror(
                    OSError(code, os.strerror(code)), src if code == errno.ENOENT else dst
                )
            self._noreplace_ok = False  # filesystem without RENAME_NOREPLACE: fall back
        if os.path.lexists(d):
            raise AlreadyExists(f"{dst}: already exists")
        try:
            os.rename(s, d)
        except OSError as err:
            raise self._oserror(err, src if err.errno == errno.ENOENT else dst) from err

    def disk_usage(self) -> tuple[int, int] | None:
        if not self.root.is_dir():  # not made yet (or not mounted): nothing to measure
            return None
        total, _used, free = shutil.disk_usage(self.root)
        return total, free

    def fsync_dir(self, rel: str) -> None:
        fd = os.open(self._p(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove_file(self, rel: str) -> None:
        try:
            os.unlink(self._p(rel))
        except OSError as err:
            raise self._oserror(err, rel) from err

    def remove_dir(self, rel: str) -> None:
        try:
            os.rmdir(self._p(rel))
        except OSError as err:
            raise self._oserror(err, rel) from err
