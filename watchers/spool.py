"""The spool protocol: the only module that builds spool paths or renames spool entries.

Layout (see DESIGN.md)::

    inbox/                       drops from cameras and people; rejected/ and duplicates/ inside
    <stage>/inbox|work/<dev>|deferred|failed|done/   jobs, one folder each
    <stage>/PAUSED               marker file
    ledger/inbox/  ledger/rejected/                  event files for the single ledger writer
    devices/<dev>.json           heartbeats
    .tmp/<dev>~<token>~<job>/    staging on the same filesystem as the inboxes

The invariants this module keeps:

* **publish** — stage under ``.tmp/``, fsync files and folder, rename into the target inbox,
  fsync the target folder. An inbox never shows a half-written job.
* **claim** — one exclusive rename ``inbox/<job>`` → ``work/<dev>/<job>``.
* **complete** — publish outputs, then the ledger event, then move the claim to ``done/``. A
  retry first looks for its output anywhere in the next stage and, if it is there, just finishes.
* **fail** — rewrite the sidecar and move to ``deferred/`` or ``failed/`` (+ ``.error.json``);
  nothing is ever deleted.
* **recover** — a device takes back its own claims at start; the reaper takes stale devices'.

Claims and the done-move are not fsynced on purpose: if a power cut undoes one, the job runs
again and finds its output already published (outputs are named by job and stage).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import itertools
import json
import logging
import os
import posixpath
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from watchers import __version__
from watchers.backends.base import Backend, Entry, clean_rel
from watchers.backends.local import LocalBackend
from watchers.clock import iso
from watchers.errors import (
    AlreadyExists,
    BadJob,
    ConfigError,
    NotFound,
    StorageUnavailable,
    UnsafePath,
)
from watchers.files import fsync_file
from watchers.sidecar import (
    DEVICE_ID_RE,
    FILE_NAME_RE,
    JOB_NAME_RE,
    REF_RE,
    Event,
    Sidecar,
    job_name,
    safe_component,
)
from watchers.stores import Store

log = logging.getLogger(__name__)

DROPS = "inbox"
REJECTED = "inbox/rejected"
DUPLICATES = "inbox/duplicates"
TMP = ".tmp"
DEVICES = "devices"
LEDGER_INBOX = "ledger/inbox"
LEDGER_REJECTED = "ledger/rejected"
SIDECAR = "job.json"
PAUSED = "PAUSED"
QUEUES = ("inbox", "work", "deferred", "failed", "done")
MAX_DROP_DEPTH = 8  # folders below the inbox that are scanned (card dumps are 3 deep)
_EVENT_SEQ = itertools.count()


def check_device_id(device: str) -> str:
    if not DEVICE_ID_RE.match(device) or "~" in device:
        raise ConfigError(
            f"device id {device!r}: use 1-64 letters, digits, '.', '_' or '-' (e.g. jetson-1)"
        )
    return device


@dataclass
class Claim:
    """A job this device holds in ``<stage>/work/<device>/<job>``."""

    stage: str
    job: str
    device: str
    sidecar: Sidecar | None = None

    @property
    def rel(self) -> str:
        return f"{self.stage}/work/{self.device}/{self.job}"


@dataclass
class Staging:
    """Outputs being written for one job, published in one rename."""

    spool: Spool
    device: str
    job: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    local_dir: Path = field(init=False)
    files: list[str] = field(default_factory=list)
    _scratch: str | None = None

    def __post_init__(self) -> None:
        root = self.spool.backend.local_root
        if root is not None:  # write straight into the spool's staging area: no extra copy
            self.spool.backend.makedirs(self.rel)
            self.local_dir = root / self.rel
        else:
            self._scratch = tempfile.mkdtemp(prefix=f"dashspool-{self.job}-")
            self.local_dir = Path(self._scratch)

    @property
    def rel(self) -> str:
        """``.tmp/<device>~<token>~<job>``: one folder, renamed to its final name on publish."""
        return f"{TMP}/{self.device}~{self.token}~{self.job}"

    def path(self, name: str) -> Path:
        """A local path to write payload file ``name`` to (registered as an output)."""
        if not FILE_NAME_RE.match(name) or name == SIDECAR:
            raise ValueError(f"output name {name!r} is not a plain file name")
        if name not in self.files:
            self.files.append(name)
        return self.local_dir / name

    def remove(self, name: str) -> None:
        """Take back output ``name``: it will not be published."""
        if name in self.files:
            self.files.remove(name)
            (self.local_dir / name).unlink(missing_ok=True)

    def discard(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        with contextlib.suppress(NotFound):  # remove_tree stats it first: absent is NotFound
            self.spool.backend.remove_tree(self.rel)


class Spool:
    """One spool root on one backend."""

    def __init__(
        self,
        backend: Backend,
        *,
        fsync: bool = True,
        max_sidecar_bytes: int = 1 << 20,
        ignore_patterns: Iterable[str] = (".*", "*.part", "*.tmp", "*.crdownload", "*~"),
        roots: Mapping[str, Store | Path] | None = None,
    ) -> None:
        self.backend = backend
        self.fsync = fsync
        self.max_sidecar_bytes = max_sidecar_bytes
        self.ignore_patterns = tuple(ignore_patterns)
        self._ignore = re.compile(
            "|".join(fnmatch.translate(p) for p in self.ignore_patterns) or "(?!)"
        )
        # the places refs point into ("raw:2026/...", "archive:..."), local or remote
        self.stores: dict[str, Store] = {
            name: where if isinstance(where, Store) else Store(name, LocalBackend(where))
            for name, where in (roots or {}).items()
        }
        self._order_cache: dict[tuple[str, str], tuple[int, float]] = {}
        self._folders: set[str] = set()  # folders known to exist (saves a mkdir per move)

    # ----------------------------------------------------------------- layout
    def ensure_layout(self, stages: Iterable[str]) -> None:
        for rel in (DROPS, REJECTED, DUPLICATES, TMP, DEVICES, LEDGER_INBOX, LEDGER_REJECTED):
            self.backend.makedirs(rel)
        for stage in stages:
            for q in QUEUES:
                self.backend.makedirs(f"{stage}/{q}")

    def _rename_into(self, src: str, folder: str, name: str) -> str:
        """Rename ``src`` to ``folder/name``, creating ``folder`` the first time. NotFound means
        ``src`` is gone (someone else moved it); a vanished folder is made again."""
        dst = f"{folder}/{name}"
        if folder not in self._folders:
            self.backend.makedirs(folder)
            self._folders.add(folder)
        try:
            self.backend.rename(src, dst)
        except NotFound:
            if self.backend.stat(src) is None:
                raise
            self.backend.makedirs(folder)  # the folder was removed behind our back
            self.backend.rename(src, dst)
        return dst

    # ---------------------------------------------------------------- publish
    def staging(self, device: str, job: str) -> Staging:
        return Staging(self, device, job)

    def publish(self, staging: Staging, sidecar: Sidecar, stage: str) -> bool:
        """Make ``staging`` visible as ``<stage>/inbox/<job>``. False when it already was."""
        b = self.backend
        if b.local_root is None:  # remote: upload the local scratch folder into .tmp first
            b.makedirs(staging.rel)
            for name in staging.files:
                with (
                    open(staging.local_dir / name, "rb") as src,
                    b.open_write(f"{staging.rel}/{name}", fsync=self.fsync) as dst,
                ):
                    shutil.copyfileobj(src, dst, 1 << 20)
        elif self.fsync:
            for name in staging.files:
                fsync_file(staging.local_dir / name)
        sidecar = sidecar.model_copy(update={"files": tuple(staging.files), "stage": stage})
        b.write_bytes(f"{staging.rel}/{SIDECAR}", sidecar.encode(), fsync=self.fsync)
        if self.fsync:
            b.fsync_dir(staging.rel)
        try:
            b.rename(staging.rel, f"{stage}/inbox/{staging.job}")
        except AlreadyExists:
            staging.discard()
            return False
        if self.fsync:
            b.fsync_dir(f"{stage}/inbox")
        staging.discard()
        return True

    def locate(self, stage: str, job: str) -> str | None:
        """Where ``job`` is in ``stage`` (inbox, work/<dev>, deferred, failed, done), or None."""
        for q in ("inbox", "deferred", "done", "failed"):
            if self.backend.stat(f"{stage}/{q}/{job}") is not None:
                return q
        for dev in self.backend.list(f"{stage}/work"):
            if dev.kind == "dir" and self.backend.stat(f"{stage}/work/{dev.name}/{job}"):
                return f"work/{dev.name}"
        return None

    # ------------------------------------------------------------------ claim
    def pending(self, stage: str) -> list[str]:
        """Job names waiting in ``<stage>/inbox``: priority first, then oldest first."""
        entries = self.backend.list(f"{stage}/inbox")
        keys: dict[str, tuple[int, float]] = {}
        for e in entries:
            if e.name.startswith("."):
                continue
            key = self._order_cache.get((stage, e.name))
            if key is None:
                key = self._order_key(stage, e)
                self._order_cache[(stage, e.name)] = key
            keys[e.name] = key
        for k in [k for k in self._order_cache if k[0] == stage and k[1] not in keys]:
            del self._order_cache[k]
        return sorted(keys, key=lambda n: (-keys[n][0], keys[n][1], n))

    def _order_key(self, stage: str, e: Entry) -> tuple[int, float]:
        if e.kind != "dir":
            return (0, e.mtime)
        try:
            data = self.backend.read_bytes(f"{stage}/inbox/{e.name}/{SIDECAR}", 1 << 16)
            raw = json.loads(data)
            prio = raw.get("priority", 0)
            created = datetime.fromisoformat(raw["created_at"]).timestamp()
            return (int(prio) if isinstance(prio, int) else 0, created)
        except Exception:  # malformed: order by age; the claim will fail it with a reason
            return (0, e.mtime)

    def claim(self, stage: str, job: str, device: str) -> Claim | None:
        """Move ``<stage>/inbox/<job>`` into this device's work folder. None: someone else won."""
        try:
            self._rename_into(f"{stage}/inbox/{job}", f"{stage}/work/{device}", job)
        except NotFound:
            return None
        except AlreadyExists:
            # this device already holds a job of that name (a re-drop of a running job)
            raise BadJob(f"{stage}/work/{device}/{job}: already claimed by this device") from None
        self._order_cache.pop((stage, job), None)
        return Claim(stage, job, device)

    def load(self, claim: Claim) -> Sidecar:
        """Read and check a claimed job's sidecar; raises BadJob with the reason."""
        if not JOB_NAME_RE.match(claim.job):
            raise BadJob(f"{claim.job!r} is not a job name (expected '<time>_<name>-<6 hex>')")
        entry = self.backend.stat(claim.rel)
        if entry is None:
            raise NotFound(f"{claim.rel}: claim vanished")
        if entry.kind != "dir":
            raise BadJob(f"{claim.job}: a job must be a folder, found a {entry.kind}")
        contents = {e.name: e for e in self.backend.list(claim.rel)}
        for e in contents.values():
            if e.kind == "link":
                raise UnsafePath(f"{claim.job}/{e.name}: symbolic links are not allowed in jobs")
            if e.kind != "file":
                raise BadJob(f"{claim.job}/{e.name}: only plain files are allowed in jobs")
        if SIDECAR not in contents:
            raise BadJob(f"{claim.job}: missing sidecar {SIDECAR}")
        data = self.backend.read_bytes(f"{claim.rel}/{SIDECAR}", self.max_sidecar_bytes)
        sidecar = Sidecar.decode(data, f"{claim.job}/{SIDECAR}")
        if sidecar.job != claim.job:
            raise BadJob(f"{claim.job}: sidecar names another job ({sidecar.job!r})")
        for name in sidecar.files:
            if name not in contents:
                raise BadJob(f"{claim.job}: payload file {name!r} listed but missing")
        for key in sidecar.refs:
            self.locate_ref(sidecar.refs[key])
        claim.sidecar = sidecar
        return sidecar

    def input_path(self, claim: Claim, name: str) -> str:
        if claim.sidecar is None or name not in claim.sidecar.files:
            raise KeyError(f"{claim.job} has no payload file {name!r}")
        return f"{claim.rel}/{name}"

    def storage_away(self) -> bool:
        """True when the spool or a store does not answer now (a NAS off or rebooting), as
        opposed to one file's trouble on storage that answers."""
        for backend in (self.backend, *(s.backend for s in self.stores.values())):
            try:
                backend.list("")
            except StorageUnavailable:
                return True
        return False

    @property
    def roots(self) -> dict[str, Path]:
        """The local stores' root folders by name."""
        return {n: s.local_root for n, s in self.stores.items() if s.local_root is not None}

    def locate_ref(self, ref: str) -> tuple[Store, str]:
        """``root:relative/path`` → the store and the checked path inside it."""
        m = REF_RE.match(ref)
        if not m or m["root"] not in self.stores:
            known = ", ".join(sorted(self.stores))
            raise UnsafePath(f"ref {ref!r}: unknown root (known: {known})")
        rel = m["path"]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise UnsafePath(f"ref {ref!r}: path must be relative and stay inside its root")
        store = self.stores[m["root"]]
        try:
            store.resolved(rel)  # a local store: no way out through a link either
        except UnsafePath as err:
            raise UnsafePath(f"ref {ref!r}: {err}") from None
        return store, rel

    def resolve_ref(self, ref: str) -> Path:
        """``root:relative/path`` → a local path inside that configured root, links resolved
        (UnsafePath for a ref into a remote store: fetch it through :meth:`locate_ref`)."""
        store, rel = self.locate_ref(ref)
        local = store.resolved(rel)
        if local is None:
            raise UnsafePath(f"ref {ref!r}: {store.url} is not a local folder")
        return local

    # --------------------------------------------------------------- complete
    def finish(self, claim: Claim) -> str:
        """Move a handled claim to ``<stage>/done/``; returns where it went."""
        return self._move_aside(claim.rel, f"{claim.stage}/done", claim.job)

    def discard_at(self, done: str, name: str) -> None:
        """Remove a payload file a stage consumed (it lives on under another name) from the
        finished job at ``done``."""
        if "/" in name or name in (SIDECAR, "", ".", ".."):
            raise ValueError(f"not a payload name: {name!r}")
        with contextlib.suppress(NotFound):
            self.backend.remove_file(f"{done}/{name}")

    def _move_aside(self, src: str, folder: str, name: str) -> str:
        for n in range(1000):
            try:
                return self._rename_into(src, folder, name if n == 0 else f"{name}.{n}")
            except AlreadyExists:
                continue
        raise AlreadyExists(f"{folder}/{name}: too many entries of that name")

    def rewrite(self, claim: Claim, sidecar: Sidecar) -> None:
        """Replace a claimed job's sidecar atomically."""
        self.write_sidecar_at(claim.rel, sidecar)
        claim.sidecar = sidecar

    def defer(self, claim: Claim, sidecar: Sidecar) -> None:
        self.rewrite(claim, sidecar)
        self._move_aside(claim.rel, f"{claim.stage}/deferred", claim.job)

    def fail(self, claim: Claim, error: dict[str, Any]) -> str:
        """Move a job (any entry, even a broken one) to ``failed/`` with ``<job>.error.json``."""
        folder = f"{claim.stage}/failed"
        self.backend.makedirs(folder)
        self.backend.write_bytes(
            f"{folder}/{claim.job}.error.json",
            json.dumps(error, indent=2, default=str).encode() + b"\n",
            fsync=self.fsync,
        )
        return self._move_aside(claim.rel, folder, claim.job)

    def deferred_due(self, stage: str, now: datetime) -> list[str]:
        due = []
        for e in self.backend.list(f"{stage}/deferred"):
            if e.name.startswith("."):
                continue
            nb = self._not_before(f"{stage}/deferred/{e.name}")
            if nb is None or nb <= now:
                due.append(e.name)
        return sorted(due)

    def _not_before(self, rel: str) -> datetime | None:
        try:
            return self.read_sidecar_at(rel).not_before
        except Exception:  # unreadable: release it; the claim fails it with a reason
            return None

    def release(self, stage: str, job: str) -> bool:
        """deferred/ → inbox/ (the not-before time has passed). False if someone else did it."""
        try:
            self.backend.rename(f"{stage}/deferred/{job}", f"{stage}/inbox/{job}")
        except (NotFound, AlreadyExists):
            return False
        return True

    # ---------------------------------------------------------------- recover
    def claims_of(self, device: str, stages: Iterable[str]) -> list[Claim]:
        out = []
        for stage in stages:
            for e in self.backend.list(f"{stage}/work/{device}"):
                if not e.name.startswith("."):
                    out.append(Claim(stage, e.name, device))
        return out

    def take_over(self, claim: Claim, device: str) -> Claim | None:
        """Move another (stale) device's claim into ``device``'s work folder, exclusively."""
        try:
            self._rename_into(claim.rel, f"{claim.stage}/work/{device}", claim.job)
        except (NotFound, AlreadyExists):
            return None
        return Claim(claim.stage, claim.job, device)

    def requeue(self, claim: Claim) -> bool:
        """Put a held claim back in its stage's inbox."""
        try:
            self.backend.rename(claim.rel, f"{claim.stage}/inbox/{claim.job}")
        except AlreadyExists:
            self._move_aside(claim.rel, f"{claim.stage}/failed", f"{claim.job}.clash")
            return False
        return True

    def clean_staging(self, device: str) -> int:
        """Remove this device's abandoned staging folders (half-written outputs, never inputs)."""
        n = 0
        for e in self.backend.list(TMP):
            if e.name.startswith(f"{device}~"):
                rel = f"{TMP}/{e.name}"
                if e.kind == "dir":
                    self.backend.remove_tree(rel)
                else:
                    self.backend.remove_file(rel)
                n += 1
        return n

    def incomplete_adoption(self, claim: Claim) -> bool:
        """True for a work folder left by an adoption cut short before its file arrived: no
        payload, no history. Such a folder holds only what this device wrote (the sidecar); the
        drop itself is still in the inbox or was taken by another device."""
        entries = {e.name for e in self.backend.list(claim.rel) if not e.name.startswith(".")}
        if not entries:
            return True
        if entries != {SIDECAR}:
            return False
        try:
            sidecar = self.read_sidecar_at(claim.rel)
        except Exception:
            return False
        return not sidecar.history and bool(sidecar.files)

    def drop_claim(self, claim: Claim) -> None:
        """Remove an :meth:`incomplete_adoption` folder."""
        self.backend.remove_tree(claim.rel)

    # ------------------------------------------------------------------ drops
    def drops(self, *, prune_before: float | None = None) -> list[Entry]:
        """Files people and cameras dropped anywhere in the inbox tree (card dumps, viofosync's
        date folders), as entries whose ``name`` is the path inside the inbox. Hidden and
        partial names (at any depth) and the top-level rejected/ and duplicates/ folders are
        left out; links and other odd entries are returned for the caller to refuse. Empty
        folders last changed before ``prune_before`` (epoch seconds) are removed on the way."""
        out: list[Entry] = []
        self._walk_drops("", 0, out, prune_before)
        return sorted(out, key=lambda e: (e.mtime, e.name))

    def _walk_drops(self, rel: str, depth: int, out: list[Entry], prune: float | None) -> bool:
        """Collect drops under ``inbox/rel``; True when the folder is (now) empty."""
        listed = self.backend.list(f"{DROPS}/{rel}" if rel else DROPS)
        left = len(listed)
        for e in listed:
            path = f"{rel}/{e.name}" if rel else e.name
            if not self._is_drop(Entry(path, e.kind, e.size, e.mtime)):
                continue
            if e.kind != "dir":
                out.append(Entry(path, e.kind, e.size, e.mtime))
            elif depth >= MAX_DROP_DEPTH:
                log.warning("inbox/%s: deeper than %d folders; not scanned", path, MAX_DROP_DEPTH)
            elif self._walk_drops(path, depth + 1, out, prune) and prune and e.mtime < prune:
                with contextlib.suppress(NotFound, AlreadyExists, OSError):  # refilled: keep
                    self.backend.remove_dir(f"{DROPS}/{path}")
                    left -= 1
        return left == 0

    def drop_entry(self, name: str) -> Entry | None:
        """A fresh look at one drop (None: gone, or not a drop)."""
        try:
            rel = clean_rel(name)
        except UnsafePath:  # a backslash in a name: not safe to pass on; left for a person
            log.warning("inbox/%s: a backslash in the name; rename it to have it taken", name)
            return None
        e = self.backend.stat(f"{DROPS}/{rel}")
        if e is None:
            return None
        e = Entry(name, e.kind, e.size, e.mtime)
        return e if self._is_drop(e) else None

    def _is_drop(self, e: Entry) -> bool:
        """``e.name`` is the path inside the inbox; every part of it must be a drop's name."""
        parts = e.name.split("/")
        if parts[0] in ("rejected", "duplicates") and (len(parts) > 1 or e.kind == "dir"):
            return False
        return not any(self._ignore.match(p) for p in parts)

    @staticmethod
    def drop_id(e: Entry, now: datetime) -> str:
        """Identity of a drop before its content is hashed: path, size, mtime and the moment of
        adoption (the same file dropped again later, even with the same mtime, is a new job)."""
        key = f"{e.name}\x00{e.size}\x00{int(e.mtime * 1e6)}\x00{now.isoformat()}"
        return hashlib.sha256(key.encode()).hexdigest()

    def adopt(
        self,
        entry: Entry,
        stage: str,
        device: str,
        now: datetime,
        companions: Iterable[Entry] = (),
    ) -> Claim | None:
        """Claim a settled drop for the entry stage: it becomes ``<stage>/work/<dev>/<job>/``
        holding the file and a sidecar. None when another device took it first.

        Order: folder, sidecar, then the exclusive rename of the file into the folder. A crash
        before the rename leaves a folder that :meth:`incomplete_adoption` recognises.
        ``companions`` (a clip's ``.gpx`` beside it) follow the file, and the sidecar is
        rewritten to list them; a crash in between leaves them unlisted, never lost."""
        vid = self.drop_id(entry, now)
        base = posixpath.basename(entry.name)
        stem = base.rsplit(".", 1)[0] if "." in base[1:] else base
        recorded = datetime.fromtimestamp(entry.mtime)
        job = job_name(stem, recorded, vid)
        payload = _payload_name(base, ())
        rel = f"{stage}/work/{device}/{job}"
        if self.backend.stat(rel) is not None:
            raise AlreadyExists(f"{rel}: this device already holds a drop with that identity")
        self.backend.makedirs(rel)
        sidecar = Sidecar(
            job=job,
            video_id=vid,
            source_name=base,
            source_path=entry.name,
            stage=stage,
            created_at=now,
            recorded_at=recorded.isoformat(timespec="seconds"),
            files=(payload,),
        )
        self.write_sidecar_at(rel, sidecar)  # temp name + rename: never a torn job.json
        try:
            self.backend.rename(f"{DROPS}/{entry.name}", f"{rel}/{payload}")
        except NotFound:
            self.backend.remove_tree(rel)
            return None
        files = [payload]
        for extra in companions:
            name = _payload_name(posixpath.basename(extra.name), files)
            with contextlib.suppress(NotFound):  # gone: it was only ever a hint
                self.backend.rename(f"{DROPS}/{extra.name}", f"{rel}/{name}")
                files.append(name)
        if len(files) > 1:
            sidecar = sidecar.model_copy(update={"files": tuple(files)})
            self.write_sidecar_at(rel, sidecar)
        return Claim(stage, job, device, sidecar)

    def set_aside(
        self, claim: Claim, folder: str, reason: str, device: str, now: datetime
    ) -> list[str]:
        """Give an adopted drop back to people: its files go to ``inbox/rejected/`` (or
        ``duplicates/``) under their original names, each beside a ``.error.json`` saying why,
        and the emptied claim goes to ``done/``. Returns where the files went."""
        if folder not in (REJECTED, DUPLICATES):
            raise ValueError(f"not a set-aside folder: {folder}")
        sidecar = claim.sidecar or self.load(claim)
        moved: list[str] = []
        for i, name in enumerate(sidecar.files):
            original = sidecar.source_name if i == 0 else name
            if "/" in original or original in ("", ".", ".."):
                original = name
            try:
                dst = self._move_aside(f"{claim.rel}/{name}", folder, _fit_note(original))
            except NotFound:
                continue
            note = {
                "file": sidecar.source_path or sidecar.source_name,
                "reason": reason,
                "device": device,
                "time": iso(now),
                "job": claim.job,
            }
            self.backend.write_bytes(
                f"{dst}.error.json", json.dumps(note, indent=2).encode(), fsync=self.fsync
            )
            moved.append(dst)
        if self.fsync:
            self.backend.fsync_dir(folder)
        self.finish(claim)
        return moved

    def duplicate_drop(self, entry: Entry, reason: str, device: str, now: datetime) -> str | None:
        """Move a repeated drop to ``inbox/duplicates/`` with a note. None: gone."""
        return self._aside_with_note(entry, DUPLICATES, reason, device, now)

    def reject_drop(self, entry: Entry, reason: str, device: str, now: datetime) -> str | None:
        """Move a bad drop to ``inbox/rejected/`` beside ``<name>.error.json``. None: gone."""
        return self._aside_with_note(entry, REJECTED, reason, device, now)

    def _aside_with_note(
        self, entry: Entry, folder: str, reason: str, device: str, now: datetime
    ) -> str | None:
        try:
            base = _fit_note(posixpath.basename(entry.name))
            dst = self._move_aside(f"{DROPS}/{entry.name}", folder, base)
        except NotFound:
            return None
        note = {"file": entry.name, "reason": reason, "device": device, "time": iso(now)}
        self.backend.write_bytes(
            f"{dst}.error.json", json.dumps(note, indent=2).encode(), fsync=self.fsync
        )
        return dst

    # ----------------------------------------------------------------- ledger
    def emit(self, event: Event, *, durable: bool = True) -> None:
        """Publish one ledger event file (staged, fsynced, renamed). ``durable=False`` for events
        that a power cut may lose without harm (a "started" whose attempt is redone anyway)."""
        sync = self.fsync and durable
        # time, then this process's sequence: events of one instant keep their order
        stamp = event.at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        seq = next(_EVENT_SEQ)
        tmp = f"{TMP}/{event.device}~ev-{secrets.token_hex(4)}.json"
        self.backend.write_bytes(tmp, event.encode(), fsync=sync)
        self.backend.rename(tmp, f"{LEDGER_INBOX}/{stamp}-{seq:010d}-{event.event_id}.json")
        if sync:
            self.backend.fsync_dir(LEDGER_INBOX)

    def event_files(self, limit: int) -> list[str]:
        names = sorted(e.name for e in self.backend.list(LEDGER_INBOX) if e.name.endswith(".json"))
        return names[:limit]

    def read_event(self, name: str) -> Event:
        rel = f"{LEDGER_INBOX}/{name}"
        return Event.decode(self.backend.read_bytes(rel, self.max_sidecar_bytes), rel)

    def consume_event(self, name: str) -> None:
        """The event is in the ledger: its file has served its purpose."""
        with contextlib.suppress(NotFound):
            self.backend.remove_file(f"{LEDGER_INBOX}/{name}")

    def reject_event(self, name: str, reason: str) -> None:
        try:
            dst = self._move_aside(f"{LEDGER_INBOX}/{name}", LEDGER_REJECTED, name)
        except NotFound:
            return
        self.backend.write_bytes(f"{dst}.error.txt", (reason + "\n").encode(), fsync=self.fsync)

    def ledger_backlog(self) -> int:
        return sum(1 for e in self.backend.list(LEDGER_INBOX) if e.name.endswith(".json"))

    # ------------------------------------------------------- devices, pausing
    def beat(self, device: str, info: dict[str, Any], now: datetime) -> None:
        record = {
            "device_id": device,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": __version__,
            **info,
            "last_beat": iso(now),
        }
        tmp = f"{TMP}/{device}~hb.json"
        self.backend.write_bytes(tmp, json.dumps(record, indent=2).encode(), fsync=False)
        self.backend.replace(tmp, f"{DEVICES}/{device}.json")

    def check_device_free(self, device: str, now: datetime, lease: timedelta) -> None:
        """Refuse to start a second process under a device id that is alive elsewhere: two
        processes with one id would delete each other's staging and reclaim each other's jobs."""
        try:
            rec = json.loads(self.backend.read_bytes(f"{DEVICES}/{device}.json", 1 << 16))
            last = datetime.fromisoformat(rec["last_beat"])
        except (NotFound, ValueError, KeyError, TypeError, BadJob):
            return
        if rec.get("state") == "stopped" or now - last > lease:
            return
        host, pid = rec.get("host"), rec.get("pid")
        same_host = host == socket.gethostname()
        if same_host and (pid == os.getpid() or not isinstance(pid, int) or not _pid_alive(pid)):
            return  # this process, or a dead one whose claims this start recovers
        raise ConfigError(
            f"device id {device!r} is in use by pid {pid} on {host} (heartbeat "
            f"{(now - last).total_seconds():.0f}s ago): give each process its own --device-id"
        )

    def devices(self) -> list[dict[str, Any]]:
        out = []
        for e in self.backend.list(DEVICES):
            if not e.name.endswith(".json") or e.kind != "file":
                continue
            try:
                rec = json.loads(self.backend.read_bytes(f"{DEVICES}/{e.name}", 1 << 16))
                rec["last_beat_at"] = datetime.fromisoformat(rec["last_beat"])
            except Exception:
                rec = {"device_id": e.name[:-5], "unreadable": True, "last_beat_at": None}
            rec["device_id"] = e.name[:-5]
            out.append(rec)
        return out

    def stale_devices(self, stages: Iterable[str], now: datetime, lease: timedelta) -> list[str]:
        """Devices holding claims whose heartbeat is older than the lease (or missing)."""
        beats = {d["device_id"]: d for d in self.devices()}
        stale: set[str] = set()
        for stage in stages:
            for e in self.backend.list(f"{stage}/work"):
                if e.kind != "dir":
                    continue
                rec = beats.get(e.name)
                last = rec.get("last_beat_at") if rec else None
                if rec and rec.get("state") == "stopped":
                    stale.add(e.name)
                elif last is None:
                    if now.timestamp() - e.mtime > lease.total_seconds():
                        stale.add(e.name)
                elif now - last > lease:
                    stale.add(e.name)
        return sorted(stale)

    def pause(self, stage: str, note: str) -> None:
        self.backend.makedirs(stage)  # pausing a stage before its first start is fine
        self.backend.write_bytes(f"{stage}/{PAUSED}", (note + "\n").encode(), fsync=self.fsync)

    def resume(self, stage: str) -> bool:
        try:
            self.backend.remove_file(f"{stage}/{PAUSED}")
        except NotFound:
            return False
        return True

    def is_paused(self, stage: str) -> bool:
        return self.backend.stat(f"{stage}/{PAUSED}") is not None

    # ----------------------------------------------------------------- status
    def counts(self, stage: str, now: datetime) -> dict[str, Any]:
        def visible(rel: str) -> list[Entry]:
            """Job folders: not their error notes (``.error.json``, ``.requeued``) or dot files."""
            return [
                e for e in self.backend.list(rel) if e.kind == "dir" and not e.name.startswith(".")
            ]

        inbox = visible(f"{stage}/inbox")
        work = 0
        for dev in self.backend.list(f"{stage}/work"):
            if dev.kind == "dir":
                work += len(visible(f"{stage}/work/{dev.name}"))
        oldest = min((e.mtime for e in inbox), default=None)
        return {
            "inbox": len(inbox),
            "work": work,
            "deferred": len(visible(f"{stage}/deferred")),
            "failed": len(visible(f"{stage}/failed")),
            "done": len(visible(f"{stage}/done")),
            "paused": self.is_paused(stage),
            "oldest_pending_age_seconds": (
                None if oldest is None else max(0.0, round(now.timestamp() - oldest, 3))
            ),
        }

    def busy(self, stages: Iterable[str], *, drops: bool) -> bool:
        """True while anything is pending or in work for ``stages`` (checked in pipeline order, so
        a job moving forward during the check is still seen)."""
        if drops and self.drops():
            return True
        for stage in stages:
            if self.backend.list(f"{stage}/inbox"):
                return True
            for dev in self.backend.list(f"{stage}/work"):
                if dev.kind == "dir" and self.backend.list(f"{stage}/work/{dev.name}"):
                    return True
        return False

    def find_job(self, stages: Iterable[str], prefix: str) -> Iterator[tuple[str, str, str]]:
        """(stage, queue, job) for every job whose name or video-id hash starts with ``prefix``."""
        for stage in stages:
            for q in ("inbox", "deferred", "failed", "done"):
                for e in self.backend.list(f"{stage}/{q}"):
                    name = e.name
                    if e.kind != "dir" or not JOB_NAME_RE.match(name):
                        continue  # error notes (.error.json, .requeued), dot files, strays
                    if name.startswith(prefix) or name.rsplit("-", 1)[-1].startswith(prefix):
                        yield stage, q, name

    def move_to_inbox(self, stage: str, queue: str, job: str) -> None:
        """Operator requeue: ``failed/`` or ``deferred/`` → ``inbox/`` (error file kept beside)."""
        src = f"{stage}/{queue}/{job}"
        self.backend.rename(src, f"{stage}/inbox/{job}")
        err = f"{stage}/{queue}/{job}.error.json"
        if queue == "failed" and self.backend.stat(err):
            self._move_aside(err, f"{stage}/failed", f"{job}.error.json.requeued")

    def read_sidecar_at(self, rel: str) -> Sidecar:
        return Sidecar.decode(
            self.backend.read_bytes(f"{rel}/{SIDECAR}", self.max_sidecar_bytes), rel
        )

    # -------------------------------------------------------------- retention
    def done_entries(self, stage: str) -> list[Entry]:
        """What ``<stage>/done/`` holds (dot names left out): finished jobs, for retention."""
        return [e for e in self.backend.list(f"{stage}/done") if not e.name.startswith(".")]

    def done_job_bytes(self, stage: str, job: str) -> int:
        return sum(e.size for e in self.backend.list(f"{stage}/done/{job}") if e.kind == "file")

    def remove_done(self, stage: str, job: str) -> None:
        """Delete one finished job folder (retention, once it is old enough); nothing else in
        the spool is ever deleted."""
        if not DONE_NAME_RE.match(job):
            raise ValueError(f"not a job folder name: {job!r}")
        rel = f"{stage}/done/{job}"
        entry = self.backend.stat(rel)
        if entry is None or entry.kind != "dir":
            raise NotFound(f"{rel}: no longer a job folder")
        self.backend.remove_tree(rel)

    def write_sidecar_at(self, rel: str, sidecar: Sidecar) -> None:
        """Temp name, fsync, rename over ``job.json``: a reader never sees a torn sidecar."""
        tmp = f"{rel}/.{SIDECAR}.{secrets.token_hex(3)}"
        self.backend.write_bytes(tmp, sidecar.encode(), fsync=self.fsync)
        self.backend.replace(tmp, f"{rel}/{SIDECAR}")


DONE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # a job, or job.N set aside


def _fit_note(name: str, limit: int = 255 - len(".error.json") - 4) -> str:
    """``name`` shortened (extension kept) so that ``<name>.N.error.json`` fits in one file
    name (255 bytes): a refused file with a very long name still gets its note beside it."""
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem or len(ext) > 16:
        stem, dot, ext = name, "", ""
    tail = f"~{dot}{ext}"
    room = limit - len(tail.encode())
    short = stem.encode()[:room].decode(errors="ignore")
    return f"{short}{tail}"


def _payload_name(base: str, taken: Iterable[str]) -> str:
    """A payload file name for a dropped file: typeable, never the sidecar's, never taken."""
    name = safe_component(base, 190)
    while name == SIDECAR or name in taken:
        name = f"x-{name}"
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
