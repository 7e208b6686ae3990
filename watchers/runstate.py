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
import stat
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


def _usable(folder: Path) -> bool:
    """Make the folder if needed; use it only when it is a real folder of this user (a
    predictable name under /tmp could be another user's folder or link)."""
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o755, parents=True)
    st = os.lstat(folder)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()


def write(device: str, record: dict[str, Any]) -> None:
    """Replace this device's record (readable by everyone on the machine: status runs as the
    operator); a failure is logged at debug level and otherwise ignored (the spool's
    heartbeat is the one that counts)."""
    folder = run_dir()
    tmp = None
    try:
        if not _usable(folder):
            log.debug("local heartbeat not written: %s is not this user's folder", folder)
            return
        fd, name = tempfile.mkstemp(prefix=f".{device}.", dir=folder)  # O_EXCL, 0600
        tmp = Path(name)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(json.dumps(record, indent=2))
        os.replace(tmp, folder / f"{device}.json")
        tmp = None
    except OSError as err:
        log.debug("local heartbeat not written to %s: %s", folder, err)
    finally:
        if tmp is not None:
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
