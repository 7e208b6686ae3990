"""What every request of the web app shares: the settings, the token, the read-only ledger
(opened on first use, so the server starts before the coordinator has made it), the spool."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from sqlmodel import Session

from watchers import app as wiring
from watchers import stores
from watchers.config import Policies

if TYPE_CHECKING:
    from watchers.ledger import Ledger
    from watchers.spool import Spool


@dataclass
class WebState:
    policies: Policies
    token: str | None
    _ledger: Ledger | None = None
    _spool: Spool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def archive_root(self) -> Path | None:
        """The archive as a local (or mounted) folder; None for an ``smb://`` archive, whose
        media the web UI does not serve (docs/web.md)."""
        where = stores.location(self.policies, stores.ARCHIVE)
        return None if "://" in where else Path(where)

    @property
    def ledger(self) -> Ledger:
        """The ledger, read-only (ConfigError until the coordinator has created it)."""
        with self._lock:
            if self._ledger is None:
                self._ledger = wiring.open_ledger(self.policies, read_only=True)
            return self._ledger

    @property
    def spool(self) -> Spool:
        with self._lock:
            if self._spool is None:
                self._spool = wiring.open_spool(self.policies)
            return self._spool

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.ledger.reading() as s:
            yield s

    def close(self) -> None:
        with self._lock:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None


def web(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state
