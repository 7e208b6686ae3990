"""``dashspool health`` (watchers/health.py): each check's threshold, level and exit code, from
policies.toml's ``[health]``, against a real spool set up with the spool API."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import chain_settings, write_settings
from test_cli import dashspool
from test_protocol import make_job
from test_systemd import (
    INSTALLED_EXE,
    UNITS,
    _local_exe,
    _sandbox_copy,
    _verify,
    last,
    needs_analyze,
    parse_unit,
)
from typer.testing import CliRunner

from watchers import app, cli, health
from watchers.clock import utcnow
from watchers.config import HealthSettings, Policies, load, parse
from watchers.health import Level, Snapshot, StageQueues, StoreSpace
from watchers.sidecar import Event, EventKind
from watchers.spool import Spool

GIB = 1 << 30


# ------------------------------------------------------------------ evaluate, on snapshots
def snapshot(**kw: Any) -> Snapshot:
    base: dict[str, Any] = {
        "now": utcnow(),
        "spool": "/mnt/nas/dashspool",
        "stages": [queues("ingest")],
        "devices": [],
        "stores": [space("spool", 50), space("raw", 50), space("archive", 50)],
    }
    return Snapshot(**{**base, **kw})


def queues(stage: str, inbox: int = 0, age: float | None = None, paused: bool = False) -> Any:
    return StageQueues(stage, inbox, 0, 0, 0, 0, paused, age)


def space(store: str, free_percent: float) -> StoreSpace:
    return StoreSpace(store, f"/srv/{store}", 100 * GIB, int(free_percent * GIB))


def device(state: str = "running", age: float | None = 5.0) -> health.DeviceBeat:
    return health.DeviceBeat("jetson-1", "preprocess", "jetson", "0.1.0", state, None, age)


H = HealthSettings()


def levels(snap: Snapshot, h: HealthSettings = H) -> list[tuple[str, str, Level]]:
    return [(p.check, p.subject, p.level) for p in health.evaluate(snap, h)]


def test_healthy_snapshot_has_no_problem() -> None:
    assert levels(snapshot(devices=[device()])) == []


@pytest.mark.parametrize(
    ("inbox", "expected"),
    [(10, []), (11, [("pending", "ingest", Level.WARNING)])],
)
def test_more_than_ten_pending_is_a_warning(inbox: int, expected: list[Any]) -> None:
    assert levels(snapshot(stages=[queues("ingest", inbox=inbox)])) == expected


@pytest.mark.parametrize(
    ("age", "expected"),
    [(86400.0, []), (86401.0, [("pending_age", "heavy", Level.CRITICAL)]), (None, [])],
)
def test_a_job_waiting_over_a_day_is_critical(age: float | None, expected: list[Any]) -> None:
    assert levels(snapshot(stages=[queues("heavy", inbox=1, age=age)])) == expected


@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [
        ("running", 3600.0, []),
        ("running", 3601.0, [("device_silent", "jetson-1", Level.WARNING)]),
        ("offline", 7200.0, [("device_silent", "jetson-1", Level.WARNING)]),
        ("waiting-for-storage", 4000.0, [("device_silent", "jetson-1", Level.WARNING)]),
        ("stopped", 90 * 86400.0, []),  # shut down cleanly: not silent
        ("unknown", None, [("device_silent", "jetson-1", Level.WARNING)]),  # unreadable beat
    ],
)
def test_device_silent_over_an_hour_is_a_warning(
    state: str, age: float | None, expected: list[Any]
) -> None:
    assert levels(snapshot(devices=[device(state, age)])) == expected


@pytest.mark.parametrize(
    ("store", "free", "expected"),
    [
        ("spool", 10.0, []),
        ("spool", 9.9, [("free_space", "spool", Level.WARNING)]),
        ("raw", 10.0, []),
        ("raw", 9.9, [("free_space", "raw", Level.WARNING)]),
        ("archive", 5.0, []),
        ("archive", 4.9, [("free_space", "archive", Level.CRITICAL)]),
    ],
)
def test_free_space_indoor_nas_warns_archive_nas_is_critical(
    store: str, free: float, expected: list[Any]
) -> None:
    stores = [space(s, free if s == store else 50) for s in ("spool", "raw", "archive")]
    assert levels(snapshot(stores=stores)) == expected


def test_a_store_that_cannot_be_measured_is_critical() -> None:
    missing = StoreSpace("archive", "/mnt/shed/archive", problem="not there")
    problems = health.evaluate(snapshot(stores=[space("spool", 50), missing]), H)
    assert [(p.check, p.subject, p.level) for p in problems] == [
        ("free_space", "archive", Level.CRITICAL)
    ]
    assert "/mnt/shed/archive: not there" in problems[0].line()


def test_spool_unreadable_is_critical_and_said_once() -> None:
    snap = Snapshot(
        utcnow(),
        "/mnt/nas/dashspool",
        spool_problem="cannot be read: storage unavailable",
        stores=[StoreSpace("spool", "/mnt/nas/dashspool", problem="not there"), space("raw", 50)],
    )
    assert levels(snap) == [("spool", "spool", Level.CRITICAL)]


@pytest.mark.parametrize(("lag", "n"), [(3600.0, 0), (3601.0, 1), (None, 0)])
def test_ledger_lag_over_an_hour_is_a_warning(lag: float | None, n: int) -> None:
    snap = snapshot(ledger_backlog=3, oldest_event_age_seconds=lag)
    assert levels(snap) == [("ledger_lag", "ledger", Level.WARNING)] * n


def test_thresholds_come_from_the_settings_and_worst_comes_first() -> None:
    h = replace_health(max_pending_jobs=2, archive_min_free_percent=60)
    snap = snapshot(stages=[queues("ingest", inbox=3, paused=True)])
    problems = health.evaluate(snap, h)
    assert [(p.check, p.level) for p in problems] == [
        ("free_space", Level.CRITICAL),
        ("pending", Level.WARNING),
    ]
    assert "health.max_pending_jobs 2 (the stage is paused)" in problems[1].message
    assert (problems[1].value, problems[1].threshold) == (3, 2)
    report = health.Report(snap, problems)
    assert report.level is Level.CRITICAL and int(report.level) == 2


def replace_health(**kw: Any) -> HealthSettings:
    return HealthSettings.model_validate({**H.model_dump(), **kw})


def test_health_settings_defaults_are_the_owners_thresholds() -> None:
    assert (H.max_pending_jobs, H.max_pending_age_seconds, H.device_silent_seconds) == (
        10,
        86400,
        3600,
    )
    assert (H.spool_min_free_percent, H.raw_min_free_percent, H.archive_min_free_percent) == (
        10,
        10,
        5,
    )
    with pytest.raises(Exception, match="max_pending_job"):
        parse({"health": {"max_pending_job": 3}}, source=None, base_dir=Path("."))


# ------------------------------------------------------------------ the command, for real
@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A laid-out spool of the copy chain a -> b -> c, the stores present, settings in
    policies.toml whose free-space minimums are 0 (so this machine's disk never decides)."""
    p = setting(tmp_path)
    app.open_spool(p).ensure_layout(p.order())
    (tmp_path / "raw").mkdir()
    (tmp_path / "archive").mkdir()
    return tmp_path


