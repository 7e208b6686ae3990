"""docs/operations.md: every ``dashspool ...`` command in it parses against the real command
tree (options, arguments, value types), and the ones that only read or are undone on the same
page run against a processed spool with the exit codes the page promises."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from test_cli import dashspool, processed

from watchers import cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
ROOT_COMMAND = typer.main.get_command(cli.cli)
__all__ = ["processed"]  # the fixture, from test_cli: a spool after `run --until-idle`


def commands(text: str) -> list[str]:
    """``dashspool ...`` lines of the fenced blocks and ``dashspool ...`` code spans, in the
    page's order."""
    found: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.strip().startswith("dashspool "):
                found.append(line.strip())
            continue
        found += re.findall(r"`(dashspool [^`]+)`", line)
    return found


IN_ORDER = commands(DOC.read_text(encoding="utf-8"))
DOC_COMMANDS = list(dict.fromkeys(IN_ORDER))  # each once


def parse(argv: list[str]) -> list[str]:
    """Parse ``argv`` (without ``dashspool``) as the CLI would, without running anything.
    Returns the command path; raises click's UsageError for anything it would refuse."""
    ctx = ROOT_COMMAND.make_context("dashspool", list(argv), resilient_parsing=False)
    cmd: Any = ROOT_COMMAND
    path: list[str] = []
    rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
    while hasattr(cmd, "resolve_command"):
        assert rest, f"`dashspool {' '.join(argv)}` names a group without a command"
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, name
        path.append(name)
        ctx = sub.make_context(name, list(rest), parent=ctx, resilient_parsing=False)
        cmd = sub
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args] if hasattr(sub, "commands") else []
    return path


def test_the_page_has_commands() -> None:
    assert len(DOC_COMMANDS) > 20
    used = {parse(shlex.split(c)[1:])[0] for c in DOC_COMMANDS}
    for needed in (
        "status",
        "health",
        "check-config",
        "pause",
        "resume",
        "requeue",
        "backup",
        "restore",
        "verify",
        "retention",
        "ledger",
    ):
        assert needed in used, f"docs/operations.md never shows `dashspool {needed}`"


@pytest.mark.parametrize("line", DOC_COMMANDS)
def test_every_command_parses(line: str) -> None:
    argv = shlex.split(line)
    assert argv[0] == "dashspool"
    path = parse(argv[1:])
    assert path, line


def test_the_parser_refuses_what_the_cli_refuses() -> None:
    from typer._click.exceptions import UsageError  # typer vendors click

    for bad in (
        ["stauts"],
        ["requeue", "3fa2c1"],  # --stage is required
        ["ledger", "failures", "--limit", "many"],
        ["health", "--verbose"],
        ["retention", "--dry"],
    ):
        with pytest.raises(UsageError):
            parse(bad)


# the commands that read, or whose change the page undoes, and the exit codes they may give
RUNS: dict[str, set[int]] = {
    "status": {0},
    "health": {0, 1, 2},  # the test spool has no archive folder: critical is expected
    "check-config": {0},
    "ledger": {0, 4},  # `ledger video 3fa2c1`: no such clip here
    "retention": {0, 6},
    "backup": {0},
    "verify": {0, 6},
    "pause": {0},
    "resume": {0},
}


def runnable() -> Iterator[str]:
    """In the page's order, each once, except pause and resume: every pause on the page is
    followed by its resume."""
    seen: set[str] = set()
    for line in IN_ORDER:
        if line in seen and shlex.split(line)[1] not in ("pause", "resume"):
            continue
        seen.add(line)
        argv = shlex.split(line)[1:]
        path = parse(argv)
        if path[0] not in RUNS or any(a.startswith("/") for a in argv):
            continue  # serves, changes the ledger or the spool, or names this machine's files
        if path[0] == "retention" and "--dry-run" not in argv:
            continue
        if path[0] == "verify" and "--repair" in argv:
            continue
        yield line


@pytest.mark.slow
def test_commands_run_against_a_processed_spool(processed: tuple[Path, Path]) -> None:
    home, spool = processed
    env = {"DASHSPOOL_CONFIG": str(home / "policies.toml"), "DASHSPOOL_SPOOL": str(spool)}
    ran = []
    for line in runnable():
        argv = shlex.split(line)[1:]
        r = dashspool(*argv, cwd=home, **env)
        assert r.returncode in RUNS[argv[0]], f"{line}: exit {r.returncode}\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{line}\n{r.stderr}"
        ran.append(line)
    assert {shlex.split(x)[1] for x in ran} == set(RUNS), ran
    # what the page paused, it resumed
    r = dashspool("status", "--json", cwd=home, **env)
    assert '"paused": true' not in r.stdout


def test_readme_links_the_page_and_cli_md_documents_health() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    cli_md = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "### health" in cli_md and "(#health)" in cli_md
