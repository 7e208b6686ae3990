"""The local heartbeat copies that `dashspool status` reads while the spool cannot be read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from watchers import runstate


def test_a_record_is_written_whole_readable_and_read_back_by_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(runstate.RUN_DIR_ENV, str(tmp_path / "run"))
    runstate.write("dev-a", {"device_id": "dev-a", "spool": "smb://u@nas/s", "state": "x"})
    runstate.write("dev-b", {"device_id": "dev-b", "spool": "/elsewhere", "state": "y"})
    (tmp_path / "run" / "junk.json").write_text("{not json")
    path = tmp_path / "run" / "dev-a.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "the operator's status reads it"
    assert [r["state"] for r in runstate.read_all("smb://u@nas/s")] == ["x"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "dev-a.json",
        "dev-b.json",
        "junk.json",
    ], "no temporary file left"


def test_a_run_folder_that_is_a_link_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A predictable folder name under /tmp could be someone else's link."""
    target = tmp_path / "theirs"
    target.mkdir()
    (tmp_path / "run").symlink_to(target)
    monkeypatch.setenv(runstate.RUN_DIR_ENV, str(tmp_path / "run"))
    runstate.write("dev-a", {"device_id": "dev-a", "spool": "/s"})
    assert list(target.iterdir()) == []
