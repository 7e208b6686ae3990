"""The contract every storage backend must keep. A backend's test module subclasses
:class:`BackendContract` and provides a ``backend`` fixture (empty root) and ``make_link``."""

from __future__ import annotations

import threading

import pytest

from watchers.backends.base import Backend
from watchers.errors import AlreadyExists, BadJob, NotFound, UnsafePath


class BackendContract:
    """Subclasses provide the ``backend`` fixture; ``supports_links`` says if links can be made."""

    supports_links = True

    def make_link(self, backend: Backend, rel: str, target: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def test_missing_folder_lists_empty_and_stat_is_none(self, backend: Backend) -> None:
        assert backend.list("nope") == []
        assert backend.stat("nope/x") is None

    def test_write_read_list_stat(self, backend: Backend) -> None:
        backend.makedirs("a/b")
        backend.write_bytes("a/b/f.bin", b"hello", fsync=True)
        assert backend.read_bytes("a/b/f.bin", 100) == b"hello"
        (entry,) = backend.list("a/b")
        assert (entry.name, entry.kind, entry.size) == ("f.bin", "file", 5)
        st = backend.stat("a/b")
        assert st is not None and st.kind == "dir"

    def test_read_limit_refuses_large_file(self, backend: Backend) -> None:
        backend.write_bytes("big", b"x" * 101, fsync=False)
        with pytest.raises(BadJob, match="larger than 100 bytes"):
            backend.read_bytes("big", 100)

    def test_streaming_write_and_read(self, backend: Backend) -> None:
        with backend.open_write("s.bin", fsync=True) as f:
            for _ in range(4):
                f.write(b"0123456789" * 100_000)
        with backend.open_read("s.bin") as f:
            assert len(f.read()) == 4_000_000

    def test_rename_moves_and_never_replaces(self, backend: Backend) -> None:
        backend.makedirs("src")
        backend.write_bytes("src/f", b"1", fsync=False)
        backend.makedirs("dst")
        backend.rename("src", "moved")
        assert backend.read_bytes("moved/f", 10) == b"1"
        with pytest.raises(AlreadyExists):
            backend.rename("moved", "dst")  # an existing (even empty) folder is never replaced
        backend.write_bytes("other", b"2", fsync=False)
        with pytest.raises(AlreadyExists):
            backend.rename("other", "moved/f")
        assert backend.read_bytes("moved/f", 10) == b"1"

    def test_rename_of_missing_source_is_not_found(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.rename("ghost", "x")

    def test_replace_overwrites(self, backend: Backend) -> None:
        backend.write_bytes("a", b"new", fsync=False)
        backend.write_bytes("b", b"old", fsync=False)
        backend.replace("a", "b")
        assert backend.read_bytes("b", 10) == b"new"
        assert backend.stat("a") is None

    def test_exactly_one_of_many_concurrent_renames_wins(self, backend: Backend) -> None:
        for round_ in range(20):
            backend.makedirs(f"job{round_}")
            winners: list[int] = []
            barrier = threading.Barrier(4)

            def race(
                i: int, r: int = round_, b: threading.Barrier = barrier, won: list[int] = winners
            ) -> None:
                b.wait()
                try:
                    backend.rename(f"job{r}", f"claimed{r}-{i}")
                    won.append(i)
                except NotFound:
                    pass

            threads = [threading.Thread(target=race, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            assert len(winners) == 1, f"round {round_}: winners {winners}"

    def test_remove_file_dir_tree(self, backend: Backend) -> None:
        backend.makedirs("t/u")
        backend.write_bytes("t/u/f", b"x", fsync=False)
        backend.write_bytes("t/g", b"x", fsync=False)
        backend.remove_tree("t")
        assert backend.stat("t") is None
        with pytest.raises(NotFound):
            backend.remove_file("t/g")
        with pytest.raises(NotFound):
            backend.remove_dir("t")

    def test_paths_cannot_leave_the_root(self, backend: Backend) -> None:
        for bad in ("../x", "/etc/passwd", "a/../../x"):
            with pytest.raises(UnsafePath):
                backend.stat(bad)

    def test_links_are_reported_not_followed(self, backend: Backend) -> None:
        if not self.supports_links:
            pytest.skip("this backend cannot create links")
        backend.makedirs("d")
        backend.write_bytes("d/real", b"secret", fsync=False)
        self.make_link(backend, "d/link", "real")
        kinds = {e.name: e.kind for e in backend.list("d")}
        assert kinds == {"real": "file", "link": "link"}
        with pytest.raises(UnsafePath):
            backend.read_bytes("d/link", 100)
        backend.remove_tree("d")  # removes the link itself, never its target's folder contents
        assert backend.stat("d") is None
