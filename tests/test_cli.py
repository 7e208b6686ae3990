"""The ``dashspool`` command as scripts and systemd see it: a real process, its exit code, stdout
and stderr. Help text for every command, ``status --json`` against docs/status.schema.json, and
the documented exit codes (docs/cli.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer

from watchers import __version__, cli
from watchers.config import load

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "docs" / "status.schema.json"
SCRIPT = Path(sys.executable).parent / "dashspool"
# the installed entry point when there is one, else the module (same main())
DASHSPOOL = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "watchers.cli"]
DROPS = ("2024_0101_120000_000001F.mp4", "2024_0101_120100_000002F.mp4", "clip.MP4")


def dashspool(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a clean environment: no DASHSPOOL_* from the caller, HOME in ``cwd``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASHSPOOL_")}
    base.update({"HOME": str(cwd), "COLUMNS": "200", **env})
    return subprocess.run(
        [*DASHSPOOL, *args], cwd=cwd, env=base, capture_output=True, text=True, timeout=60
    )


def flat(text: str) -> str:
    """Without any whitespace: immune to the console wrapping long lines."""
    return re.sub(r"\s+", "", text)


def write_config(folder: Path, body: str = "") -> Path:
    cfg = folder / "policies.toml"
    cfg.write_text("[spool]\nsettle_seconds = 0\n" + body, encoding="utf-8")
    return cfg


# ------------------------------------------------------------------------------------ help
def _walk(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


ROOT_COMMAND = typer.main.get_command(cli.cli)
COMMANDS = list(_walk(ROOT_COMMAND))


def _help(cmd: Any) -> str:
    return (cmd.help or cmd.short_help or "").strip()


def test_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    for expected in (
        "watch",
        "coordinator",
        "run",
        "status",
        "requeue",
        "pause",
        "resume",
        "check-config",
        "ledger",
        "ledger videos",
        "ledger video",
        "ledger failures",
        "ledger events",
        "ledger deletions",
        "ledger alerts",
        "retention",
        "backup",
        "restore",
        "verify",
    ):
        assert expected in names


@pytest.mark.parametrize(
    ("path", "cmd"), COMMANDS, ids=[" ".join(p) or "dashspool" for p, _ in COMMANDS]
)
def test_every_command_has_help(path: tuple[str, ...], cmd: Any) -> None:
    text = _help(cmd)
    assert text, f"`dashspool {' '.join(path)}` has no help text"
    assert len(text) >= 10, f"`dashspool {' '.join(path)}`: help {text!r} says too little"


@pytest.mark.parametrize(
    ("path", "cmd"), COMMANDS, ids=[" ".join(p) or "dashspool" for p, _ in COMMANDS]
)
def test_help_option_prints_it(tmp_path: Path, path: tuple[str, ...], cmd: Any) -> None:
    r = dashspool(*path, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Usage:" in r.stdout
    first_line = _help(cmd).splitlines()[0]
    assert flat(first_line) in flat(r.stdout), r.stdout
    for sub in getattr(cmd, "commands", {}):
        assert sub in r.stdout


# -------------------------------------------------------------------------- status --json
@pytest.fixture(scope="module")
def processed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A spool after ``run --until-idle`` on a few drops: jobs done, heartbeats, a ledger."""
    home = tmp_path_factory.mktemp("processed")
    cfg = write_config(home)
    spool = home / "spool"
    (spool / "inbox").mkdir(parents=True)
    for name in DROPS:
        (spool / "inbox" / name).write_bytes(name.encode() * 100)
    r = dashspool("--spool", str(spool), "--config", str(cfg), "run", "--until-idle", cwd=home)
    assert r.returncode == 0, r.stderr
    return home, spool


def _status(home: Path, spool: Path, cfg: Path) -> dict[str, Any]:
    r = dashspool("--spool", str(spool), "--config", str(cfg), "status", "--json", cwd=home)
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_status_json_matches_schema(processed: tuple[Path, Path]) -> None:
    home, spool = processed
    cfg = home / "policies.toml"
    data = _status(home, spool, cfg)
    errors = sorted(_validator().iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)

    assert list(data["stages"]) == load(str(cfg), str(spool)).order()
    assert data["drops_pending"] == 0
    assert data["stages"]["ingest"]["done"] == len(DROPS)
    devices = {d["device_id"]: d for d in data["devices"]}
    assert {"local", "coordinator"} <= set(devices)
    assert devices["local"]["state"] == "stopped"
    assert devices["local"]["version"] == __version__


def test_schema_is_strict_where_the_code_is() -> None:
    v = _validator()
    stage = {
        "inbox": 0,
        "work": 0,
        "deferred": 0,
        "failed": 0,
        "done": 0,
        "paused": False,
        "oldest_pending_age_seconds": None,
    }
    good = {
        "spool": "/s",
        "reachable": True,
        "generated_at": "2024-01-01T12:00:00+00:00",
        "drops_pending": 0,
        "ledger_backlog": 0,
        "stages": {"ingest": stage},
        "devices": [],
    }
    assert v.is_valid(good)
    assert not v.is_valid({**good, "extra": 1})
    assert not v.is_valid({**good, "stages": {"ingest": {**stage, "queued": 1}}})
    assert not v.is_valid({**good, "stages": {"ingest": {**stage, "inbox": -1}}})
    assert not v.is_valid({**good, "generated_at": "yesterday"})