def setting(home: Path, **health_kw: Any) -> Policies:
    settings = chain_settings(
        health={
            "spool_min_free_percent": 0,
            "raw_min_free_percent": 0,
            "archive_min_free_percent": 0,
            **health_kw,
        }
    )
    write_settings(home / "policies.toml", settings)
    return load(home / "policies.toml")


def open_spool(home: Path) -> Spool:
    return app.open_spool(load(home / "policies.toml"))


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures the root logger onto CliRunner's stream: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_health(home: Path, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(
        cli.cli, ["--config", str(home / "policies.toml"), "health", *args], catch_exceptions=False
    )
    return r.exit_code, r.stdout


pytestmark = pytest.mark.usefixtures("keep_logging")


def test_ok_is_exit_0_and_one_line(home: Path) -> None:
    open_spool(home).beat("nas-1", {"stage": "a", "state": "running"}, utcnow())
    code, out = run_health(home)
    assert code == 0, out
    assert out.splitlines() == ["OK: 3 stages, 1 devices and 3 stores checked, no problem"]


def test_pending_jobs_warning_exit_1(home: Path) -> None:
    spool = open_spool(home)
    for i in range(11):
        make_job(spool, "b", f"2024_0101_12000{i % 10}_x{i}-{i:06x}")
    code, out = run_health(home)
    assert code == 1, out
    assert out.splitlines() == [
        "WARNING pending b: 11 jobs waiting in its inbox, more than health.max_pending_jobs 10"
    ]
    setting(home, max_pending_jobs=11)
    assert run_health(home)[0] == 0


def test_old_pending_job_critical_exit_2(home: Path) -> None:
    spool = open_spool(home)
    job = make_job(spool, "c")
    root = spool.backend.local_root
    assert root is not None
    day_ago = (utcnow() - timedelta(hours=25)).timestamp()
    os.utime(root / "c" / "inbox" / job, (day_ago, day_ago))  # published 25 hours ago
    code, out = run_health(home)
    assert code == 2, out
    (line,) = out.splitlines()
    assert line.startswith("CRITICAL pending_age c: a job has waited 25.0 h in its inbox")
    setting(home, max_pending_age_seconds=26 * 3600)
    assert run_health(home)[0] == 0


def test_silent_device_warning_but_not_a_stopped_one(home: Path) -> None:
    spool = open_spool(home)
    two_hours_ago = utcnow() - timedelta(hours=2)
    spool.beat("gpu-1", {"stage": "c", "state": "stopped"}, two_hours_ago)
    assert run_health(home)[0] == 0
    spool.beat("jetson-1", {"stage": "b", "state": "running"}, two_hours_ago)
    code, out = run_health(home)
    assert code == 1, out
    (line,) = out.splitlines()
    assert line.startswith("WARNING device_silent jetson-1: no heartbeat for 2.0 h (state offline)")


