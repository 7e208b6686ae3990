"""monitoring/: the alert rules pass ``promtool check rules`` and their unit tests, agree with
``dashspool health``'s thresholds and levels, and (with the Grafana dashboard) only use metrics
that /metrics really exports; the Prometheus example config is valid."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Pipeline, chain_settings, dropped
from test_metrics import CLIPS, PROMTOOL, needs_promtool, scrape

from watchers import health
from watchers.clock import utcnow
from watchers.config import HealthSettings, load
from watchers.health import Level

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "rules" / "dashspool.rules.yml"
RULE_TESTS = MONITORING / "tests" / "dashspool.rules.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashspool.json"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
H = HealthSettings()

# alert -> (the threshold in its expression, the [health] value it must equal, health's level)
NUMBER = r"([0-9.e+]+)"
AGREE: dict[str, tuple[str, float, Level]] = {
    "DashspoolStageBacklog": (
        rf'dashspool_queue_jobs{{queue="inbox"}} > {NUMBER}',
        H.max_pending_jobs,
        health.LEVELS[health.PENDING],
    ),
    "DashspoolJobPendingTooLong": (
        rf"dashspool_oldest_pending_age_seconds > {NUMBER}",
        H.max_pending_age_seconds,
        health.LEVELS[health.PENDING_AGE],
    ),
    "DashspoolDeviceSilent": (
        rf"dashspool_device_heartbeat_age_seconds > {NUMBER}",
        H.device_silent_seconds,
        health.LEVELS[health.DEVICE_SILENT],
    ),
    "DashspoolSpoolLowSpace": (
        rf'dashspool_store_free_ratio{{store="spool"}} < {NUMBER}',
        H.spool_min_free_percent / 100,
        health.FREE_SPACE_LEVELS["spool"],
    ),
    "DashspoolRawStoreLowSpace": (
        rf'dashspool_store_free_ratio{{store="raw"}} < {NUMBER}',
        H.raw_min_free_percent / 100,
        health.FREE_SPACE_LEVELS["raw"],
    ),
    "DashspoolArchiveLowSpace": (
        rf'dashspool_store_free_ratio{{store="archive"}} < {NUMBER}',
        H.archive_min_free_percent / 100,
        health.FREE_SPACE_LEVELS["archive"],
    ),
    "DashspoolLedgerLag": (
        rf"dashspool_ledger_oldest_event_age_seconds > {NUMBER}",
        H.ledger_max_lag_seconds,
        health.LEVELS[health.LEDGER_LAG],
    ),
}
# checks without a number: the level must still agree
LEVEL_ONLY = {
    "DashspoolSpoolUnreadable": health.LEVELS[health.SPOOL],
    "DashspoolHeartbeatUnreadable": health.LEVELS[health.DEVICE_SILENT],
    "DashspoolStoreUnmeasured": Level.CRITICAL,  # health: a store it cannot measure
}
PROMETHEUS_ONLY = {"DashspoolMetricsDown"}  # health running is its own proof of life


def rules() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r for group in data["groups"] for r in group["rules"] if "alert" in r}


def test_owner_thresholds_are_the_health_defaults() -> None:
    assert (H.max_pending_jobs, H.max_pending_age_seconds, H.device_silent_seconds) == (
        10,
        24 * 3600,
        3600,
    )
    assert (H.spool_min_free_percent, H.raw_min_free_percent, H.archive_min_free_percent) == (
        10,
        10,
        5,
    )
    assert load(ROOT / "policies.toml").health == H  # the committed file says the same


def test_every_alert_has_a_health_check_with_the_same_threshold_and_level() -> None:
    found = rules()
    assert set(found) == set(AGREE) | set(LEVEL_ONLY) | PROMETHEUS_ONLY
    for name, (pattern, expected, level) in AGREE.items():
        expr = " ".join(found[name]["expr"].split())
        m = re.search(pattern, expr)
        assert m, f"{name}: {expr!r} does not match {pattern!r}"
        assert float(m.group(1)) == pytest.approx(expected), f"{name}: {expr}"
        assert found[name]["labels"]["severity"] == level.label, name
    for name, level in LEVEL_ONLY.items():
        assert found[name]["labels"]["severity"] == level.label, name
    for rule in found.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_agreement_test_would_notice_a_drift() -> None:
    pattern, expected, _ = AGREE["DashspoolStageBacklog"]
    m = re.search(pattern, 'dashspool_queue_jobs{queue="inbox"} > 12')
    assert m and float(m.group(1)) != expected


# ------------------------------------------------------------------ the metrics they use
@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every sample name /metrics exports after a run, with a heartbeat and a pending job."""
    p: Pipeline = dropped(tmp_path_factory.mktemp("exported"), chain_settings(), CLIPS)
    try:
        p.drain()
        now = utcnow()
        p.spool.beat("jetson-1", {"stage": "b", "state": "running"}, now - timedelta(hours=2))
        _, samples = scrape(p.policies, now)
    finally:
        p.close()
    yield {name for name, _ in samples}


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(dashspool_[a-z0-9_]+)\b", expr))


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in data["panels"] for t in p.get("targets", [])]


