from __future__ import annotations

import os
from pathlib import Path

import pytest
from backend_contract import BackendContract

from watchers.backends import open_backend
from watchers.backends.base import Backend
from watchers.backends.local import LocalBackend, mount_fstype
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
