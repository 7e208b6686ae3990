"""The stage contract: a name, a settings model, ``process(job, ctx)``; and the registry table.

A stage reads its inputs and writes its outputs only through :class:`Context`; it never touches
spool paths. Retries, ledger events, timing and routing defaults are the runtime's business.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from watchers.config import Policies
from watchers.errors import ConfigError
from watchers.sidecar import Sidecar
from watchers.spool import Claim, Spool, Staging
from watchers.stores import Store


class NoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stage(ABC):
    """Subclass, set :attr:`type_name` and :attr:`Settings`, implement :meth:`process`."""

    type_name: ClassVar[str]
    Settings: ClassVar[type[BaseModel]] = NoSettings
    # At the entry stage: suffixes of files that travel with the file they sit beside
    # (``X.MP4.gpx`` or ``X.gpx`` with ``X.MP4``); alone they are drops of their own.
    companion_suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, settings: BaseModel) -> None:
        self.name = name
        self.settings = settings

    def setup(self, policies: Policies) -> None:  # noqa: B027 - optional hook
        """Load models and check files before any job is claimed; raise ConfigError to refuse
        to start (a missing model must never surface as a failure in the middle of a job)."""

    def teardown(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`setup` loaded (model sessions, OCR engines) when the watcher
        stops. Called once, after the last job; must not raise."""

    def drop_priority(self, path: str) -> int:
        """At the entry stage: the order of drops found in one scan (higher first), from their
        path alone (ingest puts locked and event clips first)."""
        return 0

    @abstractmethod
    def process(self, job: Sidecar, ctx: Context) -> None:
        """Do the work for one job. Raise TransientError/RetryLater/SkipJob/PermanentError to
        steer the runtime; anything else counts as a failed attempt."""


