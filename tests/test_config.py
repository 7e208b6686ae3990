"""policies.toml → typed settings; errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from stages import REGISTRY
from watchers.config import Policies, load
from watchers.errors import ConfigError
from watchers.stage import Registry

PIPE = '[pipeline]\nentry = "ingest"\n[stages.ingest]\ntype = "copy"\nnext = ["heavy"]\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policies.toml"
    path.write_text(text)
    return path


def test_committed_policies_equal_the_built_in_defaults() -> None:
    """The documented file and the code's defaults must not drift apart."""
    p = load(REPO / "policies.toml")
    assert p.model_dump(exclude={"source"}) == Policies(base_dir=p.base_dir).model_dump(
        exclude={"source"}
    )
    REGISTRY.build(p)


def test_no_file_means_everything_under_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DASHSPOOL_CONFIG", raising=False)
    monkeypatch.delenv("DASHSPOOL_SPOOL", raising=False)
    p = load()
    assert p.source is None
    assert Path(p.spool_url) == tmp_path / "spool"
    assert p.ledger_path == tmp_path / "dashspool.db"
    assert p.path(p.stores.raw) == tmp_path / "raw"


def test_relative_paths_follow_the_file_and_spool_override_follows_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    cfg = write(tmp_path / "etc", '[spool]\npath = "../data/spool"\n')
    p = load(cfg)
    assert Path(p.spool_url).resolve() == (tmp_path / "data/spool").resolve()
    monkeypatch.chdir(tmp_path)
    assert Path(load(cfg, spool="other").spool_url) == tmp_path / "other"
    assert load(cfg, spool="smb://u@h/share/x").spool_url == "smb://u@h/share/x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[spool]\nrescan_secs = 3\n", "policies.toml: spool.rescan_secs: unknown key"),
        ("[spoool]\n", "policies.toml: spoool: unknown key"),
        ("[spool]\nrescan_seconds = -1\n", "spool.rescan_seconds: Input should be greater than 0"),
        ("[spool]\nrescan_seconds = 'x'\n", "spool.rescan_seconds: Input should be a valid number"),
        ("[retry\n", "not valid TOML"),
        ('[pipeline]\nentry = "nope"\n', "pipeline.entry: no stage named 'nope'"),
        (
            PIPE + '[stages.heavy]\ntype = "copy"\nnext = ["nowhere"]\n',
            "stages.heavy.next: no stage named 'nowhere'",
        ),
        (PIPE + '[stages.heavy]\ntype = "copy"\nnext = ["ingest"]\n', "the pipeline loops"),
        (
            PIPE + '[stages.heavy]\ntype = "copy"\n[stages.lonely]\ntype = "copy"\n',
            "stages.lonely: not reachable from pipeline.entry",
        ),
        (PIPE + '[stages.heavy]\n[stages."Bad Name"]\n', "stage name 'Bad Name' must match"),
        ('[stores]\narchive = "ftp://nas/share"\n', "stores.archive: Value error, 'ftp' is not a"),
        (
            '[stores]\nraw = "smb://u:hunter2pw@nas/share/raw"\n',
            "stores.raw: Value error, the URL must not contain a password",
        ),
        (
            '[spool]\npath = "smb://u:hunter2pw@nas/share/spool"\n',
            "spool.path: Value error, the URL must not contain a password",
        ),
        ('[backup]\ndir = "smb://u@nas/share"\n', "backup.dir: Value error, must be a local"),
        ('[backup]\ntime_utc = "2am"\n', "backup.time_utc: String should match pattern"),
        ("[retention]\ndone_days = { heavy = 0 }\n", "done_days.heavy: must be more than 0"),
    ],
)
def test_bad_settings_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    assert message in str(err.value)
    assert str(tmp_path / "policies.toml") in str(err.value)
    assert "hunter2pw" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            PIPE + '[stages.heavy]\ntype = "yolo9000"\n',
            "stages.heavy.type: unknown stage type 'yolo9000'",
        ),
        (
            PIPE + '[stages.heavy]\ntype = "copy"\ndelay_secs = 1\n',
            "stages.heavy.delay_secs: unknown key",
        ),
        (
            PIPE + '[stages.heavy]\ntype = "copy"\nfailure_rate = 2\n',
            "stages.heavy.failure_rate: Input should be less",
        ),
    ],
)
def test_stage_settings_are_checked_by_the_stage_type(
    tmp_path: Path, text: str, message: str
) -> None:
    policies = load(write(tmp_path, text))
    with pytest.raises(ConfigError, match=message):
        REGISTRY.build(policies)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such settings file"):
        load(tmp_path / "absent.toml")


def test_duplicate_stage_type_fails_at_import() -> None:
    from stages.copy import CopyStage

    with pytest.raises(RuntimeError, match="registered twice"):
        Registry([CopyStage, CopyStage])
