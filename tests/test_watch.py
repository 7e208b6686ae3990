"""The watch loop: inotify wakes it, the periodic rescan is the truth, signals stop it cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import chain_settings, drop, listing, write_settings

from watchers import app
from watchers.config import Policies
from watchers.spool import Spool
from watchers.watch import Runner, _Wake


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait on a condition with a deadline, checking on a short event wait (not a fixed sleep)."""
    tick = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not condition():
            if deadline.is_set():
                raise AssertionError("condition not met in time")
            tick.wait(0.02)
    finally:
        timer.cancel()


def start_runner(
    spool: Spool, policies: Policies, **kwargs: Any
) -> tuple[Runner, threading.Thread]:
    stop = threading.Event()
    workers = app.build_workers(spool, policies, policies.order(), "dev1", stop)
    runner = Runner(spool, policies, "dev1", workers, stop=stop, **kwargs)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def test_lost_inotify_events_are_made_good_by_the_rescan(
    spool: Spool, make_policies: Callable[..., Policies], monkeypatch: pytest.MonkeyPatch
) -> None:
    policies = make_policies(spool={"rescan_seconds": 0.3})
    dropped: list[str] = []
    monkeypatch.setattr(_Wake, "dispatch", lambda self, event: dropped.append(event.src_path))
    runner, thread = start_runner(spool, policies)
    try:
        wait_for(lambda: (spool.backend.local_root / "devices/dev1.json").exists())  # type: ignore[operator]
        for i in range(30):
            drop(spool, f"clip{i}.MP4")
        wait_for(lambda: len(listing(spool, "c/done")) == 30)
    finally:
        runner.request_stop()
        thread.join(10)
    assert dropped, "the observer saw events (and they were all thrown away)"
    assert not thread.is_alive()


def test_inotify_wakes_the_loop_long_before_the_rescan(
    spool: Spool, make_policies: Callable[..., Policies]
) -> None:
    policies = make_policies(spool={"rescan_seconds": 600})
    runner, thread = start_runner(spool, policies)
    try:
        wait_for(lambda: (spool.backend.local_root / "devices/dev1.json").exists())  # type: ignore[operator]
        drop(spool, "clip.MP4")
        wait_for(lambda: len(listing(spool, "c/done")) == 1, timeout=20)  # << 600 s rescan
    finally:
        runner.request_stop()
        thread.join(10)
    assert not thread.is_alive()


def test_until_idle_and_max_jobs(spool: Spool, policies: Policies) -> None:
    for i in range(5):
        drop(spool, f"clip{i}.MP4")
    workers = app.build_workers(spool, policies, policies.order(), "dev1")
    assert Runner(spool, policies, "dev1", workers, max_jobs=4).run() == 0
    assert sum(len(listing(spool, f"{s}/done")) for s in "abc") == 4
    workers = app.build_workers(spool, policies, policies.order(), "dev1")
    assert Runner(spool, policies, "dev1", workers, until_idle=True).run() == 0
    assert len(listing(spool, "c/done")) == 5


def test_stages_are_torn_down_once_when_the_runner_stops(
    spool: Spool, policies: Policies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Models loaded in setup are released when the watcher stops, even when a teardown fails."""
    drop(spool, "clip.MP4")
    workers = app.build_workers(spool, policies, policies.order(), "dev1")
    torn: list[str] = []

    def teardown(name: str) -> Callable[[], None]:
        def run() -> None:
            torn.append(name)
            if name == "a":
                raise OSError("model session already gone")

        return run

    for w in workers:
        monkeypatch.setattr(w.stage, "teardown", teardown(w.name))
    assert Runner(spool, policies, "dev1", workers, until_idle=True).run() == 0
    assert sorted(torn) == ["a", "b", "c"]
    assert len(listing(spool, "c/done")) == 1


def test_a_coordinator_on_its_own_reports_its_scheduled_jobs(
    spool: Spool, policies: Policies
) -> None:
    """`dashspool coordinator` alone: its heartbeat lists every scheduler job for `status`."""
    import json

    coord = app.build_coordinator(spool, policies)
    runner = Runner(spool, policies, coord.device, [], coord)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    beat = spool.backend.local_root / f"devices/{coord.device}.json"  # type: ignore[operator]
    try:
        wait_for(lambda: beat.exists() and "reaper" in json.loads(beat.read_text()).get("jobs", {}))
        runner._heartbeat()
        jobs = json.loads(beat.read_text())["jobs"]
        assert {"reaper", "deferred-release", "retention", "backup"} <= set(jobs)
        assert jobs["backup"]["next_run"].endswith("T02:00:00+00:00")
    finally:
        runner.request_stop()
        thread.join(10)
        coord.ledger.close()


def slow_job(tmp_path: Path, delay_seconds: float) -> Path:
    """Settings for a two-stage chain whose first stage takes a while, and one drop."""
    settings = chain_settings(("a", "b"))
    settings["stages"]["a"]["delay_seconds"] = delay_seconds
    cfg = write_settings(tmp_path / "policies.toml", settings)
    (tmp_path / "spool/inbox").mkdir(parents=True)
    (tmp_path / "spool/inbox/clip.MP4").write_bytes(b"x")
    return cfg


def watch_a(cfg: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "watchers.cli",
        "--config",
        str(cfg),
        "watch",
        "a",
        "--device-id",
        "d1",
    ]


def test_sigterm_finishes_the_job_in_hand_then_exits(tmp_path: Path) -> None:
    cfg = slow_job(tmp_path, delay_seconds=1.5)
    proc = subprocess.Popen(
        watch_a(cfg),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until the job is claimed and the slow stage is running
        if "claimed" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "finishing the current job" in rest and "completed" in rest
    assert len(list((tmp_path / "spool/b/inbox").iterdir())) == 1
    assert list((tmp_path / "spool/a/work/d1").iterdir()) == []


def test_second_signal_aborts_and_the_next_start_recovers(tmp_path: Path) -> None:
    cfg = slow_job(tmp_path, delay_seconds=3)
    args = watch_a(cfg)
    proc = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "claimed" in line:
            break
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:  # signals sent back to back would merge into one: wait for the first
        if "finishing the current job" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest
    assert len(list((tmp_path / "spool/a/work/d1").iterdir())) == 1  # claim left for recovery
    again = subprocess.run(
        [*args, "--until-idle"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert "recovered own claim" in again.stderr
    assert len(list((tmp_path / "spool/b/inbox").iterdir())) == 1


def test_a_device_id_in_use_by_a_live_process_is_refused(tmp_path: Path) -> None:
    cfg = write_settings(tmp_path / "policies.toml", chain_settings(("a", "b")))
    args = watch_a(cfg)
    first = subprocess.Popen(args, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "spool/devices/d1.json").exists())
        second = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert "device id 'd1' is in use by pid" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    assert first.returncode == 0
    # stopped cleanly: the id is free again
    again = subprocess.run(
        [*args, "--until-idle"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