@pytest.mark.parametrize(
    ("key", "store", "code", "word"),
    [
        ("spool_min_free_percent", "spool", 1, "WARNING"),
        ("raw_min_free_percent", "raw", 1, "WARNING"),
        ("archive_min_free_percent", "archive", 2, "CRITICAL"),
    ],
)
def test_low_free_space(home: Path, key: str, store: str, code: int, word: str) -> None:
    """This machine's disk against a minimum no disk meets (99.99 % free)."""
    setting(home, **{key: 99.99})
    got, out = run_health(home)
    assert got == code, out
    (line,) = out.splitlines()
    assert line.startswith(f"{word} free_space {store}: ")
    assert f"under health.{key} 99.99" in line


def test_missing_archive_is_critical(home: Path) -> None:
    (home / "archive").rmdir()
    code, out = run_health(home)
    assert code == 2, out
    assert "CRITICAL free_space archive: " in out and "not there" in out


def test_ledger_lag_warning(home: Path) -> None:
    spool = open_spool(home)
    at = utcnow() - timedelta(hours=2)
    spool.emit(Event(event_id=Event.random_id(), kind=EventKind.VIDEO_NEW, at=at, device="x"))
    code, out = run_health(home)
    assert code == 1, out
    assert out.startswith("WARNING ledger_lag ledger: 1 event files waiting, the oldest for 2.0 h")


def test_unreachable_spool_is_critical(home: Path) -> None:
    write_settings(home / "policies.toml", chain_settings(spool={"path": "gone"}))
    code, out = run_health(home)
    assert code == 2, out
    assert out.splitlines()[0].startswith("CRITICAL spool spool: ")


def test_json_lists_every_problem(home: Path) -> None:
    setting(home, archive_min_free_percent=99.99, max_pending_jobs=0)
    make_job(open_spool(home), "a")
    code, out = run_health(home, "--json")
    data = json.loads(out)
    assert code == 2 and data["exit_code"] == 2 and data["status"] == "critical"
    assert [(p["level"], p["check"], p["subject"]) for p in data["problems"]] == [
        ("critical", "free_space", "archive"),
        ("warning", "pending", "a"),
    ]
    assert data["problems"][1]["value"] == 1 and data["problems"][1]["threshold"] == 0
    assert data["checked"]["stages"] == ["a", "b", "c"]
    assert set(data["checked"]["stores"]) == {"spool", "raw", "archive"}


def test_exit_codes_as_scripts_see_them(home: Path) -> None:
    """A real process: exit 1 for a warning, 2 critical, 3 for a configuration error."""
    cfg = str(home / "policies.toml")
    make_job(open_spool(home), "a")
    setting(home, max_pending_jobs=0)
    r = dashspool("--config", cfg, "health", cwd=home)
    assert (r.returncode, r.stdout.split()[:2]) == (1, ["WARNING", "pending"]), r.stderr
    setting(home, max_pending_jobs=0, archive_min_free_percent=99.99)
    r = dashspool("--config", cfg, "health", cwd=home)
    assert r.returncode == 2, r.stderr
    (home / "policies.toml").write_text("[health]\nmax_pending = 3\n")
    r = dashspool("--config", cfg, "health", cwd=home)
    assert r.returncode == 3
    assert "health.max_pending: unknown key" in r.stderr


# ------------------------------------------------------------------ systemd timer and service
HEALTH_SERVICE = UNITS / "dashspool-health.service"
HEALTH_TIMER = UNITS / "dashspool-health.timer"


def test_health_units_run_the_check_hourly() -> None:
    svc = parse_unit(HEALTH_SERVICE)
    assert last(svc, "Service", "Type") == "oneshot"
    assert last(svc, "Service", "ExecStart").split() == [INSTALLED_EXE, "health"]
    assert last(svc, "Service", "User") == "dashspool"
    assert last(svc, "Service", "EnvironmentFile") == "/etc/dashspool/dashspool.env"
    assert last(svc, "Service", "WorkingDirectory") == "/var/lib/dashspool"
    assert last(svc, "Unit", "RequiresMountsFor") == "/mnt/nas/dashspool"
    assert "Restart" not in svc["Service"]  # a problem is reported, not retried
    timer = parse_unit(HEALTH_TIMER)
    assert last(timer, "Timer", "OnCalendar") == "hourly"  # the owner's schedule
    assert last(timer, "Timer", "Persistent") == "true"
    assert last(timer, "Timer", "Unit") == HEALTH_SERVICE.name
    assert last(timer, "Install", "WantedBy") == "timers.target"


@needs_analyze
def test_health_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    service = tmp_path / HEALTH_SERVICE.name
    timer = tmp_path / HEALTH_TIMER.name
    _sandbox_copy(HEALTH_SERVICE, service, _local_exe())
    timer.write_text(HEALTH_TIMER.read_text(encoding="utf-8"), encoding="utf-8")
    for unit in (service, timer):
        result = _verify(unit)
        about = [ln for ln in result.stderr.splitlines() if "dashspool-health" in ln]
        assert result.returncode == 0 and not about, result.stderr
