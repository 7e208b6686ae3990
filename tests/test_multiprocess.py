"""Real processes on a real spool: a 4-way claim race and kill -9 at random instants."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import chain_settings, listing, write_settings

from watchers import app
from watchers.clock import utcnow
from watchers.config import load
from watchers.sidecar import Sidecar

pytestmark = pytest.mark.slow


def cli(cfg: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DASHSPOOL_CONFIG": str(cfg), "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "watchers.cli", "--log-level", "WARNING", *args],
            cwd=cfg.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    rc = proc.wait(timeout)
    assert rc == 0, f"{proc.args} exited {rc}:\n{log.read_text()[-3000:]}"


def event_files(spool_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in (spool_dir / "ledger/inbox").iterdir()]


def test_four_processes_claim_each_of_1000_jobs_exactly_once(tmp_path: Path) -> None:
    cfg = write_settings(tmp_path / "policies.toml", chain_settings(("a",)))
    policies = load(cfg)
    spool = app.open_spool(policies)
    spool.ensure_layout(["a"])
    names = []
    for i in range(1000):
        name = f"2024_0101_{i:06d}_race-{i:06x}"
        staging = spool.staging("producer", name)
        staging.path("data.bin").write_bytes(b"%d" % i)
        spool.publish(
            staging,
            Sidecar(
                job=name,
                video_id=f"{i:06x}",
                source_name=f"{i}.MP4",
                stage="a",
                created_at=utcnow(),
            ),
            "a",
        )
        names.append(name)
    procs = [
        cli(cfg, "watch", "a", "--device-id", f"w{n}", "--until-idle", log=tmp_path / f"w{n}.log")
        for n in range(4)
    ]
    for n, p in enumerate(procs):
        finish(p, tmp_path / f"w{n}.log")
    assert listing(spool, "a/done") == sorted(names)  # no ".1" second copies
    assert listing(spool, "a/inbox") == []
    for n in range(4):
        assert listing(spool, f"a/work/w{n}") == []
    events = event_files(spool.backend.local_root)  # type: ignore[arg-type]
    started = Counter(e["job"] for e in events if e["kind"] == "stage.started")
    completed = Counter(e["job"] for e in events if e["kind"] == "stage.completed")
    assert set(started) == set(names) and set(started.values()) == {1}
    assert set(completed) == set(names) and set(completed.values()) == {1}
    by_device = Counter(e["device"] for e in events if e["kind"] == "stage.completed")
    assert sum(by_device.values()) == 1000


def test_kill_9_at_random_instants_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    settings = chain_settings(
        ("a", "b", "c"),
        spool={"rescan_seconds": 0.2, "heartbeat_seconds": 0.3, "lease_seconds": 2},
        retry={"max_attempts": 1000},
        coordinator={"reaper_interval_seconds": 1, "deferred_interval_seconds": 0.5},
    )
    for name in ("a", "b", "c"):
        settings["stages"][name]["delay_seconds"] = 0.005
    cfg = write_settings(tmp_path / "policies.toml", settings)
    policies = load(cfg)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    root = spool.backend.local_root
    assert root is not None
    for i in range(500):
        (root / "inbox" / f"clip{i:03d}.MP4").write_bytes(b"clip %d" % i)

    roles = {
        "wa": ("watch", "a", "--device-id", "wa"),
        "wb": ("watch", "b", "--device-id", "wb"),
        "wc": ("watch", "c", "--device-id", "wc"),
        "co": ("coordinator",),
    }
    procs = {k: cli(cfg, *args, log=tmp_path / f"{k}.log") for k, args in roles.items()}
    rng = random.Random(1234)
    kills = 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.4))  # a random instant, not a wait for a condition
        victim = rng.choice(["wa", "wb", "wc", "wa", "wb", "wc", "co"])
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        kills += 1
        procs[victim] = cli(cfg, *roles[victim], log=tmp_path / f"{victim}.log")
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
        p.wait(10)

    # restart every role once more and let the pipeline drain
    for key in ("co", "wa", "wb", "wc", "co"):
        finish(
            cli(cfg, *roles[key], "--until-idle", log=tmp_path / f"{key}.log"),
            tmp_path / f"{key}.log",
        )

    done = listing(spool, "c/done")
    assert len(done) == 500, f"{len(done)} jobs reached the end"
    assert listing(spool, "a/done") == done == listing(spool, "b/done")  # once each, no ".1"
    for stage in ("a", "b", "c"):
        for q in ("inbox", "deferred", "failed"):
            assert listing(spool, f"{stage}/{q}") == [], f"{stage}/{q}"
        for dev in listing(spool, f"{stage}/work"):
            assert listing(spool, f"{stage}/work/{dev}") == [], f"{stage}/work/{dev}"
    assert listing(spool, "inbox") == ["duplicates", "rejected"]
    assert listing(spool, "ledger/inbox") == []
    for job in done:
        payload = next((root / "c/done" / job).glob("clip*.MP4"))
        assert payload.read_bytes() == b"clip %d" % int(payload.stem[4:])
    ledger = app.open_ledger(policies, read_only=True)
    assert ledger.counts() == {"done": 500}
    assert {v.job for v in ledger.videos(limit=1000)} == set(done)
    recovered = [
        e
        for e in ledger.events_since(utcnow().replace(year=2000), 100_000)
        if e.kind == "job.recovered"
    ]
    assert kills >= 20
    assert recovered, "no kill landed while a job was claimed: the test exercised nothing"
