from __future__ import annotations

import os
from pathlib import Path

import pytest
from backend_contract import BackendContract

from watchers.backends import open_backend
from watchers.backends.base import Backend
from watchers.backends.local import NETWORK_FS, LocalBackend, mount_fstype
from watchers.errors import ConfigError


class TestLocalBackend(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        (tmp_path / "root").mkdir()
        return LocalBackend(tmp_path / "root")

    def make_link(self, backend: Backend, rel: str, target: str) -> None:
        path = backend.local_path(rel)
        assert path is not None
        os.symlink(target, path)

    def test_link_out_of_root_is_not_followed_by_remove_tree(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "keep").write_text("precious")
        backend.makedirs("d")
        self.make_link(backend, "d/escape", str(outside))
        backend.remove_tree("d")
        assert (outside / "keep").read_text() == "precious"


class TestLocalBackendWithoutRenameat2(TestLocalBackend):
    """The check-then-rename fallback used on filesystems without RENAME_NOREPLACE."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        (tmp_path / "root").mkdir()
        b = LocalBackend(tmp_path / "root")
        b._noreplace_ok = False
        return b


def test_open_backend_schemes(tmp_path: Path) -> None:
    assert isinstance(open_backend(str(tmp_path)), LocalBackend)
    assert isinstance(open_backend(f"file://{tmp_path}"), LocalBackend)
    with pytest.raises(ConfigError, match="unknown storage scheme 'ftp'"):
        open_backend("ftp://host/x")


def test_local_disk_is_watchable(tmp_path: Path) -> None:
    assert mount_fstype(tmp_path) is not None
    assert LocalBackend(tmp_path).watchable


def test_network_mounts_are_polled_not_trusted_to_inotify(tmp_path: Path) -> None:
    """inotify never sees another machine's writes on a network mount: such a spool is polled.
    The most specific mount point wins (a local disk mounted inside a NAS share's tree)."""
    nas, local = tmp_path / "nas", tmp_path / "nas" / "local-cache"
    local.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"//nas/media {nas} cifs rw,vers=3.0 0 0\n"
        f"/dev/sdb1 {local} ext4 rw 0 0\n"
        f"nas:/export {tmp_path / 'nfs'} nfs4 rw 0 0\n"
    )
    assert mount_fstype(nas / "spool", mounts) == "cifs"
    assert mount_fstype(local / "spool", mounts) == "ext4"
    assert mount_fstype(tmp_path / "nfs" / "x", mounts) == "nfs4"
    assert mount_fstype(tmp_path / "nfsish", mounts) == "ext4", "a prefix is not a parent"
    assert {"cifs", "nfs4"} <= NETWORK_FS and "ext4" not in NETWORK_FS
