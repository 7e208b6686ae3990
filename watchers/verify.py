"""``dashspool verify``: does the ledger still describe what is on disk?

Checks, read-only: (1) SQLite's ``integrity_check`` (``quick_check`` with ``quick``) and
``foreign_key_check``; (2) every archived video (``archived_at`` set, ``archive_sha256`` equal
to its ``sha256``): its clip at ``archive_path``, the clip's size and (unless ``quick``) its
sha256, and a ``meta.json`` that names the same clip; (3) the archive tree: video folders
``YYYY/MM/DD/<video id>/`` no ledger row points to, and anything else outside that layout (dot
names, such as the archive stage's ``.<id>.partial-<device>/``, are skipped); (4) the raw store:
clips whose ``raw_path`` is gone while retention never deleted them.

:func:`repair` only queues work: for an archived video whose copy is missing or wrong and whose
raw clip still hashes right, a new job for the archive stage (which sets a bad copy aside and
copies again) and a ``job.requeued`` ledger event. Nothing is ever deleted or moved here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text as sql
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from watchers import stores
from watchers.archiving import ARCHIVE_PATH_RE, Alert
from watchers.backends import Entry
from watchers.catalog import MAX_POINTS, TrackPoint, ts
from watchers.config import Policies
from watchers.errors import BadJob, ConfigError, NotFound, StorageUnavailable, UnsafePath
from watchers.ledger import Ledger, StageAttempt, Video
from watchers.sidecar import JOB_NAME_RE, Event, EventKind, Sidecar
from watchers.spool import Spool
from watchers.stores import Store

log = logging.getLogger(__name__)
META_MAX_BYTES = 16 << 20

INTEGRITY, MISSING, MISMATCH, ORPHAN, RAW_MISSING = (
    "integrity",
    "missing",
    "mismatch",
    "orphan",
    "raw-missing",
)
CHUNK = 4 << 20
FOLDER_RE = re.compile(r"^[0-9a-f]{6,64}$")
REPAIR_DEVICE = "cli"


@dataclass(frozen=True)
class Finding:
    kind: str  # integrity, missing, mismatch, orphan, raw-missing
    path: str
    video_id: str | None
    detail: str

    @property
    def repairable(self) -> bool:
        """An archived video's copy (clip or meta.json) is gone or wrong: archive it again."""
        return self.kind in (MISSING, MISMATCH) and self.video_id is not None


@dataclass
class Repair:
    video_id: str
    action: str  # queued, already-queued, none
    job: str | None
    detail: str


@dataclass
class Report:
    checked: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        counts = Counter(f.kind for f in self.findings)
        return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no problems"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": dict(self.checked),
            "findings": [asdict(f) for f in self.findings],
            "repairs": [asdict(r) for r in self.repairs],
        }


# ------------------------------------------------------------------------------ checks
def verify(policies: Policies, ledger: Ledger, *, quick: bool = False) -> Report:
    """Every check; never writes anything. StorageUnavailable when a store the ledger relies
    on is not there at all (an unmounted share would otherwise read as everything missing)."""
    report = Report()
    _check_sqlite(ledger, report, quick=quick)
    if any(f.kind == INTEGRITY for f in report.findings):
        return report  # the rows cannot be trusted: fix the ledger first
    archive = stores.open_store(policies, stores.ARCHIVE)
    raw = stores.open_store(policies, stores.RAW)
    with ledger.reading() as s:
        archived = list(
            s.exec(
                select(Video).where(
                    col(Video.archived_at).is_not(None), Video.archive_sha256 == Video.sha256
                )
            )
        )
        pointed = {str(p) for p in s.exec(select(Video.archive_path)) if p}
        known = set(s.exec(select(Video.video_id)))
        on_raw = list(
            s.exec(
                select(Video.video_id, Video.raw_path).where(
                    col(Video.raw_path).is_not(None), col(Video.raw_deleted_at).is_(None)
                )
            )
        )
    try:
        if archived and not _is_dir(archive, ""):
            raise StorageUnavailable(f"the archive store {archive.url} is not there (not mounted?)")
        if on_raw and not _is_dir(raw, ""):
            raise StorageUnavailable(f"the raw store {raw.url} is not there (not mounted?)")
        for video in archived:
            _check_archived(archive, video, report, quick=quick)
        _check_tree(archive, {p.rsplit("/", 1)[0] for p in pointed}, known, report)
        for video_id, raw_path in on_raw:
            _check_raw(raw, video_id, str(raw_path), report)
    finally:
        archive.backend.close()
        raw.backend.close()
    return report


