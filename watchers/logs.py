"""Logging: every line starts with the device and the job. Handlers are configured only by the CLI
(:func:`configure`); modules just use ``logging.getLogger(__name__)``."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_device: contextvars.ContextVar[str] = contextvars.ContextVar("device", default="-")
_job: contextvars.ContextVar[str] = contextvars.ContextVar("job", default="-")


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.device = _device.get()
        record.job = _job.get()
        return True


@contextmanager
def context(device: str | None = None, job: str | None = None) -> Iterator[None]:
    tokens = []
    if device is not None:
        tokens.append((_device, _device.set(device)))
    if job is not None:
        tokens.append((_job, _job.set(job)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def configure(level: str = "INFO", *, timestamps: bool | None = None) -> None:
    """Log to stderr. Under systemd (no TTY) journald adds the time itself."""
    if timestamps is None:
        timestamps = sys.stderr.isatty()
    fmt = "%(device)s %(job)s %(levelname)s %(name)s: %(message)s"
    if timestamps:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("watchdog", "apscheduler", "sqlalchemy", "smbprotocol", "smbclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
