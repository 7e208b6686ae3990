"""Bad spool contents from other machines: each ends in failed/ (or inbox/rejected/) with a clear
sentence, nothing is deleted, and the worker goes on to the next job."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Pipeline, drop, listing

from watchers.clock import utcnow
from watchers.sidecar import Sidecar
from watchers.spool import Spool

JOB = "2024_0101_120000_bad-abcdef"


def sidecar_dict(**override: object) -> dict[str, object]:
    base = Sidecar(
        job=JOB,
        video_id="abcdef",
        source_name="bad.MP4",
        stage="b",
        created_at=utcnow(),
        files=("data.bin",),
    ).model_dump(mode="json")
    base.update(override)
    return base


def put_job(root: Path, sidecar: object | None, *, raw: bytes | None = None) -> Path:
    job = root / "b/inbox" / JOB
    job.mkdir()
    (job / "data.bin").write_bytes(b"keep me")
    if raw is not None:
        (job / "job.json").write_bytes(raw)
    elif sidecar is not None:
        (job / "job.json").write_text(json.dumps(sidecar))
    return job


def _outside(root: Path) -> Path:
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret").write_text("do not touch")
    return outside


def _ref_through_link(root: Path) -> None:
    (root.parent / "raw").mkdir(exist_ok=True)
    os.symlink(_outside(root), root.parent / "raw" / "link")  # raw/link -> outside the roots
    put_job(root, sidecar_dict(refs={"video": "raw:link/secret"}))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "malformed JSON": (lambda r: put_job(r, None, raw=b"{not json"), "malformed sidecar: not JSON"),
    "not an object": (lambda r: put_job(r, None, raw=b"[1, 2]"), "expected a JSON object"),
    "missing sidecar": (lambda r: put_job(r, None), "missing sidecar job.json"),
    "unknown schema": (
        lambda r: put_job(r, sidecar_dict(schema_version=99)),
        "sidecar schema version 99 is not understood by this dashspool",
    ),
    "unknown key": (lambda r: put_job(r, sidecar_dict(evil=1)), "evil: unknown key"),
    "wrong job name": (
        lambda r: put_job(r, sidecar_dict(job="2024_0101_120000_other-fedcba")),
        "sidecar names another job",
    ),
    "payload path traversal": (
        lambda r: put_job(r, sidecar_dict(files=["../../etc/passwd"])),
        "is not a plain file name",
    ),
    "listed payload missing": (
        lambda r: put_job(r, sidecar_dict(files=["data.bin", "gone.bin"])),
        "payload file 'gone.bin' listed but missing",
    ),
    "ref outside roots": (
        lambda r: put_job(r, sidecar_dict(refs={"video": "raw:../../../etc/passwd"})),
        "must be relative and stay inside its root",
    ),
    "ref to unknown root": (
        lambda r: put_job(r, sidecar_dict(refs={"video": "home:.ssh/id_rsa"})),
        "unknown root",
    ),
    "ref escaping by symlink": (
        lambda r: _ref_through_link(r),
        "resolves outside",
    ),
    "symlink as job": (
        lambda r: os.symlink(_outside(r), r / "b/inbox" / JOB),
        "a job must be a folder, found a link",
    ),
    "file as job": (
        lambda r: (r / "b/inbox" / JOB).write_bytes(b"just a file"),
        "a job must be a folder, found a file",
    ),
    "symlink inside job": (
        lambda r: os.symlink(_outside(r) / "secret", put_job(r, sidecar_dict()) / "peek"),
        "symbolic links are not allowed in jobs",
    ),
    "oversized sidecar": (
        lambda r: put_job(r, None, raw=b" " * (2 << 20)),
        "larger than",
    ),
    "bad job name": (
        lambda r: (r / "b/inbox" / "no-hash-here").mkdir(),
        "is not a job name",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_job_goes_to_failed_with_a_reason_and_the_worker_goes_on(
    case: str, pipeline: Pipeline, spool: Spool
) -> None:
    root = spool.backend.local_root
    assert root is not None
    make, sentence = CASES[case]
    make(root)
    (name,) = [n for n in listing(spool, "b/inbox")]
    drop(spool, "good.MP4", b"good")  # a good job behind the bad one
    pipeline.drain()
    assert listing(spool, "b/failed") == sorted([name, f"{name}.error.json"])
    error = json.loads((root / "b/failed" / f"{name}.error.json").read_text())
    assert sentence in error["message"], error["message"]
    assert error["device"] == "dev1" and error["stage"] == "b"
    (good,) = listing(spool, "c/done")
    assert "_good-" in good
    assert listing(spool, "b/work/dev1") == []
    failed = root / "b/failed" / name
    if failed.is_dir() and not failed.is_symlink() and (failed / "data.bin").exists():
        assert (failed / "data.bin").read_bytes() == b"keep me"  # nothing deleted
    outside = root.parent / "outside" / "secret"
    if outside.exists():
        assert outside.read_text() == "do not touch"
    failures = pipeline.coordinator.ledger.failures()
    assert any(f.kind == "stage.failed" and sentence in f.data for f in failures)


def test_symlink_and_fifo_drops_are_rejected_not_followed(pipeline: Pipeline, spool: Spool) -> None:
    root = spool.backend.local_root
    assert root is not None
    os.symlink(_outside(root) / "secret", root / "inbox" / "link.MP4")
    os.mkfifo(root / "inbox" / "pipe.MP4")
    drop(spool, "good.MP4")
    pipeline.drain()
    assert listing(spool, "inbox/rejected") == sorted(
        ["link.MP4", "link.MP4.error.json", "pipe.MP4", "pipe.MP4.error.json"]
    )
    note = json.loads((root / "inbox/rejected/link.MP4.error.json").read_text())
    assert note["reason"] == "not a regular file: a symbolic link"
    assert (root / "inbox/rejected/link.MP4").is_symlink()  # moved, not followed or deleted
    assert (root.parent / "outside/secret").read_text() == "do not touch"
    assert len(listing(spool, "c/done")) == 1
    kinds = [f.kind for f in pipeline.coordinator.ledger.failures()]
    assert kinds.count("drop.rejected") == 2


def test_unknown_event_schema_is_set_aside(pipeline: Pipeline, spool: Spool) -> None:
    root = spool.backend.local_root
    assert root is not None
    (root / "ledger/inbox/20240101T000000000000-x.json").write_text(
        json.dumps({"schema_version": 7, "event_id": "0" * 32})
    )
    drop(spool, "good.MP4")
    pipeline.drain()
    assert listing(spool, "ledger/inbox") == []
    rejected = listing(spool, "ledger/rejected")
    assert rejected == ["20240101T000000000000-x.json", "20240101T000000000000-x.json.error.txt"]
    reason = (root / "ledger/rejected" / rejected[1]).read_text()
    assert "event schema version 7 is not understood" in reason
    assert pipeline.coordinator.ledger.videos()[0].state == "done"
