"""The one error tree of dashspool.

Everything the runtime raises on purpose derives from :class:`DashspoolError` and carries a human
sentence. The kinds the runtime acts on differently:

* :class:`TransientError` — try again soon (in process, with backoff), then defer the job;
* :class:`RetryLater` — defer the job to a later time without in-process retries;
* :class:`SkipJob` — nothing for this stage to do: the job is finished without output;
* :class:`PermanentError` (and :class:`BadJob` for untrusted input) — straight to ``failed/``;
* :class:`Rejected` / :class:`Duplicate` — only at the entry stage: the dropped file is not
  acceptable (not a video, truncated) or was seen before; it is set aside in ``inbox/rejected/``
  or ``inbox/duplicates/`` with the sentence beside it, never deleted;
* anything else a stage raises is a bug or an unknown failure: deferred, then failed after the
  configured number of attempts.

:class:`Shutdown` derives from ``BaseException`` so that ``except Exception`` in a stage cannot
swallow the second Ctrl-C / SIGTERM.
"""

from __future__ import annotations


class DashspoolError(Exception):
    """Base of every error dashspool raises on purpose; ``str()`` is one human sentence."""


class ConfigError(DashspoolError):
    """policies.toml or the command line is wrong; the watcher refuses to start."""


class StorageUnavailable(DashspoolError):
    """The spool or a store cannot be reached right now (NAS down, share unmounted)."""


class NotFound(DashspoolError):
    """A spool entry that was expected is not there (for claims: another device won)."""


class AlreadyExists(DashspoolError):
    """The target of an exclusive rename already exists."""


class TransientError(DashspoolError):
    """Worth retrying in a moment: I/O hiccup, NAS busy, a device still warming up."""


class RetryLater(DashspoolError):
    """Defer the job for ``delay_seconds`` (or the policy's backoff) without retrying now."""

    def __init__(self, message: str, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class SkipJob(DashspoolError):
    """This stage has nothing to do for the job; it is finished without output."""


class PermanentError(DashspoolError):
    """Retrying cannot help; the job goes to ``failed/`` with this sentence."""


class Rejected(DashspoolError):
    """The entry stage refuses a dropped file: ``str()`` is the sentence a person reads in
    ``<name>.error.json`` ("not a video: no video stream found")."""


class Duplicate(DashspoolError):
    """The entry stage has seen this content before (under any name); the sentence says where."""


class BadJob(PermanentError):
    """The job itself is malformed or unsafe (untrusted input from another machine)."""


class SchemaVersionError(BadJob):
    """A sidecar or event written by a newer (or foreign) dashspool."""


class UnsafePath(BadJob):
    """A path that would leave the configured roots, or a symlink where none may be."""


class Shutdown(BaseException):
    """Raised by the second SIGINT/SIGTERM to abort the job in hand (recovered on next start)."""