def _is_dir(store: Store, rel: str) -> bool:
    if not rel:
        root = store.local_root
        if root is not None:
            return root.is_dir()
        store.backend.list("")  # a remote store: reachable, or StorageUnavailable
        return True
    entry = store.backend.stat(rel)
    return entry is not None and entry.kind == "dir"


def _where(store: Store, rel: str) -> str:
    return f"{store.url.rstrip('/')}/{rel}" if rel else store.url


def _check_raw(raw: Store, video_id: str, raw_path: str, report: Report) -> None:
    report.checked["raw"] += 1
    try:
        there = raw.file_size(raw_path) is not None
    except UnsafePath:
        there = False
    if not there:
        report.findings.append(
            Finding(
                RAW_MISSING,
                _where(raw, raw_path),
                video_id,
                "the raw clip is gone but retention never deleted it: restore it from a "
                "copy, or accept the loss (the archive copy is the one left)",
            )
        )


def _check_sqlite(ledger: Ledger, report: Report, *, quick: bool) -> None:
    pragma = "quick_check" if quick else "integrity_check"
    try:
        with ledger.reading() as s:
            rows = [str(r[0]) for r in s.execute(sql(f"PRAGMA {pragma}")).fetchmany(20)]
            fk = s.execute(sql("PRAGMA foreign_key_check")).fetchmany(20)
    except DBAPIError as err:
        rows, fk = [f"the ledger cannot be read: {err.orig}"], []
    report.checked["ledger"] = 1
    if rows != ["ok"]:
        detail = "; ".join(rows) + ": restore a backup (dashspool restore)"
        report.findings.append(Finding(INTEGRITY, str(ledger.path), None, detail))
    for row in fk:
        detail = f"foreign key: a {row[0]} row (rowid {row[1]}) points at a missing {row[2]} row"
        report.findings.append(Finding(INTEGRITY, str(ledger.path), None, detail))


def _check_archived(store: Store, video: Video, report: Report, *, quick: bool) -> None:
    report.checked["archived"] += 1
    vid, rel = video.video_id, video.archive_path or ""
    if not ARCHIVE_PATH_RE.match(rel):
        detail = f"archive_path {rel!r} is not YYYY/MM/DD/<video id>/<file>"
        report.findings.append(Finding(INTEGRITY, rel, vid, detail))
        return
    add = report.findings.append
    try:
        size = store.file_size(rel)  # None for a link too
    except UnsafePath as err:  # a folder on the way links out of the archive
        add(Finding(MISSING, _where(store, rel), vid, f"not checked: {err}"))
        return
    if size is None:
        add(Finding(MISSING, _where(store, rel), vid, "the archived clip is not there"))
    elif video.size_bytes is not None and size != video.size_bytes:
        detail = f"{size} bytes, the ledger says {video.size_bytes}"
        add(Finding(MISMATCH, _where(store, rel), vid, detail))
    elif not quick:
        report.checked["hashed"] += 1
        got = store.sha256(rel)
        if got != video.sha256:
            detail = f"sha256 {got[:12]}…, the ledger says {str(video.sha256)[:12]}…"
            add(Finding(MISMATCH, _where(store, rel), vid, detail))
    folder, name = rel.rsplit("/", 1)
    meta = f"{folder}/meta.json"
    try:
        data = json.loads(store.backend.read_bytes(meta, META_MAX_BYTES))
    except NotFound:
        add(Finding(MISSING, _where(store, meta), vid, "meta.json is not there"))
        return
    except (OSError, ValueError, BadJob) as err:
        add(Finding(MISMATCH, _where(store, meta), vid, f"meta.json cannot be read: {err}"))
        return
    expected = {"video_id": vid, "sha256": video.sha256, "file": name}
    wrong = [k for k, v in expected.items() if not isinstance(data, dict) or data.get(k) != v]
    if wrong:
        add(Finding(MISMATCH, _where(store, meta), vid, f"meta.json: {', '.join(wrong)} differ"))


def _check_tree(store: Store, pointed: set[str], known: set[str], report: Report) -> None:
    """Walk ``YYYY/MM/DD/<video id>/``; what no ledger row points to is an orphan."""
    if not _is_dir(store, ""):
        return
    shapes = (r"^\d{4}$", r"^\d{2}$", r"^\d{2}$")

    def visible(folder: str) -> list[Entry]:
        entries = store.backend.list(folder)
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)

    def stray(rel: str, why: str) -> None:
        where = _where(store, rel)
        report.findings.append(Finding(ORPHAN, where, None, why + ": move it out by hand"))

    level: list[str] = [""]
    for shape in shapes:
        nxt = []
        for folder in level:
            for e in visible(folder):
                rel = f"{folder}{e.name}"
                if e.kind == "dir" and re.match(shape, e.name):
                    nxt.append(f"{rel}/")
                else:
                    stray(rel, "not part of the archive layout YYYY/MM/DD/<video id>/")
        level = nxt
    for day in level:
        for e in visible(day):
            rel = f"{day}{e.name}"
            report.checked["folders"] += 1
            if not (e.kind == "dir" and FOLDER_RE.match(e.name)):
                stray(rel, "not a video folder (YYYY/MM/DD/<video id>/)")
            elif rel not in pointed:
                why = (
                    f"the ledger knows video {e.name} but not this copy (archived elsewhere, "
                    "or its archive event is not ingested yet)"
                    if e.name in known
                    else "no video in the ledger has this id (a restored older ledger?)"
                )
                report.findings.append(
                    Finding(
                        ORPHAN,
                        _where(store, rel),
                        e.name,
                        f"{why}: check it, then move it out by hand",
                    )
                )


