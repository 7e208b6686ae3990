"""``/metrics`` (watchers/metrics.py): values after a real pipeline ran, counters that never go
down (requeue, retention), pinned time for ages, and ``promtool check metrics`` on the output."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Pipeline, chain_settings, dropped, listing, write_settings
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from test_cli import dashspool

from stages.copy import CopyStage
from watchers import metrics
from watchers.clock import utcnow
from watchers.config import Policies, parse
from watchers.errors import TransientError
from watchers.sidecar import Event, EventKind, Sidecar
from watchers.worker import Worker

PROMTOOL = shutil.which("promtool") or (
    "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package: prometheus)"
)
CLIPS = {f"2024_0101_12000{i}_00000{i}F.MP4": f"clip {i}".encode() * 50 for i in range(3)}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(policies: Policies, now: Any = None) -> tuple[bytes, Samples]:
    body, content_type = metrics.exposition(policies, now)
    assert content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return body, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def promtool_check(body: bytes) -> None:
    """``promtool check metrics``: the format, and its lint (HELP, units, suffixes)."""
    assert PROMTOOL is not None
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=60)
    problems = (r.stdout + r.stderr).decode().strip()
    assert r.returncode == 0 and not problems, problems


class Switch(CopyStage):
    """A copy stage that fails while ``broken`` is set (for the failed/deferred counters)."""

    broken = False

    def process(self, job: Sidecar, ctx: Any) -> None:
        if Switch.broken:
            raise TransientError("NAS busy")
        super().process(job, ctx)


@pytest.fixture(autouse=True)
def _mended() -> Iterator[None]:
    yield
    Switch.broken = False


@pytest.fixture
def ran(tmp_path: Path) -> Iterator[Pipeline]:
    """Three clips through the copy chain a -> b -> c, the ledger ingested."""
    p = dropped(tmp_path, chain_settings(), CLIPS)
    try:
        assert p.drain() == 9
        yield p
    finally:
        p.close()


def test_a_pipeline_run_shows_in_the_counters_and_histograms(ran: Pipeline) -> None:
    now = utcnow()
    _, s = scrape(ran.policies, now)
    assert value(s, "dashspool_spool_up") == 1
    assert value(s, "dashspool_ledger_up") == 1
    for stage in "abc":
        assert value(s, "dashspool_jobs_done_total", stage=stage) == 3
        assert value(s, "dashspool_jobs_failed_total", stage=stage) == 0
        assert value(s, "dashspool_jobs_deferred_total", stage=stage) == 0
        assert value(s, "dashspool_stage_duration_seconds_count", stage=stage) == 3
        assert value(s, "dashspool_stage_duration_seconds_bucket", stage=stage, le="+Inf") == 3
        # copying a few bytes takes well under a second; the buckets are cumulative
        assert value(s, "dashspool_stage_duration_seconds_bucket", stage=stage, le="1.0") == 3
        assert 0 < value(s, "dashspool_stage_duration_seconds_sum", stage=stage) < 3
        for queue in metrics.QUEUES:
            assert value(s, "dashspool_queue_jobs", stage=stage, queue=queue) == 0
        assert value(s, "dashspool_oldest_pending_age_seconds", stage=stage) == 0
        assert value(s, "dashspool_stage_paused", stage=stage) == 0
    assert value(s, "dashspool_drops_pending") == 0
    assert value(s, "dashspool_ledger_backlog_events") == 0
    # the histogram's durations are the ones the ledger recorded per attempt
    with ran.coordinator.ledger.reading() as sess:
        total = sess.execute(
            text("SELECT TOTAL(duration_seconds) FROM stage_attempts WHERE stage = 'a'")
        ).scalar_one()
    assert value(s, "dashspool_stage_duration_seconds_sum", stage="a") == pytest.approx(total)


def test_queues_ages_heartbeats_and_ledger_lag_use_the_given_time(tmp_path: Path) -> None:
    p = dropped(tmp_path, chain_settings(), CLIPS)
    try:
        assert p.workers[0].loop_once() and p.workers[0].loop_once()  # two clips through a
        assert p.workers[1].loop_once()  # one of them through b too
        spool, now = p.spool, utcnow()
        spool.pause("c", "test")
        spool.beat("jetson-1", {"stage": "b", "state": "running"}, now - timedelta(hours=2))
        spool.beat("gpu-1", {"stage": "c", "state": "stopped"}, now - timedelta(minutes=5))
        later = now + timedelta(hours=25)
        _, s = scrape(p.policies, later)
    finally:
        p.close()
    assert value(s, "dashspool_queue_jobs", stage="a", queue="inbox") == 0
    assert value(s, "dashspool_queue_jobs", stage="b", queue="inbox") == 1
    assert value(s, "dashspool_queue_jobs", stage="c", queue="inbox") == 1
    assert value(s, "dashspool_drops_pending") == 1  # the third clip was not adopted yet
    assert value(s, "dashspool_stage_paused", stage="c") == 1
    # the jobs were published a moment before `now`: 25 h and a little, as seen from `later`
    for stage in "bc":
        age = value(s, "dashspool_oldest_pending_age_seconds", stage=stage)
        assert 25 * 3600 <= age < 25 * 3600 + 60
    assert value(s, "dashspool_device_heartbeat_age_seconds", device="jetson-1") == pytest.approx(
        27 * 3600
    )
    assert value(
        s, "dashspool_device_last_heartbeat_timestamp_seconds", device="jetson-1"
    ) == pytest.approx((now - timedelta(hours=2)).timestamp())
    assert value(s, "dashspool_device_stopped", device="jetson-1") == 0
    assert value(s, "dashspool_device_stopped", device="gpu-1") == 1
    info = [k for k in s if k[0] == "dashspool_device_info" and ("device", "gpu-1") in k[1]]
    assert len(info) == 1 and ("stage", "c") in info[0][1]
    # the events of those three attempts were not ingested: the ledger lags behind
    assert value(s, "dashspool_ledger_backlog_events") > 0
    lag = value(s, "dashspool_ledger_oldest_event_age_seconds")
    assert 25 * 3600 <= lag < 25 * 3600 + 60


def test_each_scrape_is_computed_then(ran: Pipeline) -> None:
    """No state kept between scrapes: a job appearing and the clock moving show at once."""
    now = utcnow()
    _, before = scrape(ran.policies, now)
    ran.spool.beat("nas-1", {"stage": "a"}, now)
    _, after = scrape(ran.policies, now + timedelta(seconds=90))
    assert ("dashspool_device_heartbeat_age_seconds", (("device", "nas-1"),)) not in before
    assert value(after, "dashspool_device_heartbeat_age_seconds", device="nas-1") == 90


def test_failures_count_and_counters_never_go_down(tmp_path: Path) -> None:
    """A job that keeps failing in b: deferred twice, then failed. A requeue that then succeeds
    rewrites the ledger's attempt rows (attempt numbers restart), and retention empties done/:
    the counters stay where they were and only go up."""
    settings = chain_settings()
    p = dropped(tmp_path, settings, dict(list(CLIPS.items())[:1]))
    try:
        p.workers[1] = Worker(p.spool, p.policies, Switch("b", Switch.Settings()), "dev1")
        Switch.broken = True
        p.drain()
        start = utcnow()
        for i in range(1, 3):  # the deferred job's retry times come (max_attempts = 3)
            assert p.workers[1].loop_once(start + timedelta(minutes=i))
        p.drain()
        (job,) = [n for n in listing(p.spool, "b/failed") if not n.endswith(".json")]
        _, s = scrape(p.policies)
        assert value(s, "dashspool_jobs_failed_total", stage="b") == 1
        assert value(s, "dashspool_jobs_deferred_total", stage="b") == 2  # max_attempts 3
        assert value(s, "dashspool_jobs_done_total", stage="b") == 0
        assert value(s, "dashspool_queue_jobs", stage="b", queue="failed") == 1

        Switch.broken = False
        config = write_settings(tmp_path / "policies.toml", settings)
        r = dashspool("--config", str(config), "requeue", job, "--stage", "b", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        p.drain()
        assert listing(p.spool, "c/done") == [job]
        with p.coordinator.ledger.reading() as sess:
            deferred_rows = sess.execute(
                text("SELECT COUNT(*) FROM stage_attempts WHERE stage='b' AND outcome='deferred'")
            ).scalar_one()
        assert deferred_rows == 1  # the requeued run took over attempt 1's row: 2 went to 1
        _, after = scrape(p.policies)
        assert value(after, "dashspool_jobs_failed_total", stage="b") == 1
        assert value(after, "dashspool_jobs_deferred_total", stage="b") == 2
        assert value(after, "dashspool_jobs_done_total", stage="b") == 1

        for st in "abc":  # what retention does to finished jobs
            for e in p.spool.done_entries(st):
                p.spool.remove_done(st, e.name)
        _, pruned = scrape(p.policies)
        for key, v in after.items():
            if key[0].endswith(("_total", "_bucket", "_count", "_sum")):
                assert pruned[key] == v, key
    finally:
        p.close()


def test_free_space_per_store(tmp_path: Path, make_policies: Any) -> None:
    policies = make_policies()
    (tmp_path / "spool").mkdir()
    (tmp_path / "raw").mkdir()  # no archive folder: not mounted
    _, s = scrape(policies)
    usage = shutil.disk_usage(tmp_path)
    for store in ("spool", "raw"):
        assert value(s, "dashspool_store_up", store=store) == 1
        assert value(s, "dashspool_store_size_bytes", store=store) == usage.total
        free = value(s, "dashspool_store_free_bytes", store=store)
        assert abs(free - usage.free) < 64 << 20  # other writers on this disk meanwhile
        ratio = value(s, "dashspool_store_free_ratio", store=store)
        assert ratio == pytest.approx(free / usage.total)
    assert value(s, "dashspool_store_up", store="archive") == 0
    assert ("dashspool_store_free_ratio", (("store", "archive"),)) not in s


def test_no_ledger_and_no_spool_still_answer(tmp_path: Path, make_policies: Any) -> None:
    """Before anything ran: the scrape says what is missing instead of failing."""
    _, s = scrape(make_policies())
    assert value(s, "dashspool_spool_up") == 0
    assert value(s, "dashspool_ledger_up") == 0
    assert not any(n.startswith("dashspool_jobs_") for n in names(s))
    assert not any(n.startswith("dashspool_queue_jobs") for n in names(s))


def test_a_stage_gone_from_the_pipeline_keeps_its_counts(ran: Pipeline, tmp_path: Path) -> None:
    """Counters must not vanish when a stage is renamed in policies.toml."""
    renamed = chain_settings(("a", "b", "z"))
    policies = parse(renamed, source=None, base_dir=ran.policies.base_dir)
    _, s = scrape(policies)
    assert value(s, "dashspool_jobs_done_total", stage="c") == 3
    assert value(s, "dashspool_jobs_done_total", stage="z") == 0


def test_durations_land_in_the_right_buckets(ran: Pipeline) -> None:
    """Hand-made completion events of known durations, ingested like any other."""
    now = utcnow()
    events = [
        Event(
            event_id=Event.random_id(),
            kind=EventKind.STAGE_COMPLETED,
            at=now,
            device="gpu-1",
            stage="heavy",
            job=f"2024_0101_120000_x-{i:06x}",
            video_id=f"{i:06x}",
            attempt=1,
            data={"duration_seconds": d},
        )
        for i, d in enumerate((0.05, 4.0, 4.0, 45.0, 7200.0))
    ]
    ran.coordinator.ledger.ingest(events, now)
    _, s = scrape(ran.policies, now)

    def bucket(le: str) -> float:
        return value(s, "dashspool_stage_duration_seconds_bucket", stage="heavy", le=le)

    assert bucket("0.1") == 1
    assert bucket("2.5") == 1
    assert bucket("5.0") == 3
    assert bucket("60.0") == 4
    assert bucket("3600.0") == 4
    assert bucket("+Inf") == 5
    assert value(s, "dashspool_stage_duration_seconds_sum", stage="heavy") == pytest.approx(7253.05)
    assert value(s, "dashspool_jobs_done_total", stage="heavy") == 5


def test_metric_names_follow_the_conventions(ran: Pipeline) -> None:
    _, s = scrape(ran.policies)
    for name in names(s):
        assert name.startswith("dashspool_"), name
    assert "dashspool_spool_up" in names(s)


@needs_promtool
def test_promtool_accepts_the_output_without_lint_problems(ran: Pipeline) -> None:
    """Every kind of series present: queues, a paused stage, heartbeats (one unreadable), a
    failed job, stores (one missing), the ledger's counters and histograms, ledger lag."""
    now = utcnow()
    spool = ran.spool
    spool.pause("b", "test")
    spool.beat("jetson-1", {"stage": "b", "state": "running"}, now - timedelta(hours=2))
    root = spool.backend.local_root
    assert root is not None
    (root / "devices" / "broken.json").write_text("{not json")
    Switch.broken = True
    ran.workers[0] = Worker(spool, ran.policies, Switch("a", Switch.Settings()), "dev1")
    (root / "inbox" / "2024_0101_130000_000009F.MP4").write_bytes(b"late clip")
    ran.workers[0].loop_once(now)  # adopted, then deferred: an event waits for the ledger
    body, s = scrape(ran.policies, now + timedelta(hours=1))
    assert value(s, "dashspool_queue_jobs", stage="a", queue="deferred") == 1
    assert value(s, "dashspool_ledger_backlog_events") > 0
    assert value(s, "dashspool_store_up", store="archive") == 0
    promtool_check(body)