class Context:
    """A stage's window on one job: inputs, outputs, routing and facts."""

    def __init__(
        self,
        *,
        spool: Spool,
        claim: Claim,
        staging: Staging | None,
        next_stages: tuple[str, ...],
        now: datetime,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        assert claim.sidecar is not None
        self.job = claim.sidecar
        self.stage = claim.stage
        self.device = claim.device
        self.next_stages = next_stages
        self.now = now
        self.log = log
        self.facts: dict[str, Any] = {}
        self.updates: dict[str, Any] = {}
        self.refs: dict[str, str] = dict(self.job.refs)
        self.routed: str | None = None
        self.final_state: str | None = None
        self.consumed: list[str] = []
        self._spool = spool
        self._claim = claim
        self._staging = staging
        self._scratch: Path | None = None

    # inputs
    @property
    def inputs(self) -> tuple[str, ...]:
        return self.job.files

    def open_input(self, name: str) -> Any:
        return self._spool.backend.open_read(self._spool.input_path(self._claim, name))

    def input_path(self, name: str) -> Path:
        """A local path to read input ``name`` from (fetched into scratch on remote storage)."""
        rel = self._spool.input_path(self._claim, name)
        local = self._spool.backend.local_path(rel)
        if local is not None:
            return local
        dst = self.scratch / f"in-{name}"
        if not dst.exists():
            with self.open_input(name) as src, open(dst, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return dst

    def resolve_ref(self, key: str) -> Path:
        """A local path to read the file ref ``key`` names (fetched into scratch, under its
        own name, from a remote store)."""
        store, rel = self._spool.locate_ref(self.refs[key])
        return store.fetch(rel, self.scratch / f"ref-{key}")

    def store(self, name: str) -> Store:
        """A configured store (``raw``, ``archive``)."""
        try:
            return self._spool.stores[name]
        except KeyError:
            raise ConfigError(f"no store named {name!r} is configured") from None

    # outputs
    def output_path(self, name: str) -> Path:
        """A local path to write output file ``name`` to; it travels with the job."""
        if self._staging is None:
            raise RuntimeError(f"stage {self.stage} is last in the pipeline: it has no outputs")
        return self._staging.path(name)

    def remove_output(self, name: str) -> None:
        """Take back an output written earlier in this job (it is not published)."""
        if self._staging is not None:
            self._staging.remove(name)

    def write_output(self, name: str, data: bytes) -> None:
        self.output_path(name).write_bytes(data)

    def copy_input(self, name: str, out_name: str | None = None) -> None:
        with self.open_input(name) as src, open(self.output_path(out_name or name), "wb") as dst:
            copy_stream(src, dst)

    # routing and facts
    def route(self, stage: str) -> None:
        if stage not in self.next_stages:
            raise ConfigError(f"{self.stage} may route to {list(self.next_stages)}, not {stage!r}")
        self.routed = stage

    def end_here(self, state: str) -> None:
        """Finish the job at this stage, publishing nothing onward; ``state`` is what the
        ledger records (a standalone GPX track ends at ingest as ``track``)."""
        self.final_state = state

    def consume_input(self, name: str) -> None:
        """This input now lives elsewhere (ingest hard-links the clip into the raw store): drop
        it from the claim once the job is complete, instead of keeping it in ``done/``."""
        self._spool.input_path(self._claim, name)  # a KeyError for a name that is no input
        if name not in self.consumed:
            self.consumed.append(name)

    def set_facts(self, **facts: Any) -> None:
        """Record this stage's results in the sidecar (under the stage's name)."""
        self.facts.update(facts)

    def set_ref(self, key: str, root: str, rel: str) -> None:
        ref = f"{root}:{rel}"
        self._spool.locate_ref(ref)
        self.refs[key] = ref

    def update(self, **fields: Any) -> None:
        """Change identity fields of the job (video_id, source_name, recorded_at, priority)."""
        allowed = {"video_id", "source_name", "recorded_at", "priority"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"cannot update {sorted(bad)} (allowed: {sorted(allowed)})")
        self.updates.update(fields)

    @property
    def scratch(self) -> Path:
        """A private local temporary folder, removed after the job."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"dashspool-{self.stage}-"))
        return self._scratch

    def cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    shutil.copyfileobj(src, dst, 1 << 20)


class Registry:
    """The table of stage types. A duplicate name fails at import; an unknown one at start.

    An entry is a Stage class, or ``(type name, "module:Class")``: such a stage's module (and
    whatever it imports: PyAV, OpenCV, a model runtime) is imported only when a pipeline uses
    it, so a device that copies or ingests starts without loading the others' libraries.
    """

    def __init__(self, entries: Iterable[type[Stage] | tuple[str, str]]) -> None:
        self._entries: dict[str, type[Stage] | str] = {}
        for entry in entries:
            name, target = (entry.type_name, entry) if isinstance(entry, type) else entry
            if name in self._entries:
                raise RuntimeError(f"stage type {name!r} registered twice")
            self._entries[name] = target

    @property
    def types(self) -> list[str]:
        return sorted(self._entries)

    def get(self, type_name: str) -> type[Stage] | None:
        target = self._entries.get(type_name)
        if target is None or isinstance(target, type):
            return target
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls.type_name != type_name:
            raise RuntimeError(f"{target} is not the stage type {type_name!r}")
        self._entries[type_name] = cls
        return cls

    def build(self, policies: Policies) -> dict[str, Stage]:
        """One configured stage instance per ``[stages.NAME]``, settings validated."""
        out: dict[str, Stage] = {}
        for name, table in policies.stages.items():
            type_name = table.type or name
            cls = self.get(type_name)
            if cls is None:
                raise ConfigError(
                    f"{policies.label}: stages.{name}.type: unknown stage type {type_name!r} "
                    f"(known: {', '.join(self.types)})"
                )
            try:
                settings = cls.Settings.model_validate(table.options)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                raise ConfigError(f"{policies.label}: stages.{name}.{key}: {msg}") from None
            out[name] = cls(name, settings)
        return out
