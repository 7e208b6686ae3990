"""The systemd units in systemd/: they pass ``systemd-analyze verify``, and the settings that the
stop and restart behaviour rely on are there (graceful SIGTERM, no restart loop on a
configuration error, time to finish a job)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from watchers import cli
from watchers.config import ENV_CONFIG, ENV_SPOOL

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
WATCH = UNITS / "dashspool-watch@.service"
COORDINATOR = UNITS / "dashspool-coordinator.service"
ENV_EXAMPLE = UNITS / "dashspool.env.example"
INSTALLED_EXE = "/opt/dashspool/.venv/bin/dashspool"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """``{section: {key: [values in order]}}``: keys may repeat; ``#``/``;`` comments and
    backslash continuations as systemd reads them."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


_SPAN_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}


def timespan_seconds(value: str) -> float:
    """A systemd time span (``900``, ``15min``, ``1h 30s``, ``infinity``) in seconds."""
    if value.strip() == "infinity":
        return float("inf")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+\s*", value), value
    total = 0.0
    for number, unit in parts:
        assert unit in _SPAN_UNITS or unit == "", f"unknown time unit in {value!r}"
        total += float(number) * _SPAN_UNITS.get(unit, 1)
    return total


def test_timespan_parser() -> None:
    assert timespan_seconds("900") == 900
    assert timespan_seconds("15min") == 900
    assert timespan_seconds("1h 30s") == 3630
    assert timespan_seconds("infinity") == float("inf")


def last(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]


@pytest.mark.parametrize("path", [WATCH, COORDINATOR], ids=lambda p: p.name)
def test_unit_properties(path: Path) -> None:
    unit = parse_unit(path)
    svc = "Service"
    assert last(unit, svc, "KillSignal") in ("SIGTERM", "TERM", "15")
    # SIGTERM to the dashspool process only: tools a stage runs must not die mid-job
    assert last(unit, svc, "KillMode") == "mixed"
    assert last(unit, svc, "Restart") == "on-failure"
    prevent = " ".join(unit[svc]["RestartPreventExitStatus"]).split()
    assert str(cli.EXIT_CONFIG) in prevent, "a configuration error must not restart in a loop"
    assert "3" in prevent
    assert str(cli.EXIT_STORAGE) not in prevent, "a NAS outage must be retried"
    assert timespan_seconds(last(unit, svc, "TimeoutStopSec")) >= 300
    assert timespan_seconds(last(unit, svc, "RestartSec")) > 0
    assert last(unit, svc, "User") == "dashspool"
    assert last(unit, svc, "WorkingDirectory") == "/var/lib/dashspool"
    assert last(unit, svc, "EnvironmentFile") == "/etc/dashspool/dashspool.env"
    assert last(unit, svc, "NoNewPrivileges") == "yes"
    assert last(unit, "Unit", "RequiresMountsFor") == "/mnt/nas/dashspool"
    assert last(unit, "Install", "WantedBy") == "multi-user.target"
    exec_start = last(unit, svc, "ExecStart").split()
    assert exec_start[0] == INSTALLED_EXE


def test_watch_unit_serves_its_instance() -> None:
    argv = last(parse_unit(WATCH), "Service", "ExecStart").split()
    assert argv[1:3] == ["watch", "%i"]
    device = argv[argv.index("--device-id") + 1]
    # one id per watcher process, derived from the machine's id and the stage
    assert device.startswith("${DASHSPOOL_DEVICE_ID}") and "%i" in device


def test_coordinator_unit() -> None:
    unit = parse_unit(COORDINATOR)
    assert last(unit, "Service", "ExecStart").split()[1:] == ["coordinator"]
    assert "network-online.target" in " ".join(unit["Unit"]["After"]).split()


def test_env_example_names_what_the_cli_reads() -> None:
    keys = set()
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and value, line
            keys.add(key)
    assert keys == {"DASHSPOOL_DEVICE_ID", ENV_CONFIG, ENV_SPOOL}


# ------------------------------------------------------------------ systemd-analyze verify
ANALYZE = shutil.which("systemd-analyze") or (
    "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
)
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package: systemd)"
)


def _local_exe() -> Path:
    exe = Path(sys.executable).parent / "dashspool"
    if not exe.is_file():
        pytest.skip(f"{exe} missing: install the package (pip install -e .) in this environment")
    return exe


def _sandbox_copy(src: Path, dst: Path, exe: Path) -> None:
    """The unit with the one thing verify needs adapted here: ExecStart must name an existing
    executable. (User=, EnvironmentFile=, WorkingDirectory= and RequiresMountsFor= that do not
    exist on this machine are not checked by verify.)"""
    text = src.read_text(encoding="utf-8")
    assert INSTALLED_EXE in text
    dst.write_text(text.replace(INSTALLED_EXE, str(exe)), encoding="utf-8")


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit.parent,
    )


@needs_analyze
@pytest.mark.parametrize(
    ("src", "name"),
    [
        (COORDINATOR, "dashspool-coordinator.service"),
        (WATCH, "dashspool-watch@.service"),
        (WATCH, "dashspool-watch@ingest.service"),
    ],
    ids=["coordinator", "watch-template", "watch-instance"],
)
def test_systemd_analyze_verify(tmp_path: Path, src: Path, name: str) -> None:
    unit = tmp_path / name
    _sandbox_copy(src, unit, _local_exe())
    result = _verify(unit)
    stem = name.split("@")[0]
    about_unit = [ln for ln in result.stderr.splitlines() if stem in ln]
    assert result.returncode == 0 and not about_unit, (
        f"systemd-analyze verify {name}: exit {result.returncode}\n{result.stderr}"
    )


@needs_analyze
def test_verify_reports_mistakes(tmp_path: Path) -> None:
    """The check above means something: a misspelt key or a bad signal is reported on stderr
    (verify itself still exits 0 for these)."""
    unit = tmp_path / "dashspool-coordinator.service"
    _sandbox_copy(COORDINATOR, unit, _local_exe())
    text = unit.read_text(encoding="utf-8")
    text = text.replace("KillSignal=SIGTERM", "KillSignal=SIGTERMX\nRestartPreventExitStatuss=3")
    unit.write_text(text, encoding="utf-8")
    result = _verify(unit)
    about_unit = [ln for ln in result.stderr.splitlines() if "dashspool-coordinator" in ln]
    assert len(about_unit) >= 2, result.stderr