# ------------------------------------------------------------------------------ repair
def archive_stage(policies: Policies) -> str:
    """The pipeline's stage of type ``archive``."""
    names = [n for n in policies.order() if policies.stages[n].type == "archive"]
    if not names:
        raise ConfigError(f"{policies.label}: no stage of type 'archive' in the pipeline")
    return names[0]


def repair(
    spool: Spool, policies: Policies, ledger: Ledger, report: Report, now: datetime
) -> list[Repair]:
    """Queue the archive stage again for each video with a repairable finding (see module
    docstring); appends to and returns ``report.repairs``."""
    stage = archive_stage(policies)
    seen: set[str] = set()
    for finding in report.findings:
        if not finding.repairable or finding.video_id in seen:
            continue
        assert finding.video_id is not None
        seen.add(finding.video_id)
        with ledger.reading() as s:
            video = s.get(Video, finding.video_id)
            jobs = set(
                s.exec(
                    select(StageAttempt.job).where(
                        StageAttempt.video_id == finding.video_id, StageAttempt.stage == stage
                    )
                )
            )
        if video is None:
            continue
        report.repairs.append(_repair_one(spool, policies, ledger, stage, video, jobs, now))
    return report.repairs


def _repair_one(
    spool: Spool,
    policies: Policies,
    ledger: Ledger,
    stage: str,
    video: Video,
    jobs: set[str],
    now: datetime,
) -> Repair:
    vid = video.video_id

    def none(why: str) -> Repair:
        return Repair(vid, "none", None, why)

    if video.raw_deleted_at:
        return none(f"retention deleted the raw clip at {video.raw_deleted_at}: nothing to copy")
    if not video.raw_path or not video.sha256:
        return none("the ledger has no raw clip for this video")
    try:
        store, rel = spool.locate_ref(f"raw:{video.raw_path}")
        if store.file_size(rel) is None:
            return none(f"the raw clip {_where(store, rel)} is not there either")
        if store.sha256(rel) != video.sha256:
            return none(
                f"the raw clip {_where(store, rel)} does not hash to the video's sha256 either"
            )
    except BadJob as err:
        return none(str(err))
    m = re.match(r"^(.*)-([0-9a-f]{6})$", video.job)
    if not m or not JOB_NAME_RE.match(video.job):
        return none(f"the ledger's job name {video.job!r} is not a job name")
    stem, tag = m[1][:100], m[2]
    repair_re = re.compile(rf"^{re.escape(stem)}\.repair(\d+)-{tag}$")
    present = {found for _, _, found in spool.find_job([stage], stem)}
    taken = [int(r[1]) for n in {*jobs, *present} if (r := repair_re.match(n))]
    last = max(taken, default=0)
    for name in [video.job, *(f"{stem}.repair{n}-{tag}" for n in range(1, last + 1))]:
        where = spool.locate(stage, name)
        if where is not None and where not in ("done", "failed"):
            return Repair(vid, "already-queued", name, f"{stage}/{where}/{name} is waiting")
    # a new name each time: the same job name again would repeat its completion event's id
    job = f"{stem}.repair{last + 1}-{tag}"
    sidecar, source = _source_job(spool, stage, video, jobs)
    staging = spool.staging(REPAIR_DEVICE, job)
    try:
        if sidecar is None:
            sidecar = _reconstructed(policies, ledger, video, job, stage, now)
        else:
            assert source is not None
            for name in sidecar.files:
                rel = f"{source}/{name}"
                if spool.backend.stat(rel) is None:
                    continue  # consumed by the stage that finished it
                with spool.backend.open_read(rel) as src, open(staging.path(name), "wb") as dst:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
            sidecar = sidecar.model_copy(
                update={
                    "job": job,
                    "attempts": 0,
                    "not_before": None,
                    "last_error": None,
                    "refs": {**sidecar.refs, "video": f"raw:{video.raw_path}"},
                }
            )
        published = spool.publish(staging, sidecar, stage)
    finally:
        staging.discard()
    if not published:
        return Repair(vid, "already-queued", job, f"{stage}/inbox/{job} is waiting")
    spool.emit(
        Event(
            event_id=Event.random_id(),
            kind=EventKind.JOB_REQUEUED,
            at=now,
            device=REPAIR_DEVICE,
            stage=stage,
            job=job,
            video_id=vid,
            data={"from": "verify", "source_name": video.source_name},
        )
    )
    how = f"a copy of {source}" if source else "rebuilt from the ledger"
    return Repair(vid, "queued", job, f"{stage}/inbox/{job} ({how})")


