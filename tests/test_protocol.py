"""The spool protocol: publish, claim, complete, defer/fail, recover, reap — and crash recovery at
every single storage operation of a job's trip through the pipeline."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import Pipeline, drop, listing
from sqlmodel import select

from stages.copy import CopyStage
from watchers import app
from watchers.backends.local import LocalBackend
from watchers.clock import utcnow
from watchers.config import Policies
from watchers.errors import TransientError
from watchers.ledger import StageAttempt
from watchers.sidecar import Sidecar
from watchers.spool import Spool
from watchers.worker import Worker


def make_job(
    spool: Spool, stage: str, name: str = "2024_0101_120000_x-abcdef", **fields: Any
) -> str:
    staging = spool.staging("producer", name)
    staging.path("data.bin").write_bytes(b"data")
    fields.setdefault("created_at", utcnow())
    sidecar = Sidecar(
        job=name, video_id=name.rsplit("-", 1)[1], source_name="x.MP4", stage=stage, **fields
    )
    assert spool.publish(staging, sidecar, stage)
    return name


def test_drop_flows_through_the_chain_with_its_bytes(pipeline: Pipeline, spool: Spool) -> None:
    drop(spool, "2024_0101_123456_000120F.MP4", b"video bytes")
    assert pipeline.drain() == 3
    (job,) = listing(spool, "c/done")
    assert job.startswith("2024_0101_123456_000120F-") and len(job.rsplit("-", 1)[1]) == 6
    for stage in "abc":
        assert listing(spool, f"{stage}/inbox") == []
        assert listing(spool, f"{stage}/work/dev1") == []
        assert listing(spool, f"{stage}/done") == [job]
    assert (
        spool.backend.local_root / "c/done" / job / "2024_0101_123456_000120F.MP4"
    ).read_bytes() == b"video bytes"  # type: ignore[operator]
    sidecar = spool.read_sidecar_at(f"c/done/{job}")
    assert [h.stage for h in sidecar.history] == ["a", "b"]
    video = pipeline.coordinator.ledger.videos()[0]
    assert (video.state, video.source_name, video.job) == (
        "done",
        "2024_0101_123456_000120F.MP4",
        job,
    )
    assert listing(spool, ".tmp") == []


def test_publish_is_invisible_until_the_rename(spool: Spool) -> None:
    staging = spool.staging("dev", "2024_0101_120000_x-abcdef")
    staging.path("big.bin").write_bytes(b"x" * 1000)
    assert listing(spool, "a/inbox") == []  # written, not yet published
    sidecar = Sidecar(
        job="2024_0101_120000_x-abcdef",
        video_id="abcdef",
        source_name="x",
        stage="a",
        created_at=utcnow(),
    )
    assert spool.publish(staging, sidecar, "a")
    assert listing(spool, "a/inbox") == ["2024_0101_120000_x-abcdef"]
    assert listing(spool, ".tmp") == []
    # a second publish of the same output is refused, the first is untouched
    again = spool.staging("dev", "2024_0101_120000_x-abcdef")
    again.path("big.bin").write_bytes(b"different")
    assert not spool.publish(again, sidecar, "a")
    assert (
        spool.backend.local_root / "a/inbox/2024_0101_120000_x-abcdef/big.bin"
    ).read_bytes() == b"x" * 1000  # type: ignore[operator]


def test_claim_is_exclusive(spool: Spool) -> None:
    job = make_job(spool, "a")
    assert spool.claim("a", job, "dev1") is not None
    assert spool.claim("a", job, "dev2") is None
    assert listing(spool, "a/work/dev1") == [job]


def test_priority_then_oldest(spool: Spool) -> None:
    now = utcnow()
    make_job(spool, "a", "old-aaaaa1", created_at=now - timedelta(hours=2))
    make_job(spool, "a", "new-aaaaa2", created_at=now)
    make_job(spool, "a", "locked-aaaaa3", created_at=now, priority=10)
    assert spool.pending("a") == ["locked-aaaaa3", "old-aaaaa1", "new-aaaaa2"]


def test_retry_that_finds_its_output_just_finishes(pipeline: Pipeline, spool: Spool) -> None:
    drop(spool, "clip.MP4")
    worker_a = pipeline.workers[0]
    assert worker_a.loop_once()
    (job,) = listing(spool, "b/inbox")
    # simulate "crashed after publishing, before dropping the claim": put the input back
    spool.backend.rename(f"a/done/{job}", f"a/inbox/{job}")
    assert worker_a.loop_once()
    assert listing(spool, "b/inbox") == [job]  # still exactly one output
    assert listing(spool, "a/done") == [job]
    pipeline.drain()
    assert listing(spool, "c/done") == [job]


class Flaky(CopyStage):
    failures = 0

    def process(self, job: Sidecar, ctx: Any) -> None:
        if Flaky.failures > 0:
            Flaky.failures -= 1
            raise TransientError("NAS busy")
        super().process(job, ctx)


@pytest.fixture(autouse=True)
def _no_leftover_failures() -> Iterator[None]:
    yield
    Flaky.failures = 0  # even when a test using Flaky fails


def _worker(spool: Spool, policies: Policies, stage_cls: type = Flaky, name: str = "a") -> Worker:
    stage = stage_cls(name, stage_cls.Settings())
    return Worker(spool, policies, stage, "dev1")


def test_transient_errors_are_retried_in_process(spool: Spool, policies: Policies) -> None:
    Flaky.failures = 1  # in_process_attempts = 2 in the test settings
    w = _worker(spool, policies)
    make_job(spool, "a")
    assert w.loop_once()
    assert listing(spool, "b/inbox") == ["2024_0101_120000_x-abcdef"]


def test_repeated_failure_defers_then_fails_with_error_file(
    spool: Spool, policies: Policies
) -> None:
    Flaky.failures = 100
    w = _worker(spool, policies)
    job = make_job(spool, "a")
    now = utcnow()
    assert w.loop_once(now)
    assert listing(spool, "a/deferred") == [job]
    sc = spool.read_sidecar_at(f"a/deferred/{job}")
    assert sc.attempts == 1 and sc.last_error == "NAS busy" and sc.not_before is not None
    for i in range(2, 4):  # max_attempts = 3
        later = now + timedelta(seconds=i)
        assert w.loop_once(later)
    assert listing(spool, "a/deferred") == []
    assert listing(spool, "a/failed") == [job, f"{job}.error.json"]
    error = json.loads((spool.backend.local_root / f"a/failed/{job}.error.json").read_text())  # type: ignore[operator]
    assert error["type"] == "TransientError" and error["message"] == "NAS busy"
    assert (
        error["attempts"] == 3 and error["device"] == "dev1" and "Traceback" in error["traceback"]
    )
    assert (spool.backend.local_root / f"a/failed/{job}/data.bin").read_bytes() == b"data"  # type: ignore[operator]


def test_deferred_job_waits_for_its_time(spool: Spool, make_policies: Any) -> None:
    policies = make_policies(retry={"defer_initial_seconds": 60, "defer_max_seconds": 60})
    Flaky.failures = 2
    w = _worker(spool, policies)
    job = make_job(spool, "a")
    now = utcnow()
    assert w.loop_once(now)
    assert listing(spool, "a/deferred") == [job]
    assert not w.loop_once(now + timedelta(seconds=30))
    assert w.loop_once(now + timedelta(seconds=80))
    assert listing(spool, "b/inbox") == [job]


def test_own_claims_are_recovered_on_start(spool: Spool, policies: Policies) -> None:
    job = make_job(spool, "a")
    assert spool.claim("a", job, "dev1")  # then the device died
    w = _worker(spool, policies, CopyStage)
    assert w.start() == 1
    assert listing(spool, "a/work/dev1") == []
    assert spool.read_sidecar_at(f"a/inbox/{job}").attempts == 1
    assert w.loop_once()
    assert listing(spool, "b/inbox") == [job]


def test_reaper_returns_claims_of_silent_devices(pipeline: Pipeline, spool: Spool) -> None:
    job = make_job(spool, "b")
    now = utcnow()
    spool.beat("ghost", {"stage": "b", "state": "running"}, now - timedelta(seconds=60))
    spool.beat("alive", {"stage": "b", "state": "running"}, now)
    assert spool.claim("b", job, "ghost")
    other = make_job(spool, "b", "2024_0101_120000_y-bbbbbb")
    assert spool.claim("b", other, "alive")
    assert pipeline.coordinator.reap(now) == 1
    assert listing(spool, "b/work/ghost") == []
    assert listing(spool, "b/work/alive") == [other]
    assert listing(spool, "b/inbox") == [job]


def test_pause_stops_claims_until_resume(pipeline: Pipeline, spool: Spool) -> None:
    spool.pause("a", "maintenance")
    drop(spool, "clip.MP4")
    assert pipeline.drain() == 0
    assert (spool.backend.local_root / "a/PAUSED").is_file()  # type: ignore[operator]
    assert spool.resume("a")
    assert pipeline.drain() == 3


def test_drops_settle_and_partial_names_are_ignored(spool: Spool, make_policies: Any) -> None:
    policies = make_policies(spool={"settle_seconds": 5})
    w = _worker(spool, policies, CopyStage)
    for name in (".hidden.MP4", "clip.MP4.part", "download.crdownload", "x.tmp", "backup~"):
        drop(spool, name)
    path = drop(spool, "clip.MP4", b"first half")
    now = utcnow()
    assert not w.loop_once(now)  # first sight
    path.write_bytes(b"first half, second half")  # still growing
    os.utime(path, (now.timestamp() + 1, now.timestamp() + 1))
    assert not w.loop_once(now + timedelta(seconds=4))
    assert not w.loop_once(now + timedelta(seconds=8))  # changed at 4 s: not yet settled
    assert w.loop_once(now + timedelta(seconds=10))
    assert sorted(listing(spool, "inbox")) == sorted(
        [
            ".hidden.MP4",
            "backup~",
            "clip.MP4.part",
            "download.crdownload",
            "duplicates",
            "rejected",
            "x.tmp",
        ]
    )
    (job,) = listing(spool, "b/inbox")
    assert (
        spool.backend.local_root / "b/inbox" / job / "clip.MP4"
    ).read_bytes() == b"first half, second half"  # type: ignore[operator]


def test_ledger_ingestion_is_idempotent(pipeline: Pipeline, spool: Spool) -> None:
    drop(spool, "clip.MP4")
    root = spool.backend.local_root
    assert root is not None
    for w in pipeline.workers:
        w.loop_once()
    saved = {p.name: p.read_bytes() for p in (root / "ledger/inbox").iterdir()}
    assert len(saved) >= 6
    pipeline.coordinator.ingest()
    for name, data in saved.items():  # the same events delivered again (e.g. crash before delete)
        (root / "ledger/inbox" / name).write_bytes(data)
    assert pipeline.coordinator.ingest() == 0
    with pipeline.coordinator.ledger.reading() as s:
        rows = s.exec(select(StageAttempt)).all()
    assert sorted((r.stage, r.outcome) for r in rows) == [
        ("a", "completed"),
        ("b", "completed"),
        ("c", "completed"),
    ]


# ---------------------------------------------------------------------------------------------
# Fault injection: stop the process at the N-th storage operation, restart, check the repair.


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs, not even ``except Exception``."""


