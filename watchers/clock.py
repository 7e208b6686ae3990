"""The one clock. Everything that needs the time takes ``now=`` and defaults to :func:`utcnow`."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Timezone-aware current time in UTC."""
    return datetime.now(timezone.utc)


def iso(ts: datetime) -> str:
    """ISO 8601 with offset, microseconds kept (used in sidecars and events)."""
    return ts.astimezone(timezone.utc).isoformat()