def _source_job(
    spool: Spool, stage: str, video: Video, jobs: set[str]
) -> tuple[Sidecar | None, str | None]:
    """The newest finished job of the video in ``<stage>/done/`` (its files and facts are the
    heavy outputs the archive entry is built from), or (None, None)."""
    best: tuple[float, Sidecar, str] | None = None
    for name in sorted({video.job, *jobs}):
        for _, queue, found in spool.find_job([stage], name):
            moved = re.match(rf"^{re.escape(name)}(\.\d+)?$", found)  # done/<job>.N
            if queue != "done" or not moved:
                continue
            rel = f"{stage}/done/{found}"
            entry = spool.backend.stat(rel)
            with contextlib.suppress(Exception):  # unreadable: not a source
                sidecar = spool.read_sidecar_at(rel)
                mine = entry is not None and sidecar.video_id == video.video_id
                if mine and entry is not None and (best is None or entry.mtime > best[0]):
                    best = (entry.mtime, sidecar, rel)
    return (best[1], best[2]) if best else (None, None)


def _reconstructed(
    policies: Policies, ledger: Ledger, video: Video, job: str, stage: str, now: datetime
) -> Sidecar:
    """A sidecar for the archive stage from what the ledger knows: ingest's facts (camera,
    times, GPS track) and preprocess's screening. Heavy's labels are not in the ledger."""
    with ledger.reading() as s:
        points = s.exec(
            select(TrackPoint)
            .where(TrackPoint.video_id == video.video_id)
            .order_by(col(TrackPoint.seq))
            .limit(MAX_POINTS)
        ).all()
    track = [
        {
            "time": p.t.replace("Z", "+00:00"),
            "lat": p.lat,
            "lon": p.lon,
            "speed_kmh": p.speed_kmh,
            "bearing_deg": p.bearing_deg,
            "alt_m": p.alt_m,
        }
        for p in points
    ]
    facts: dict[str, Any] = {
        policies.pipeline.entry: {
            "kind": video.kind,
            "sha256": video.sha256,
            "size_bytes": video.size_bytes,
            "source_path": video.source_path,
            "raw_path": video.raw_path,
            "camera": {
                "family": video.camera,
                "channel": video.channel,
                "mode": video.mode or "normal",
                "locked": bool(video.locked),
            },
            "time": {
                "local": video.recorded_at,
                "utc_start": video.start_utc,
                "utc_end": video.end_utc,
                "source": video.time_source,
            },
            "gps": {"source": video.gps_source, "points": video.gps_points or 0, "track": track},
            "media": {"duration_seconds": video.duration_seconds},
            "rebuilt_by": "verify --repair",
        }
    }
    screening = [n for n in policies.order() if policies.stages[n].type == "preprocess"]
    if screening and video.frames_sampled is not None:
        facts[screening[0]] = {
            "kind": "screening",
            "heavy_skipped": video.heavy_skipped,
            "frames_sampled": video.frames_sampled,
            "frames_kept": video.frames_kept,
            "motion_max": video.motion_max,
            "objects": json.loads(video.objects or "{}"),
        }
    return Sidecar(
        job=job,
        video_id=video.video_id,
        source_name=video.source_name,
        source_path=video.source_path,
        stage=stage,
        priority=video.priority,
        created_at=now,
        recorded_at=video.recorded_at,
        refs={"video": f"raw:{video.raw_path}"},
        facts=facts,
    )


# ------------------------------------------------------------------------------ alert
def record_alert(ledger: Ledger, report: Report, now: datetime) -> None:
    """One ``alerts`` row (source ``verify``) for a report with findings."""
    if report.ok:
        return
    level = "critical" if any(f.kind == INTEGRITY for f in report.findings) else "warning"
    queued = sum(r.action == "queued" for r in report.repairs)
    message = f"verify found {report.summary()}" + (
        f"; {queued} archive jobs queued" if queued else ""
    )
    with ledger.transaction() as s:
        s.add(Alert(at=ts(now), level=level, source="verify", message=message))