class CrashingBackend(LocalBackend):
    MUTATING = (
        "write_bytes",
        "open_write",
        "replace",
        "rename",
        "makedirs",
        "remove_file",
        "remove_dir",
        "fsync_dir",
    )

    def __init__(self, root: Path, crash_at: int | None) -> None:
        super().__init__(root)
        self.ops = 0
        self.crash_at = crash_at
        self.trace: list[str] = []

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in CrashingBackend.MUTATING:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.ops += 1
                self.trace.append(f"{name}{args}")
                if self.crash_at is not None and self.ops == self.crash_at:
                    raise Crash(f"crash at op {self.ops}: {name}{args}")
                return attr(*args, **kwargs)

            return counted
        return attr


def _crashing_spool(policies: Policies, crash_at: int | None) -> Spool:
    base = app.open_spool(policies)
    root = base.backend.local_root
    assert root is not None
    return Spool(CrashingBackend(root, crash_at), fsync=True, roots=base.roots)


def _run_once(policies: Policies, crash_at: int | None) -> tuple[int, bool]:
    spool = _crashing_spool(policies, None)
    spool.ensure_layout(policies.order())
    backend = spool.backend
    assert isinstance(backend, CrashingBackend)
    backend.ops, backend.crash_at = 0, crash_at  # count from here: a device finds the layout made
    p = Pipeline(spool, policies)
    try:
        p.start()
        p.drain()
        return backend.ops, False
    except Crash:
        return backend.ops, True
    finally:
        p.close()


