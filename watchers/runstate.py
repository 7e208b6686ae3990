"""This machine's own copy of its watchers' heartbeats, in a local run folder.

The heartbeat that ``dashspool status`` reads lives in the spool (``devices/``); while the spool
cannot be reached, neither can it. So each watcher also writes its heartbeat here, and status,
unable to read the spool, shows what the watchers on this machine are doing (typically
``waiting-for-storage``).

The folder: ``$DASHSPOOL_RUN_DIR``; else ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``,
``/run/dashspool``); else ``/run/dashspool`` when it exists; else a per-user folder under the
temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_DIR_ENV = "DASHSPOOL_RUN_DIR"
SYSTEM_RUN_DIR = Path("/run/dashspool")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.json$")
MAX_BYTES = 1 << 16


def run_dir() -> Path:
    for env in (RUN_DIR_ENV, "RUNTIME_DIRECTORY"):
        value = os.environ.get(env, "").split(":")[0]
        if value:
            return Path(value)
    if SYSTEM_RUN_DIR.is_dir():
        return SYSTEM_RUN_DIR
    return Path(tempfile.gettempdir()) / f"dashspool-{os.getuid()}"


def write(device: str, record: dict[str, Any]) -> None:
    """Replace this device's record; a failure is logged at debug level and otherwise ignored
    (the spool's heartbeat is the one that counts)."""
    folder = run_dir()
    tmp = folder / f".{device}.json.{os.getpid()}"
    try:
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, folder / f"{device}.json")
    except OSError as err:
        log.debug("local heartbeat not written to %s: %s", folder, err)
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_all(spool_url: str) -> list[dict[str, Any]]:
    """The records of this machine's watchers of the spool at ``spool_url``, by device id."""
    out: list[dict[str, Any]] = []
    try:
        items = sorted(run_dir().iterdir())
    except OSError:
        return out
    for item in items:
        if not NAME_RE.match(item.name):
            continue
        try:
            with open(item, "rb") as f:
                rec = json.loads(f.read(MAX_BYTES))
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("spool") == spool_url and rec.get("device_id"):
            out.append(rec)
    return out