def test_rules_use_only_exported_metrics(exported: set[str]) -> None:
    for name, rule in rules().items():
        used = metric_names(rule["expr"])
        assert used or name in PROMETHEUS_ONLY, name
        assert used <= exported, f"{name}: {used - exported} not exported"


def test_dashboard_uses_only_exported_metrics_and_the_same_thresholds(
    exported: set[str],
) -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert data["uid"] == "dashspool" and data["panels"]
    exprs = dashboard_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used <= exported, used - exported
    # every family /metrics exports has a panel (histograms through their _bucket series)
    families = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|count|sum)$", "", n) for n in used}
    assert families <= shown, families - shown

    def steps(title: str) -> list[float]:
        (panel,) = [p for p in data["panels"] if p["title"] == title]
        return [
            s["value"]
            for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if s["value"] is not None
        ]

    assert steps("Jobs waiting per stage (inbox)") == [H.max_pending_jobs]
    assert steps("Oldest waiting job per stage") == [H.max_pending_age_seconds]
    assert steps("Seconds since each device's heartbeat") == [H.device_silent_seconds]
    assert steps("Ledger ingestion lag") == [H.ledger_max_lag_seconds]
    assert steps("Free space") == [H.archive_min_free_percent / 100, H.raw_min_free_percent / 100]
    for panel in data["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["description"], panel["title"]


# ------------------------------------------------------------------ promtool
def promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules())} rules found" in r.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    """The unit tests in monitoring/tests/: each threshold just inside and just past."""
    r = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_rule_tests_fail_when_a_threshold_moves(tmp_path: Path) -> None:
    """The unit tests mean something: with the backlog threshold at 11, they fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = RULES.read_text(encoding="utf-8")
    moved = text.replace(
        'dashspool_queue_jobs{queue="inbox"} > 10', 'dashspool_queue_jobs{queue="inbox"} > 11'
    )
    assert moved != text
    (tmp_path / "rules" / RULES.name).write_text(moved, encoding="utf-8")
    (tmp_path / "tests" / RULE_TESTS.name).write_text(
        RULE_TESTS.read_text(encoding="utf-8"), encoding="utf-8"
    )
    r = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path / "tests")
    assert r.returncode != 0
    assert "DashspoolStageBacklog" in r.stdout + r.stderr


@needs_promtool
def test_prometheus_example_config_is_valid() -> None:
    r = promtool("check", "config", PROMETHEUS_YML.name)
    assert r.returncode == 0, r.stdout + r.stderr
    config = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "dashspool"  # what DashspoolMetricsDown selects
    assert 'job="dashspool"' in rules()["DashspoolMetricsDown"]["expr"]
    assert job["metrics_path"] == "/metrics"