def test_recovery_repairs_a_crash_at_every_storage_operation(
    make_policies: Any, tmp_path: Path
) -> None:
    policies = make_policies(stages=("a", "b"), retry={"max_attempts": 10})
    spool_dir = Path(policies.spool_url)
    clean_ops, crashed = _run_once_with_drop(policies, spool_dir, None)
    assert not crashed and clean_ops > 20
    for n in range(1, clean_ops + 1):
        _reset(tmp_path)
        ops, crashed = _run_once_with_drop(policies, spool_dir, n)
        assert crashed, f"op {n} did not crash (ran {ops})"
        # restart: a fresh process with the same device id recovers and finishes
        _run_once(policies, None)
        spool = app.open_spool(policies)
        where = f"after a crash at op {n}"
        (job,) = (listing(spool, "b/done"),)
        assert len(job) == 1, f"{where}: b/done = {job}"
        for stage in ("a", "b"):
            assert listing(spool, f"{stage}/inbox") == [], where
            assert listing(spool, f"{stage}/work/dev1") == [], where
            assert listing(spool, f"{stage}/failed") == [], where
        assert listing(spool, "inbox") == ["duplicates", "rejected"], where
        assert listing(spool, ".tmp") == [], where
        assert listing(spool, "ledger/inbox") == [], where
        payload = spool.backend.local_root / "b/done" / job[0] / "clip.MP4"  # type: ignore[operator]
        assert payload.read_bytes() == b"precious", where
        ledger = app.open_ledger(policies, read_only=True)
        (video,) = ledger.videos()
        assert video.state == "done", f"{where}: ledger says {video.state}"
        ledger.close()


