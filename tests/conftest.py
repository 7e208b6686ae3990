"""Shared fixtures: a temporary spool with a copy-stage chain, its settings, and test data."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sambaserver import SambaServer

from watchers import app
from watchers.config import Policies, parse
from watchers.coordinator import Coordinator
from watchers.spool import Spool
from watchers.worker import Worker

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("DASHSPOOL_TESTDATA", REPO.parent / "shared" / "testdata"))


def chain_settings(stages: tuple[str, ...] = ("a", "b", "c"), **sections: Any) -> dict[str, Any]:
    """Settings for a chain of copy stages, fast retries and no settle time."""
    data: dict[str, Any] = {
        "spool": {
            "path": "spool",
            "settle_seconds": 0,
            "prune_empty_after_seconds": 0,
            "rescan_seconds": 0.2,
            "heartbeat_seconds": 0.5,
            "lease_seconds": 5,
        },
        "retry": {
            "in_process_attempts": 2,
            "in_process_initial_seconds": 0,
            "in_process_max_seconds": 0,
            "defer_initial_seconds": 0,
            "defer_max_seconds": 0,
            "max_attempts": 3,
        },
        "pipeline": {"entry": stages[0]},
        "stages": {
            name: {"type": "copy", "next": [stages[i + 1]] if i + 1 < len(stages) else []}
            for i, name in enumerate(stages)
        },
    }
    for key, value in sections.items():
        if key == "stages":
            data["stages"] = value
        else:
            data.setdefault(key, {}).update(value)
    return data


def write_settings(path: Path, data: dict[str, Any]) -> Path:
    """Write settings as TOML (the small subset these tests use)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return str(v)

    lines = []
    for section, table in data.items():
        if section == "stages":
            for name, st in table.items():
                lines.append(f"[stages.{name}]")
                lines += [f"{k} = {value(v)}" for k, v in st.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def make_policies(tmp_path: Path) -> Callable[..., Policies]:
    def make(stages: tuple[str, ...] = ("a", "b", "c"), **sections: Any) -> Policies:
        return parse(chain_settings(stages, **sections), source=None, base_dir=tmp_path)

    return make


@pytest.fixture
def policies(make_policies: Callable[..., Policies]) -> Policies:
    return make_policies()


@pytest.fixture
def spool(policies: Policies) -> Spool:
    s = app.open_spool(policies)
    s.ensure_layout(policies.order())
    return s


@pytest.fixture
def inbox(spool: Spool) -> Path:
    """The spool's top-level inbox, where people and cameras drop files."""
    root = spool.backend.local_root
    assert root is not None
    return root / "inbox"


class Pipeline:
    """Every stage's worker on one device plus the coordinator, driven step by step."""

    def __init__(self, spool: Spool, policies: Policies, device: str = "dev1") -> None:
        self.spool = spool
        self.policies = policies
        self.stop = threading.Event()
        self.workers: list[Worker] = app.build_workers(
            spool, policies, policies.order(), device, self.stop
        )
        self.coordinator = Coordinator(spool, policies, app.open_ledger(policies))

    def start(self) -> None:
        self.spool.clean_staging(self.workers[0].device)
        for w in self.workers:
            w.start()
        self.coordinator.start()

    def drain(self, limit: int = 10_000) -> int:
        """Run rounds until no worker has anything to do; ingest the ledger. Returns jobs run."""
        n = 0
        for _ in range(limit):
            did = False
            for w in self.workers:
                if w.loop_once():
                    did, n = True, n + 1
            if not did:
                break
        self.coordinator.ingest()
        return n

    def close(self) -> None:
        self.coordinator.ledger.close()


def dropped(root: Path, settings: dict[str, Any], clips: dict[str, Path | bytes]) -> Pipeline:
    """A started pipeline under ``root`` (settings as policies.toml would hold them) with
    ``clips`` (path in the inbox -> a file to copy or bytes) dropped, not yet drained."""
    policies = parse(settings, source=None, base_dir=root)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    inbox = root / "spool" / "inbox"
    for rel, data in clips.items():
        (inbox / rel).parent.mkdir(parents=True, exist_ok=True)
        (inbox / rel).write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    p = Pipeline(spool, policies)
    p.start()
    return p


@pytest.fixture
def pipeline(spool: Spool, policies: Policies) -> Iterator[Pipeline]:
    p = Pipeline(spool, policies)
    p.start()
    yield p
    p.close()


def drop(spool: Spool, name: str, data: bytes = b"payload") -> Path:
    """Drop a file into the top-level inbox the way a finished copy would appear."""
    root = spool.backend.local_root
    assert root is not None
    path = root / "inbox" / name
    path.write_bytes(data)
    return path


def listing(spool: Spool, rel: str) -> list[str]:
    return sorted(e.name for e in spool.backend.list(rel))


@pytest.fixture
def testdata() -> Path:
    """The shared real test data; skips without it, fails in CI (DASHSPOOL_REQUIRE_TESTDATA=1)."""
    if not TESTDATA.is_dir():
        if os.environ.get("DASHSPOOL_REQUIRE_TESTDATA") == "1":
            pytest.fail(f"test data required but missing: {TESTDATA}")
        pytest.skip(f"no test data at {TESTDATA} (set DASHSPOOL_TESTDATA)")
    return TESTDATA


@pytest.fixture(scope="session")
def exiftool() -> str:
    """Debian's exiftool, the independent oracle for GPS readers (``make system-deps``)."""
    path = shutil.which("exiftool")
    if path is None:
        if os.environ.get("DASHSPOOL_REQUIRE_TESTDATA") == "1":
            pytest.fail("exiftool required but missing: apt-get install libimage-exiftool-perl")
        pytest.skip("exiftool missing (apt-get install libimage-exiftool-perl)")
    return path


@pytest.fixture(scope="module")
def samba() -> Iterator[SambaServer]:
    """One throwaway smbd on 127.0.0.1 per test module (tests/sambaserver.py)."""
    with SambaServer() as server:
        yield server


@pytest.fixture
def no_smb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SMB password or credentials file from the environment: each test passes its own."""
    from watchers.backends.smb import CREDENTIALS_ENV, PASSWORD_ENV

    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(CREDENTIALS_ENV, raising=False)
