"""Storage backends behind one interface, picked by the spool URL.

A new backend is one file here plus one line in :data:`SCHEMES`.
"""

from __future__ import annotations

from watchers.backends.base import Backend, Entry
from watchers.backends.local import LocalBackend
from watchers.errors import ConfigError

# scheme -> "module:Class"; imported lazily so a device without smbprotocol never imports it
SCHEMES: dict[str, str] = {
    "smb": "watchers.backends.smb:SmbBackend",
}


def open_backend(url: str) -> Backend:
    """A backend for a spool or store location: a local path, ``file://`` URL or a known scheme."""
    if "://" not in url:
        return LocalBackend(url)
    scheme, rest = url.split("://", 1)
    if scheme == "file":
        return LocalBackend(rest)
    if scheme not in SCHEMES:
        known = ", ".join(["file", *SCHEMES]) or "file"
        raise ConfigError(f"{url}: unknown storage scheme {scheme!r} (known: {known})")
    import importlib

    module, cls = SCHEMES[scheme].split(":")
    backend: Backend = getattr(importlib.import_module(module), cls)(url)
    return backend


__all__ = ["SCHEMES", "Backend", "Entry", "LocalBackend", "open_backend"]