def _reset(tmp_path: Path) -> None:
    import shutil

    for name in ("spool", "dashspool.db", "dashspool.db-wal", "dashspool.db-shm"):
        p = tmp_path / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _run_once_with_drop(
    policies: Policies, spool_dir: Path, crash_at: int | None
) -> tuple[int, bool]:
    (spool_dir / "inbox").mkdir(parents=True, exist_ok=True)
    (spool_dir / "inbox" / "clip.MP4").write_bytes(b"precious")
    return _run_once(policies, crash_at)


class Annotate(CopyStage):
    """Uses the Context API the real stages will use: outputs, facts, refs, identity updates."""

    def process(self, job: Sidecar, ctx: Any) -> None:
        raw = ctx.resolve_ref("video") if "video" in ctx.refs else None
        ctx.write_output("notes.txt", b"seen " + job.source_name.encode())
        ctx.set_facts(inputs=list(ctx.inputs), had_ref=raw is not None)
        ctx.set_ref("video", "raw", "2024/01/01/clip.MP4")
        ctx.update(priority=5)


def test_context_api_outputs_facts_refs_and_updates(spool: Spool, policies: Policies) -> None:
    (Path(policies.path(policies.stores.raw)) / "2024/01/01").mkdir(parents=True)
    job = make_job(spool, "a")
    w = _worker(spool, policies, Annotate)
    assert w.loop_once()
    out = spool.read_sidecar_at(f"b/inbox/{job}")
    assert out.files == ("notes.txt",)  # only what the stage wrote travels on
    assert out.facts["a"] == {"inputs": ["data.bin"], "had_ref": False}
    assert out.refs == {"video": "raw:2024/01/01/clip.MP4"}
    assert out.priority == 5 and out.stage == "b" and out.attempts == 0
    notes = spool.backend.local_root / "b/inbox" / job / "notes.txt"  # type: ignore[operator]
    assert notes.read_bytes() == b"seen x.MP4"


class Escape(CopyStage):
    def process(self, job: Sidecar, ctx: Any) -> None:
        ctx.set_ref("video", "raw", "../../etc/passwd")


def test_a_stage_cannot_point_a_ref_outside_its_root(spool: Spool, policies: Policies) -> None:
    job = make_job(spool, "a")
    assert _worker(spool, policies, Escape).loop_once()
    assert listing(spool, "a/failed") == [job, f"{job}.error.json"]
    assert listing(spool, "b/inbox") == []


def test_find_job_names_only_jobs_never_their_error_notes(spool: Spool) -> None:
    """A requeue leaves ``<job>.error.json.requeued`` in failed/: a later lookup (a second
    requeue) must not take that note for a job and move it to the inbox."""
    job = "2026_0513_160000_000104F-0650f9"
    failed = spool.backend.local_root / "a" / "failed"  # type: ignore[operator]
    (failed / job).mkdir()
    (failed / job / "job.json").write_text("{}")
    (failed / f"{job}.error.json").write_text("{}")
    (failed / f"{job}.error.json.requeued").write_text("{}")
    (failed / f"{job}.error.json.requeued-1").write_text("{}")
    (failed / ".hidden-0650f9").mkdir()
    assert list(spool.find_job(["a"], "2026_0513")) == [("a", "failed", job)]
    assert list(spool.find_job(["a"], "0650f9")) == [("a", "failed", job)]
    assert spool.counts("a", datetime.now(timezone.utc))["failed"] == 1, "notes are no jobs"