# ------------------------------------------------------------------------------ exit codes
def test_unknown_key_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "rescan_secs = 3\n")
    r = dashspool("--config", str(cfg), "status", "--json", cwd=tmp_path)
    assert r.returncode == cli.EXIT_CONFIG == 3, r.stderr
    assert "configuration error" in r.stderr
    assert flat(f"{cfg}: spool.rescan_secs: unknown key") in flat(r.stderr), r.stderr
    assert r.stdout == ""


def test_missing_config_file_is_a_configuration_error(tmp_path: Path) -> None:
    r = dashspool("--config", "nosuch.toml", "status", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "nosuch.toml" in r.stderr


def test_ledger_video_not_found(processed: tuple[Path, Path]) -> None:
    home, spool = processed
    cfg = home / "policies.toml"
    assert (home / "dashspool.db").is_file()
    r = dashspool(
        "--spool", str(spool), "--config", str(cfg), "ledger", "video", "nosuchid", cwd=home
    )
    assert r.returncode == cli.EXIT_NOT_FOUND == 4, r.stderr
    assert "not found" in r.stderr and "nosuchid" in r.stderr


def test_ledger_videos_lists_the_drops(processed: tuple[Path, Path]) -> None:
    home, spool = processed
    r = dashspool(
        "--spool",
        str(spool),
        "--config",
        str(home / "policies.toml"),
        "ledger",
        "videos",
        "--json",
        cwd=home,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(v["source_name"] for v in json.loads(r.stdout)) == sorted(DROPS)


def test_requeue_unknown_job_not_found(processed: tuple[Path, Path]) -> None:
    home, spool = processed
    r = dashspool(
        "--spool",
        str(spool),
        "--config",
        str(home / "policies.toml"),
        "requeue",
        "nosuchid",
        "--stage",
        "ingest",
        cwd=home,
    )
    assert r.returncode == 4, r.stderr
    assert "nosuchid" in r.stderr


def test_requeue_unknown_stage_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = dashspool(
        "--spool", "spool", "--config", str(cfg), "requeue", "x", "--stage", "nosuch", cwd=tmp_path
    )
    assert r.returncode == 3, r.stderr


def test_watch_unknown_stage_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = dashspool(
        "--spool",
        "spool",
        "--config",
        str(cfg),
        "watch",
        "nosuchstage",
        "--device-id",
        "x",
        cwd=tmp_path,
    )
    assert r.returncode == 3, r.stderr
    assert "nosuchstage" in r.stderr


def test_watch_without_device_id_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = dashspool("--spool", "spool", "--config", str(cfg), "watch", "ingest", cwd=tmp_path)
    assert r.returncode == 3, r.stderr
    assert "DASHSPOOL_DEVICE_ID" in r.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert dashspool("nosuchcommand", cwd=tmp_path).returncode == 2
    assert dashspool("status", "--nosuchoption", cwd=tmp_path).returncode == 2
    assert dashspool("requeue", "x", cwd=tmp_path).returncode == 2  # --stage missing


def test_pause_and_resume(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    spool = tmp_path / "spool"
    base = ("--spool", str(spool), "--config", str(cfg))
    r = dashspool(*base, "check-config", cwd=tmp_path)  # creates the spool layout
    assert r.returncode == 0, r.stderr
    r = dashspool(*base, "pause", "ingest", "--reason", "maintenance", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "maintenance" in (spool / "ingest" / "PAUSED").read_text(encoding="utf-8")
    stages = _status(tmp_path, spool, cfg)["stages"]
    assert stages["ingest"]["paused"] is True
    assert not any(c["paused"] for name, c in stages.items() if name != "ingest")

    r = dashspool(*base, "resume", "ingest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not any(c["paused"] for c in _status(tmp_path, spool, cfg)["stages"].values())

    r = dashspool(*base, "pause", "nosuchstage", cwd=tmp_path)
    assert r.returncode == 3, r.stderr


def test_version_before_a_command(tmp_path: Path) -> None:
    r = dashspool("--version", "status", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == __version__


# ------------------------------------------------------- CLI edge cases (each was a bug once)
def test_version(tmp_path: Path) -> None:
    r = dashspool("--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == __version__


def test_interrupt_exits_130(tmp_path: Path) -> None:
    code = (
        "import sys, watchers.app as a, watchers.cli as c\n"
        "def interrupted(*args, **kwargs): raise KeyboardInterrupt\n"
        "a.status = interrupted\n"
        "sys.argv = ['dashspool', '--spool', 'spool', 'status']\n"
        "c.main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSPOOL_")}
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**env, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == cli.EXIT_ABORTED, r.stderr


def test_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    r = dashspool("--log-level", "LOUD", "status", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr


def test_error_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / ("a-settings-folder-with-a-long-name-" * 2)
    folder.mkdir()
    cfg = write_config(folder, "rescan_secs = 3\n")
    r = dashspool("--config", str(cfg), "status", cwd=tmp_path, COLUMNS="80")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        f"dashspool: configuration error: {cfg}: spool.rescan_secs: unknown key"
    ]


def test_help_keeps_brackets(tmp_path: Path) -> None:
    r = dashspool("watch", "--help", cwd=tmp_path)
    assert "[stages.NAME]" in r.stdout


def test_pause_on_a_new_spool(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = dashspool("--spool", "spool", "--config", str(cfg), "pause", "ingest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "spool" / "ingest" / "PAUSED").is_file()