@needs_promtool
def test_promtool_accepts_the_output_with_nothing_there(make_policies: Any) -> None:
    promtool_check(metrics.exposition(make_policies())[0])


@needs_promtool
def test_promtool_check_is_strict() -> None:
    """The check above would notice: a counter without _total, a gauge without HELP."""
    with pytest.raises(AssertionError):
        promtool_check(b"# TYPE jobs counter\njobs 1\n# TYPE x_seconds gauge\nx_seconds 2\n")


def completions(stage: str, durations: tuple[float, ...], now: Any) -> list[Event]:
    return [
        Event(
            event_id=Event.random_id(),
            kind=EventKind.STAGE_COMPLETED,
            at=now,
            device="gpu-1",
            stage=stage,
            job=f"2024_0101_130000_y-{i:06x}",
            video_id=f"{i:06x}",
            attempt=1,
            data={"duration_seconds": d},
        )
        for i, d in enumerate(durations)
    ]


def test_each_scrape_reads_only_new_events_and_still_equals_a_full_count(ran: Pipeline) -> None:
    now = utcnow()
    first = metrics.ledger_totals(ran.policies)
    assert first is not None and first.counts["done"]["a"] == 3
    ran.coordinator.ledger.ingest(completions("a", (0.2, 7.0), now), now)
    second = metrics.ledger_totals(ran.policies)
    full = metrics.ledger_totals_uncached(ran.policies)
    assert second is not None
    assert second.counts == full.counts and second.counts["done"]["a"] == 5
    assert second.durations.keys() == full.durations.keys()
    for stage, (cumulative, n, total) in full.durations.items():
        assert second.durations[stage][:2] == (cumulative, n)
        assert second.durations[stage][2] == pytest.approx(total)
    assert first.counts["done"]["a"] == 3  # what a scrape returned is not changed afterwards


def test_a_restored_ledger_is_counted_afresh(ran: Pipeline) -> None:
    """Restore puts another file in place: the counts are that file's, not the old sum."""
    import sqlite3

    now = utcnow()
    path = ran.policies.ledger_path
    backup = path.with_name("backup.db")
    with sqlite3.connect(path) as src, sqlite3.connect(backup) as dst:
        src.backup(dst)
    ran.coordinator.ledger.ingest(completions("heavy", (1.0,) * 4, now), now)
    _, s = scrape(ran.policies, now)
    assert value(s, "dashspool_jobs_done_total", stage="heavy") == 4
    ran.close()
    for extra in ("-wal", "-shm"):
        path.with_name(path.name + extra).unlink(missing_ok=True)
    backup.replace(path)
    _, s = scrape(ran.policies, now)
    assert ("dashspool_jobs_done_total", (("stage", "heavy"),)) not in s
    assert value(s, "dashspool_jobs_done_total", stage="a") == 3
