"""Wiring shared by the CLI and the tests: settings → spool, stages, workers, coordinator."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchers import runstate
from watchers.backends import open_backend
from watchers.clock import iso, utcnow
from watchers.config import Policies
from watchers.errors import ConfigError
from watchers.spool import Spool, check_device_id
from watchers.stores import Store, open_stores
from watchers.worker import Worker

if TYPE_CHECKING:  # the ledger pulls in sqlalchemy: imported only by the commands that use it
    from watchers.coordinator import Coordinator
    from watchers.ledger import Ledger


def open_spool(policies: Policies) -> Spool:
    backend = open_backend(policies.spool_url)
    roots: dict[str, Store | Path] = dict(open_stores(policies))
    if backend.local_root is not None:
        roots["spool"] = backend.local_root
    s = policies.spool
    return Spool(
        backend,
        fsync=s.fsync,
        max_sidecar_bytes=s.max_sidecar_kb * 1024,
        ignore_patterns=s.ignore_patterns,
        roots=roots,
    )


def open_ledger(policies: Policies, *, read_only: bool = False) -> Ledger:
    from watchers.ledger import Ledger

    return Ledger(
        policies.ledger_path,
        busy_timeout_seconds=policies.ledger.busy_timeout_seconds,
        read_only=read_only,
        trip_gap_seconds=policies.ledger.trip_gap_seconds,
        moment_window_seconds=policies.ledger.moment_window_seconds,
    )


def build_workers(
    spool: Spool,
    policies: Policies,
    names: Iterable[str],
    device: str,
    stop: threading.Event | None = None,
) -> list[Worker]:
    """Workers for the named stages (every stage is built and checked, so a bad setting anywhere
    in the pipeline stops the start)."""
    from stages import REGISTRY

    check_device_id(device)
    stages = REGISTRY.build(policies)
    workers = []
    for name in names:
        if name not in stages:
            raise ConfigError(
                f"{policies.label}: no stage named {name!r} (stages: {', '.join(policies.order())})"
            )
        stages[name].setup(policies)
        workers.append(Worker(spool, policies, stages[name], device, stop=stop))
    return workers


def build_coordinator(spool: Spool, policies: Policies) -> Coordinator:
    from watchers.coordinator import Coordinator

    check_device_id(policies.coordinator.device_id)
    return Coordinator(spool, policies, open_ledger(policies))


def device_state(
    rec: dict[str, Any], policies: Policies, now: datetime
) -> tuple[str, float | None]:
    last = rec.get("last_beat_at")
    if last is None:
        return "unknown", None
    age = (now - last).total_seconds()
    if rec.get("state") == "stopped":
        return "stopped", age
    if age > policies.spool.offline_after_seconds:
        return "offline", age
    if age > policies.spool.lease_seconds:
        return "stale", age
    return str(rec.get("state") or "running"), age


def _devices(records: Iterable[dict[str, Any]], policies: Policies, now: datetime) -> list[Any]:
    devices = []
    for rec in sorted(records, key=lambda r: str(r["device_id"])):
        state, age = device_state(rec, policies, now)
        devices.append(
            {
                "device_id": rec["device_id"],
                "stage": rec.get("stage"),
                "host": rec.get("host"),
                "pid": rec.get("pid"),
                "version": rec.get("version"),
                "current_job": rec.get("current_job"),
                "last_beat": rec.get("last_beat"),
                "age_seconds": None if age is None else round(age, 3),
                "state": state,
                "jobs": rec.get("jobs", {}),
            }
        )
    return devices


def _local_beats(spool_url: str) -> dict[str, dict[str, Any]]:
    """This machine's watchers' own heartbeat copies (watchers/runstate.py)."""
    out = {}
    for rec in runstate.read_all(spool_url):
        try:
            rec["last_beat_at"] = datetime.fromisoformat(str(rec["last_beat"]))
        except (KeyError, ValueError):
            continue
        out[str(rec["device_id"])] = rec
    return out


def status(spool: Spool, policies: Policies, now: datetime | None = None) -> dict[str, Any]:
    """What ``dashspool status --json`` prints (schema: docs/status.schema.json). A watcher on
    this machine whose own heartbeat copy is newer than the spool's (it cannot write there: it
    is waiting for storage) is shown as that copy says."""
    now = now or utcnow()
    stages = {name: spool.counts(name, now) for name in policies.order()}
    records = {str(r["device_id"]): r for r in spool.devices()}
    for device, rec in _local_beats(spool.backend.url).items():
        theirs = records.get(device, {}).get("last_beat_at")
        if theirs is None or rec["last_beat_at"] > theirs:
            records[device] = rec
    return {
        "spool": spool.backend.url,
        "reachable": True,
        "generated_at": iso(now),
        "drops_pending": len(spool.drops()),
        "ledger_backlog": spool.ledger_backlog(),
        "stages": stages,
        "devices": _devices(records.values(), policies, now),
    }


def status_unreachable(
    spool: Spool, policies: Policies, problem: str, now: datetime | None = None
) -> dict[str, Any]:
    """Status while the spool cannot be read: no counts, and the devices this machine knows of
    itself (its watchers' own heartbeat copies)."""
    now = now or utcnow()
    return {
        "spool": spool.backend.url,
        "reachable": False,
        "problem": problem,
        "generated_at": iso(now),
        "drops_pending": None,
        "ledger_backlog": None,
        "stages": {},
        "devices": _devices(_local_beats(spool.backend.url).values(), policies, now),
    }
