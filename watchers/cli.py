"""``dashspool``: one command group. Exit codes (documented in docs/cli.md):

0 success · 1 unexpected error · 2 usage error · 3 configuration error (systemd does not restart)
· 4 not found · 5 storage unavailable · 130 aborted by a second signal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from watchers import __version__, logs
from watchers import app as wiring
from watchers.clock import iso, utcnow
from watchers.config import Policies, load
from watchers.errors import ConfigError, NotFound, Shutdown, StorageUnavailable
from watchers.watch import Runner

EXIT_ERROR, EXIT_CONFIG, EXIT_NOT_FOUND, EXIT_STORAGE, EXIT_ABORTED = 1, 3, 4, 5, 130
# `verify` found problems; `retention`'s sanity guard stopped a sweep: a person should look
EXIT_FINDINGS = 6

cli = typer.Typer(
    name="dashspool",
    help="Dashcam footage to a searchable, GPS-tagged archive, through spool folders on a NAS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ledger_cli = typer.Typer(
    help="Query the ledger (videos, one video's history, trips, plates, detections, places, "
    "failures, events, retention's deletions, alerts).",
    no_args_is_help=True,
)
cli.add_typer(ledger_cli, name="ledger")
models_cli = typer.Typer(
    help="Model files for the detectors (fetch them on a machine with internet).",
    no_args_is_help=True,
)
cli.add_typer(models_cli, name="models")
out = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one journal line
log = logging.getLogger("watchers.cli")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
DeviceOpt = Annotated[
    str, typer.Option("--device-id", envvar="DASHSPOOL_DEVICE_ID", help="This device's id.")
]
UntilIdleOpt = Annotated[
    bool, typer.Option("--until-idle", help="Exit 0 once nothing is pending for what this serves.")
]
MaxJobsOpt = Annotated[
    int | None, typer.Option("--max-jobs", min=1, help="Exit after handling this many jobs.")
]


class State:
    config: str | None = None
    spool: str | None = None
    _policies: Policies | None = None

    @property
    def policies(self) -> Policies:
        if self._policies is None:
            self._policies = load(self.config, self.spool)
        return self._policies


state = State()


class LogLevel(str, Enum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _version(value: bool) -> None:
    if value:
        out.print(__version__)
        raise typer.Exit(0)


@cli.callback()
def main_options(
    spool: Annotated[
        str | None,
        typer.Option("--spool", envvar="DASHSPOOL_SPOOL", help="Spool root (path or URL)."),
    ] = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config", envvar="DASHSPOOL_CONFIG", help="Settings file (default ./policies.toml)."
        ),
    ] = None,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log verbosity.")
    ] = LogLevel.INFO,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version."),
    ] = False,
) -> None:
    """Global options: where the spool and the settings are."""
    state.config, state.spool, state._policies = config, spool, None
    logs.configure(log_level.value)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def _signals(runner: Runner) -> Iterator[None]:
    """First SIGINT/SIGTERM: finish the job in hand and exit. Second: abort it (the next start
    recovers the claim)."""
    count = 0

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count == 1:
            log.info(
                "%s: finishing the current job, then stopping (again to abort)",
                signal.Signals(signum).name,
            )
            runner.request_stop()
        else:
            raise Shutdown(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _serve(runner: Runner, *, progress: bool) -> None:
    with logs.context(device=runner.device), _signals(runner):
        if progress and sys.stderr.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TextColumn("{task.completed} jobs"),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            ) as bar:
                task = bar.add_task("processing", total=None)
                runner.on_job = lambda w: bar.update(task, advance=1, description=w.name)
                code = runner.run()
        else:
            code = runner.run()
    raise typer.Exit(code)


@cli.command()
def watch(
    stage: Annotated[str, typer.Argument(help="The stage to serve (a \\[stages.NAME] table).")],
    device_id: DeviceOpt = "",
    until_idle: UntilIdleOpt = False,
    max_jobs: MaxJobsOpt = None,
    no_events: Annotated[
        bool, typer.Option("--no-events", help="Poll only; ignore inotify.")
    ] = False,
) -> None:
    """Serve one stage on this device (what one systemd unit runs)."""
    if not device_id:
        raise ConfigError("--device-id (or DASHSPOOL_DEVICE_ID) is required for watch")
    p = state.policies
    spool = wiring.open_spool(p)
    stop = threading.Event()
    workers = wiring.build_workers(spool, p, [stage], device_id, stop)
    runner = Runner(
        spool,
        p,
        device_id,
        workers,
        until_idle=until_idle,
        max_jobs=max_jobs,
        use_events=not no_events,
        stop=stop,
    )
    _serve(runner, progress=until_idle)


@cli.command()
def coordinator(until_idle: UntilIdleOpt = False) -> None:
    """The ledger writer and the scheduler (reaper, deferred release)."""
    p = state.policies
    spool = wiring.open_spool(p)
    coord = wiring.build_coordinator(spool, p)
    runner = Runner(spool, p, p.coordinator.device_id, [], coord, until_idle=until_idle)
    _serve(runner, progress=False)


@cli.command()
def run(
    device_id: Annotated[
        str, typer.Option("--device-id", envvar="DASHSPOOL_DEVICE_ID", help="This device's id.")
    ] = "local",
    until_idle: UntilIdleOpt = False,
    max_jobs: MaxJobsOpt = None,
) -> None:
    """Every stage and the coordinator in one process: the one-machine default."""
    p = state.policies
    spool = wiring.open_spool(p)
    stop = threading.Event()
    workers = wiring.build_workers(spool, p, p.order(), device_id, stop)
    coord = wiring.build_coordinator(spool, p)
    runner = Runner(
        spool, p, device_id, workers, coord, until_idle=until_idle, max_jobs=max_jobs, stop=stop
    )
    _serve(runner, progress=True)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


# the coordinator's scheduled duties (watchers/coordinator.py), listed even when not reported
DUTIES = ("reaper", "deferred-release", "retention", "backup")
ALERTS_SHOWN, ALERTS_HOURS = 10, 24


def _recent_alerts(p: Policies, now: datetime) -> list[dict[str, Any]] | None:
    """The ledger's alerts of the last day, newest first; None where there is no ledger (a
    watcher device) or it cannot be read."""
    if not p.ledger_path.is_file():
        return None
    from sqlalchemy.exc import SQLAlchemyError

    from watchers import retention as retention_mod

    try:
        ledger = wiring.open_ledger(p, read_only=True)
        try:
            since = now - timedelta(hours=ALERTS_HOURS)
            return _rows(retention_mod.alerts(ledger, since, ALERTS_SHOWN))
        finally:
            ledger.close()
    except SQLAlchemyError as e:  # e.g. a ledger the coordinator has not migrated yet
        log.warning("alerts not shown: the ledger at %s cannot be read: %s", p.ledger_path, e)
        return None


@cli.command()
def status(as_json: JsonOpt = False) -> None:
    """Per-stage counts, oldest pending age, devices with their last heartbeat, the
    coordinator's scheduled jobs, and the ledger's alerts of the last day."""
    p = state.policies
    spool = wiring.open_spool(p)
    now = utcnow()
    try:
        data = wiring.status(spool, p, now)
    except StorageUnavailable as e:  # what this machine knows without the spool; exit 5
        data = wiring.status_unreachable(spool, p, str(e), now)
    alerts = _recent_alerts(p, now)
    if alerts is not None:
        data["alerts"] = alerts
    if as_json:
        _print_json(data)
    else:
        _print_status(data)
    if not data["reachable"]:
        err.print(Text(f"dashspool: storage unavailable: {data['problem']}"))
        raise typer.Exit(EXIT_STORAGE)


def _print_status(data: dict[str, Any]) -> None:
    alerts = data.get("alerts")
    if not data["reachable"]:
        out.print(
            Text(f"spool {data['spool']}  ·  UNREACHABLE: {data['problem']}", style="bold red")
        )
        out.print("devices below: this machine's own watchers, from their local heartbeat copies")
    t = Table(
        title=f"spool {data['spool']}  ·  drops waiting: {data['drops_pending']}  ·  "
        f"ledger backlog: {data['ledger_backlog']}"
    )
    for col in ("stage", "inbox", "work", "deferred", "failed", "done", "oldest", "paused"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for name, c in data["stages"].items():
        t.add_row(
            name,
            *(str(c[k]) for k in ("inbox", "work", "deferred", "failed", "done")),
            _age(c["oldest_pending_age_seconds"]),
            "PAUSED" if c["paused"] else "",
        )
    if data["reachable"]:
        out.print(t)
    d = Table(title="devices")
    for col in ("device", "stage", "state", "last beat", "job", "host"):
        d.add_column(col)
    for dev in data["devices"]:
        d.add_row(
            dev["device_id"],
            dev["stage"] or "-",
            dev["state"],
            _age(dev["age_seconds"]),
            dev["current_job"] or "-",
            dev["host"] or "-",
        )
    out.print(d)
    j = Table(title="scheduled jobs")
    for col in ("device", "job", "last run", "last result", "next run"):
        j.add_column(col)
    for dev in data["devices"]:
        jobs: dict[str, dict[str, Any]] = dev["jobs"] or {}
        expected = DUTIES if dev["stage"] == "coordinator" else ()
        for name in [*expected, *sorted(set(jobs) - set(expected))]:
            info = jobs.get(name, {})
            j.add_row(
                dev["device_id"],
                name,
                info.get("last_run") or "-",
                info.get("last_result") or ("not reported" if not info else "not run yet"),
                info.get("next_run") or "-",
            )
    if j.row_count:
        out.print(j)
    if alerts:
        a = Table(title=f"alerts (last {ALERTS_HOURS} h, newest first)")
        for col in ("at", "level", "source", "message"):
            a.add_column(col)
        for r in alerts:
            a.add_row(r["at"], r["level"], r["source"], Text(r["message"]))
        out.print(a)


@cli.command()
def health(as_json: JsonOpt = False) -> None:
    """Check the alert thresholds (policies.toml, health section) once: pending jobs and
    their age per stage, silent devices, free space of the spool and stores, the ledger's
    backlog. One line per problem; exit 0 ok, 1 warning, 2 critical (3: configuration error)."""
    from watchers import health as health_mod

    report = health_mod.check(state.policies, utcnow())
    if as_json:
        _print_json(report.as_dict())
    else:
        for line in report.lines():
            out.print(Text(line), soft_wrap=True)
    raise typer.Exit(int(report.level))


def _ledger() -> Any:
    return wiring.open_ledger(state.policies, read_only=True)


def _rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in rows]


def _event_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [{**e.model_dump(), "data": json.loads(e.data)} for e in rows]


Column = tuple[str, Callable[[dict[str, Any]], Any]]


def _fields(*keys: str) -> list[Column]:
    return [(k, lambda r, k=k: r[k]) for k in keys]  # type: ignore[misc]


def _show(rows: list[dict[str, Any]], columns: list[Column], *, as_json: bool) -> None:
    """JSON for scripts, or a table with one column per (header, cell function)."""
    if as_json:
        _print_json(rows)
        return
    t = Table()
    for header, _ in columns:
        t.add_column(header)
    for r in rows:
        t.add_row(*(str(cell(r) or "-") for _, cell in columns))
    out.print(t)


@ledger_cli.command("videos")
def ledger_videos(
    state_filter: Annotated[
        str | None, typer.Option("--state", help="Only videos in this state.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Videos, newest first: id, original name, state, stage, frames kept, times."""
    rows = _rows(_ledger().videos(state=state_filter, limit=limit))
    columns: list[Column] = [
        ("video_id", lambda r: r["video_id"][:12]),
        *_fields("source_name", "state", "stage"),
        ("frames", lambda r: "-" if r["frames_kept"] is None else str(r["frames_kept"])),
        *_fields("created_at", "updated_at"),
    ]
    _show(rows, columns, as_json=as_json)


@ledger_cli.command("video")
def ledger_video(
    video: Annotated[str, typer.Argument(help="Video id (a prefix will do) or job name.")],
    as_json: JsonOpt = False,
) -> None:
    """One video's whole history: every stage attempt and every event."""
    ledger = _ledger()
    found = ledger.find_video(video)
    if len(found) != 1:
        raise NotFound(f"{len(found)} videos match {video!r}" + ("" if found else " (none)"))
    v = found[0]
    attempts, events = ledger.history(v.video_id)
    data = {
        "video": v.model_dump(),
        "attempts": _rows(attempts),
        "events": _event_rows(events),
    }
    if as_json:
        _print_json(data)
        return
    out.print(f"[bold]{v.source_name}[/]  {v.video_id}  state={v.state} stage={v.stage}")
    if v.frames_kept is not None:
        seen = ", ".join(f"{k} x{n}" for k, n in json.loads(v.objects or "{}").items())
        out.print(
            f"preprocess: {v.frames_kept} of {v.frames_sampled} frames kept, "
            f"motion up to {v.motion_max or 0:.3f}" + (f", seen: {seen}" if seen else "")
        )
        if v.heavy_skipped:
            out.print(f"heavy skipped: {v.heavy_skipped}", markup=False)
    t = Table(title="stage attempts")
    for col in ("stage", "attempt", "device", "outcome", "started", "finished", "seconds", "error"):
        t.add_column(col)
    for a in attempts:
        t.add_row(
            a.stage,
            str(a.attempt),
            a.device,
            a.outcome,
            a.started_at or "-",
            a.finished_at or "-",
            f"{a.duration_seconds or 0:.3f}",
            a.error or "",
        )
    out.print(t)


@ledger_cli.command("trips")
def ledger_trips(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Trips, newest first: consecutive clips until a gap longer than ledger.trip_gap_seconds."""
    rows = _rows(_ledger().trips(limit))
    columns: list[Column] = [
        *_fields("trip_id", "start_utc", "end_utc", "clips", "moments"),
        ("km", lambda r: f"{r['distance_m'] / 1000:.2f}"),
        ("minutes", lambda r: f"{r['duration_seconds'] / 60:.1f}"),
    ]
    _show(rows, columns, as_json=as_json)


@ledger_cli.command("trip")
def ledger_trip(
    trip_id: Annotated[str, typer.Argument(help="Trip id (a prefix will do).")],
    gpx: Annotated[
        str | None,
        typer.Option(
            "--gpx", help="Write the whole trip's track as GPX 1.1 to this file (- for stdout)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One trip: its clips, start and end, distance and duration; --gpx exports its track."""
    trip, clips, points = _ledger().trip(trip_id)
    if gpx is not None:
        from stages.gps import Fix
        from stages.gps.track import to_gpx
        from watchers import catalog

        fixes = [
            Fix(
                time=catalog.parse_ts(p.t),
                lat=p.lat,
                lon=p.lon,
                speed_kmh=p.speed_kmh,
                bearing_deg=p.bearing_deg,
                alt_m=p.alt_m,
            )
            for p in points
        ]
        text = to_gpx(fixes, name=f"dashspool trip {trip.trip_id}")
        if gpx == "-":
            sys.stdout.write(text)
            return
        Path(gpx).write_text(text, encoding="utf-8")
    data = {"trip": trip.model_dump(), "clips": _rows(clips), "points": len(points)}
    if as_json:
        _print_json(data)
        return
    out.print(
        f"[bold]trip {trip.trip_id}[/]  {trip.start_utc} → {trip.end_utc}  "
        f"{trip.distance_m / 1000:.2f} km  {trip.duration_seconds / 60:.1f} min  "
        f"{trip.clips} clips  {len(points)} GPS points"
    )
    if gpx not in (None, "-"):
        out.print(f"track written to {gpx}")
    columns: list[Column] = [
        ("video_id", lambda r: r["video_id"][:12]),
        *_fields("source_name", "channel", "start_utc", "recorded_at", "state", "gps_points"),
    ]
    _show(_rows(clips), columns, as_json=False)


def _place(r: dict[str, Any]) -> str:
    return "-" if r["lat"] is None else f"{r['lat']:.5f},{r['lon']:.5f}"


class PlateMatchOpt(str, Enum):
    PREFIX = "prefix"
    EXACT = "exact"
    PARTIAL = "partial"
    FUZZY = "fuzzy"


@ledger_cli.command("plates")
def ledger_plates(
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="TEXT", help="Plate text or its start; case, spaces and dashes are ignored."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    match: Annotated[
        PlateMatchOpt,
        typer.Option(
            "--match",
            help="prefix: plates that start with TEXT; exact; partial: that contain it; "
            "fuzzy: TEXT with one OCR confusion allowed (0/O, 8/B, 1/I, 5/S, 2/Z...).",
        ),
    ] = PlateMatchOpt.PREFIX,
    as_json: JsonOpt = False,
) -> None:
    """Where and when a plate was seen: plates read by heavy, newest first."""
    from watchers.labels import plate_key

    if text is not None and not plate_key(text):
        raise typer.BadParameter(f"{text!r} has no letter or digit", param_hint="TEXT")
    columns: list[Column] = [
        *_fields("text", "utc"),
        ("clip", lambda r: r["source_name"]),
        *_fields("recorded_at"),
        ("at", lambda r: f"{r['time_s']:.1f}s"),
        ("confidence", lambda r: f"{r['confidence']:.2f}"),
        *_fields("reads", "trip_id"),
        ("where", _place),
    ]
    _show(_rows(_ledger().plates(text, limit, match.value)), columns, as_json=as_json)


@ledger_cli.command("detections")
def ledger_detections(
    label: Annotated[
        str | None, typer.Option("--label", help="Only this class (car, truck, person...).")
    ] = None,
    trip: Annotated[
        str | None, typer.Option("--trip", help="Only this trip (id or unique prefix).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="First seen at or after: ISO time or age.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="First seen before: ISO time or age.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Objects tracked by heavy, newest first (in time order with --trip)."""
    rows = _ledger().detections(
        label=label,
        trip=trip,
        since=_parse_since(since) if since else None,
        until=_parse_since(until) if until else None,
        limit=limit,
    )
    columns: list[Column] = [
        *_fields("label", "first_utc"),
        ("clip", lambda r: r["source_name"]),
        *_fields("recorded_at"),
        ("at", lambda r: f"{r['first_s']:.1f}-{r['last_s']:.1f}s"),
        ("score", lambda r: f"{r['score']:.2f}"),
        *_fields("frames", "trip_id"),
        ("where", _place),
    ]
    _show(_rows(rows), columns, as_json=as_json)


def _parse_near(value: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use LAT,LON in decimal degrees, such as 51.5007,-0.1246",
            param_hint="--near",
        ) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also false for nan
        raise typer.BadParameter(
            f"{value!r}: latitude must be within ±90 and longitude within ±180",
            param_hint="--near",
        )
    return lat, lon


@ledger_cli.command("search")
def ledger_search(
    near: Annotated[
        str, typer.Option("--near", help="LAT,LON in decimal degrees (51.5007,-0.1246).")
    ],
    radius_m: Annotated[
        float, typer.Option("--radius-m", min=1.0, help="Search radius in metres.")
    ] = 200.0,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """What was seen near a place: detections and plates within a radius, nearest first."""
    lat, lon = _parse_near(near)
    columns: list[Column] = [
        ("metres", lambda r: f"{r['distance_m']:.0f}"),
        *_fields("kind", "what", "utc"),
        ("clip", lambda r: r["source_name"]),
        *_fields("recorded_at"),
        ("at", lambda r: f"{r['time_s']:.1f}s"),
        *_fields("trip_id"),
        ("where", _place),
    ]
    _show(_rows(_ledger().near(lat, lon, radius_m, limit)), columns, as_json=as_json)


@ledger_cli.command("failures")
def ledger_failures(
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Failed jobs and rejected drops, newest first, with their reasons."""
    columns: list[Column] = [
        *_fields("at", "kind", "stage"),
        ("job", lambda r: r["job"] or r["data"].get("source_name")),
        ("reason", lambda r: r["data"].get("error") or r["data"].get("reason")),
    ]
    _show(_event_rows(_ledger().failures(limit)), columns, as_json=as_json)


def _parse_since(value: str) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].isdigit():
        return utcnow() - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            "use an ISO time (2024-01-01T12:00) or an age (90m, 2h, 7d)"
        ) from None
    return ts if ts.tzinfo else ts.astimezone()


@ledger_cli.command("events")
def ledger_events(
    since: Annotated[str, typer.Option("--since", help="ISO time or age such as 2h.")] = "1h",
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 1000,
    as_json: JsonOpt = False,
) -> None:
    """Progress events since a time, oldest first."""
    rows = _event_rows(_ledger().events_since(_parse_since(since), limit))
    _show(rows, _fields("at", "kind", "device", "stage", "job"), as_json=as_json)


def _parse_time(value: str, hint: str) -> datetime:
    """An ISO time; one without an offset is UTC (unlike --since, which reads it as local)."""
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use an ISO time such as 2026-03-01T12:00 (UTC) or 2026-03-01T12:00+01:00",
            param_hint=hint,
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def _size(n: int | None) -> str:
    from watchers.retention import human_size

    return "-" if n is None else human_size(n)


SinceOpt = Annotated[
    str | None, typer.Option("--since", help="At or after: ISO time or age such as 7d.")
]
LimitOpt = Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")]


@ledger_cli.command("deletions")
def ledger_deletions(
    since: SinceOpt = None, limit: LimitOpt = 100, as_json: JsonOpt = False
) -> None:
    """What retention deleted (raw clips, finished jobs), newest first, and why."""
    from watchers import retention as retention_mod

    rows = retention_mod.deletions(_ledger(), _parse_since(since) if since else None, limit)
    columns: list[Column] = [
        *_fields("at", "store", "path"),
        ("video", lambda r: (r["video_id"] or "-")[:12]),
        *_fields("reason"),
        ("size", lambda r: _size(r["bytes"])),
    ]
    _show(_rows(rows), columns, as_json=as_json)


@ledger_cli.command("alerts")
def ledger_alerts(since: SinceOpt = None, limit: LimitOpt = 100, as_json: JsonOpt = False) -> None:
    """Alerts (free space, retention's sanity guard, missing archive copies), newest first."""
    from watchers import retention as retention_mod

    rows = retention_mod.alerts(_ledger(), _parse_since(since) if since else None, limit)
    columns = _fields("at", "level", "source", "message")
    _show(_rows(rows), columns, as_json=as_json)


@models_cli.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Option("--name", help="Ultralytics model name.")] = "yolov8n",
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put them (default: models/ beside policies.toml)."),
    ] = None,
    formats: Annotated[
        list[str] | None,
        typer.Option("--format", help="pt (always) and/or onnx (exported from the .pt)."),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="A mirror folder (http/https) to fetch from.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch YOLO weights (and export ONNX), on a machine with internet; then copy the folder
    to the devices and point [stages.*.detector] model at it."""
    from stages.models import FetchError, fetch

    target = folder or state.policies.path("models")
    try:
        made = fetch(name, target, base_url=base_url, formats=tuple(formats or ["pt"]))
    except FetchError as e:
        err.print(f"dashspool: {e}", markup=False)
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        _print_json({"files": [str(m) for m in made]})
        return
    for m in made:
        out.print(str(m), markup=False)


@cli.command()
def requeue(
    video: Annotated[str, typer.Argument(help="Video id prefix, short hash or job name.")],
    stage: Annotated[str, typer.Option("--stage", help="The stage to run it through again.")],
    as_json: JsonOpt = False,
) -> None:
    """Put a failed or deferred job back in its stage's inbox, attempts reset."""
    from watchers import actions

    p = state.policies
    result = actions.requeue(wiring.open_spool(p), p, video, stage)
    if as_json:
        _print_json(result)
    else:
        out.print(f"requeued {result['job']}: {stage}/{result['from']} -> {stage}/inbox")


@cli.command()
def pause(
    stage: Annotated[
        str, typer.Argument(help="Stage to pause (claims stop; work in hand finishes).")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Written into the PAUSED file.")] = "",
) -> None:
    """Pause a stage: creates <stage>/PAUSED, visible with ls."""
    from watchers import actions

    p = state.policies
    actions.pause(wiring.open_spool(p), p, stage, reason)
    out.print(f"{stage} paused")


@cli.command()
def resume(stage: Annotated[str, typer.Argument(help="Stage to resume.")]) -> None:
    """Resume a paused stage (removes <stage>/PAUSED)."""
    from watchers import actions

    p = state.policies
    was = actions.resume(wiring.open_spool(p), p, stage)
    out.print(f"{stage} resumed" if was else f"{stage} was not paused")


@cli.command()
def web(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default [web] host: 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="Port (default [web] port: 8080)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, max=64, help="Server processes (default [web] workers: 1)."
        ),
    ] = None,
) -> None:
    """The web UI and its JSON API (docs/web.md). Beyond loopback it needs a token:
    $DASHSPOOL_WEB_TOKEN or a file named by $DASHSPOOL_WEB_TOKEN_FILE."""
    import uvicorn

    from watchers.web import BIND_ENV, LOOPBACK_HOSTS, create_app
    from watchers.web.security import check_bind, is_loopback, load_token

    p = state.policies
    bind = host or p.web.host
    token = load_token()
    check_bind(bind, token)
    app = create_app(p, token=token, allowed_hosts=LOOPBACK_HOSTS if is_loopback(bind) else None)
    mode = "actions need the token" if token else "read-only (no token)"
    n = workers or p.web.workers
    log.info("web UI on http://%s:%d/ (%s; %d process(es))", bind, port or p.web.port, mode, n)
    options: dict[str, Any] = {"log_level": "warning", "access_log": False}
    if n == 1:
        uvicorn.run(app, host=bind, port=port or p.web.port, **options)
        return
    # worker processes build their own app from the same settings (watchers.web.from_environment)
    if p.source is not None:
        os.environ["DASHSPOOL_CONFIG"] = str(p.source)
    os.environ["DASHSPOOL_SPOOL"] = p.spool_url
    os.environ[BIND_ENV] = bind
    uvicorn.run(
        "watchers.web:from_environment",
        factory=True,
        workers=n,
        host=bind,
        port=port or p.web.port,
        **options,
    )


@cli.command()
def retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would go and why; change nothing.")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="With --dry-run: as if it were this ISO time (UTC without an offset).",
        ),
    ] = None,
    allow_mass_delete: Annotated[
        bool,
        typer.Option(
            "--allow-mass-delete",
            help="Delete even more than retention.max_sweep_fraction of a store.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete archived raw clips and finished jobs past their retention (policies.toml,
    retention section), each recorded in the ledger; exit 6 when the sanity guard blocked a
    store."""
    from watchers import retention as retention_mod

    p = state.policies
    if now and not dry_run:
        raise typer.BadParameter(
            "--now only previews a date: use it with --dry-run", param_hint="--now"
        )
    when = _parse_time(now, "--now") if now else utcnow()
    spool = wiring.open_spool(p)
    ledger = wiring.open_ledger(p, read_only=dry_run)  # a dry run never writes the ledger
    try:
        result = retention_mod.sweep(
            spool, p, ledger, when, dry_run=dry_run, allow_mass_delete=allow_mass_delete
        )
    finally:
        ledger.close()
    code = EXIT_FINDINGS if result.blocked else 0
    if as_json:
        _print_json(result.to_json())
        raise typer.Exit(code)
    items = result.planned if dry_run else result.deleted
    t = Table(title=f"{'would delete' if dry_run else 'deleted'} (as of {iso(when)})")
    for col in ("store", "path", "video", "reason", "size"):
        t.add_column(col, overflow="fold")
    for i in items:
        t.add_row(i.store, Text(i.path), (i.video_id or "-")[:12], Text(i.reason), _size(i.bytes))
    out.print(t)
    for i, why in result.failed:
        out.print(Text(f"not deleted: {i.store} {i.path}: {why}"))
    kept = ", ".join(f"{why}: {n}" for why, n in sorted(result.kept.items()))
    out.print(Text(f"kept: {kept or 'nothing else looked at'}"))
    for a in result.alerts:
        out.print(Text(f"{a.level} alert ({a.source}): {a.message}"))
    if result.blocked:
        stores = ", ".join(result.blocked)
        out.print(Text(f"blocked by the sanity guard: {stores} (see the alert); exit 6", "red"))
    raise typer.Exit(code)


@cli.command("check-config")
def check_config(as_json: JsonOpt = False) -> None:
    """Load policies.toml, build every stage, and check that the spool (local, mounted or SMB),
    the stores, the ledger's folder and the backup folder can be reached and written; each
    problem is named. Exit 3 for a wrong setting or refused access, 5 for an unreachable one."""
    p = state.policies
    from stages import REGISTRY

    stages = REGISTRY.build(p)
    for s in stages.values():
        with contextlib.suppress(StorageUnavailable):  # a store away: its check below says so
            s.setup(p)
    checks = [_check_spool(p), _check_store(p, "raw"), _check_store(p, "archive")]
    for what, value in (("ledger", str(p.ledger_path.parent)), ("backup.dir", p.backup.dir)):
        checks.append(_check_folder(p, what, value))
    result: dict[str, Any] = {
        "config": p.label,
        "checks": checks,
        "ok": all(c["ok"] for c in checks),
        "ledger": str(p.ledger_path),
        "pipeline": {
            n: {"type": stages[n].type_name, "next": list(p.stages[n].next)} for n in p.order()
        },
    }
    code = 0
    if not result["ok"]:
        code = EXIT_STORAGE if any(c.get("unreachable") for c in checks) else EXIT_CONFIG
    if as_json:
        _print_json(result)
        raise typer.Exit(code)
    out.print(f"config   {result['config']}")
    for c in checks:
        line = Text(f"{c['what']:<15}{c['where']}  ")
        line.append(c["detail"] if c["ok"] else c["problem"], "green" if c["ok"] else "red")
        out.print(line)
    for name, info in result["pipeline"].items():
        out.print(f"stage    {name}: {info['type']} -> {', '.join(info['next']) or '(end)'}")
    if code:
        err.print(Text(f"dashspool: configuration problems: {sum(not c['ok'] for c in checks)}"))
        raise typer.Exit(code)
    out.print("[green]configuration OK[/]")


def _check_spool(p: Policies) -> dict[str, Any]:
    """Reach the spool, lay it out and write, rename and remove a probe there."""
    check: dict[str, Any] = {"what": "spool", "where": p.spool_url, "ok": False}

    def probe() -> None:
        spool = wiring.open_spool(p)
        check["where"] = spool.backend.url  # an SMB URL as shown: never with a password
        try:
            spool.ensure_layout(p.order())
            _probe_writes(spool.backend, ".tmp")
            if spool.backend.local_root is not None:
                how = "inotify" if spool.backend.watchable else "polling (a network mount)"
            else:
                how = "the server's change notification"
            check.update(ok=True, detail=f"writable; new jobs seen through {how}")
        finally:
            for store in spool.stores.values():
                store.backend.close()
            spool.backend.close()

    return _checked(check, probe)


def _check_store(p: Policies, name: str) -> dict[str, Any]:
    """Reach a store (a folder or an smb:// URL), make its root, write, rename and remove a
    probe there."""
    from watchers import stores

    check: dict[str, Any] = {
        "what": f"stores.{name}",
        "where": stores.location(p, name),
        "ok": False,
    }

    def probe() -> None:
        store = stores.open_store(p, name)
        check["where"] = store.url
        try:
            store.backend.makedirs("")
            _probe_writes(store.backend, "")
            check.update(ok=True, detail="writable")
        finally:
            store.backend.close()

    return _checked(check, probe)


def _probe_writes(backend: Any, folder: str) -> None:
    probe = f"{folder}/.check-config~{os.getpid()}".lstrip("/")
    backend.write_bytes(probe, b"ok", fsync=True)
    backend.rename(probe, f"{probe}.renamed")
    backend.remove_file(f"{probe}.renamed")


def _checked(check: dict[str, Any], probe: Callable[[], None]) -> dict[str, Any]:
    """Run ``probe``; what goes wrong becomes the check's ``problem``, in words."""
    try:
        probe()
    except StorageUnavailable as e:
        check.update(problem=f"unreachable: {e}", unreachable=True)
    except ConfigError as e:
        check.update(problem=str(e))
    except PermissionError as e:
        check.update(problem=f"no permission to write there: {e}")
    except OSError as e:
        check.update(problem=f"cannot write there: {e.strerror or e}")
    return check


def _check_folder(p: Policies, what: str, value: str) -> dict[str, Any]:
    """A local (or mounted) folder: made if missing, and a probe written and removed."""
    check: dict[str, Any] = {"what": what, "where": value, "ok": False}
    folder = p.path(value)
    check["where"] = str(folder)
    probe = folder / f".check-config~{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except PermissionError:
        check["problem"] = "no permission to write there"
    except OSError as e:
        check["problem"] = f"cannot write there: {e.strerror or e}"
    else:
        check.update(ok=True, detail="writable")
    return check


# ---------------------------------------------------------------- backup, restore, verify
def _backup_failed(e: Exception) -> typer.Exit:
    err.print(Text(f"dashspool: {e}"))
    return typer.Exit(EXIT_ERROR)


@cli.command()
def backup(
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Where to put it (default: backup.dir in policies.toml)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up the ledger now (SQLite online backup, integrity-checked), then remove our backups
    older than backup.keep_days from that folder (the newest is always kept)."""
    from watchers import backup as backup_mod

    try:
        made, removed = backup_mod.backup_and_rotate(state.policies, utcnow(), folder)
    except backup_mod.BackupError as e:
        raise _backup_failed(e) from None
    if as_json:
        _print_json({"file": str(made), "bytes": made.stat().st_size, "removed": removed})
        return
    out.print(Text(f"backup written: {made} ({_size(made.stat().st_size)})"), soft_wrap=True)
    for r in removed:
        out.print(Text(f"removed old backup: {r}"), soft_wrap=True)


@cli.command()
def restore(
    file: Annotated[Path, typer.Argument(help="The backup to put back (a dashspool-*.db file).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before replacing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace the ledger with a backup: refused while the coordinator runs; the current ledger
    is first kept as a -pre-restore backup; the restored one is migrated to this version."""
    from watchers import backup as backup_mod

    p = state.policies
    spool = wiring.open_spool(p)
    now = utcnow()
    try:
        backup_mod.check_no_coordinator(spool, p, now)
        backup_mod.check_ledger_file(file)
        if not yes:
            typer.confirm(
                f"Replace the ledger {p.ledger_path} with {file}? (it is backed up first)",
                abort=True,
            )
        done = backup_mod.restore(spool, p, file, now)
    except backup_mod.BackupError as e:
        raise _backup_failed(e) from None
    if as_json:
        _print_json(
            {
                "restored_from": str(done.source),
                "ledger": str(done.ledger),
                "safety_copy": str(done.safety_copy) if done.safety_copy else None,
                "migrated": done.migrated,
                "removed": [str(r) for r in done.removed],
            }
        )
        return
    if done.safety_copy:
        out.print(Text(f"the ledger as it was is kept in {done.safety_copy}"), soft_wrap=True)
    for r in done.removed:
        out.print(Text(f"removed the old ledger's {r.name}"), soft_wrap=True)
    out.print(Text(f"ledger {done.ledger} restored from {done.source}"), soft_wrap=True)
    if done.migrated:
        out.print(Text(f"migrated to this version: {', '.join(done.migrated)}"), soft_wrap=True)


@cli.command()
def verify(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Queue the archive stage again for lost or damaged copies whose raw clip is "
            "still good (nothing is deleted).",
        ),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Compare sizes, not hashes; SQLite quick_check."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the ledger against the archive and raw stores: SQLite integrity, archived copies
    (present, size, sha256, meta.json), orphan folders, lost raw clips. Exit 6 when anything
    is wrong (an alert is recorded in the ledger); never deletes anything."""
    from watchers import verify as verify_mod

    p = state.policies
    now = utcnow()
    ledger = wiring.open_ledger(p, read_only=True)
    try:
        report = verify_mod.verify(p, ledger, quick=quick)
        if repair and not report.ok:
            verify_mod.repair(wiring.open_spool(p), p, ledger, report, now)
    finally:
        ledger.close()
    if not report.ok:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            writer = wiring.open_ledger(p)
            try:
                verify_mod.record_alert(writer, report, now)
            finally:
                writer.close()
        except SQLAlchemyError as e:  # a damaged ledger: the report still stands
            log.warning("alert not recorded in the ledger: %s", e)
    code = 0 if report.ok else EXIT_FINDINGS
    if as_json:
        _print_json(report.as_dict())
        raise typer.Exit(code)
    if report.findings:
        t = Table(title="problems")
        for col in ("kind", "video", "path", "detail"):
            t.add_column(col)
        for f in report.findings:
            t.add_row(f.kind, (f.video_id or "-")[:12], Text(f.path), Text(f.detail))
        out.print(t)
    if report.repairs:
        r = Table(title="repairs")
        for col in ("video", "action", "detail"):
            r.add_column(col)
        for x in report.repairs:
            r.add_row(x.video_id[:12], x.action, Text(x.detail))
        out.print(r)
    checked = ", ".join(f"{k}: {n}" for k, n in sorted(report.checked.items()))
    out.print(Text(f"checked {checked}; {report.summary()}"), soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    """Entry point: map errors to the documented exit codes with one human sentence."""
    handlers: list[tuple[type[BaseException], int, Callable[[BaseException], str]]] = [
        (ConfigError, EXIT_CONFIG, lambda e: f"configuration error: {e}"),
        (NotFound, EXIT_NOT_FOUND, lambda e: f"not found: {e}"),
        (StorageUnavailable, EXIT_STORAGE, lambda e: f"storage unavailable: {e}"),
        (Shutdown, EXIT_ABORTED, lambda e: f"aborted by {e}; the next start recovers the job"),
    ]
    try:
        # standalone_mode=False returns the code of typer.Exit / Ctrl-C instead of raising it
        code = cli(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except BaseException as e:
        from typer._click.exceptions import ClickException  # typer vendors click

        if isinstance(e, typer.Abort):
            sys.exit(EXIT_ABORTED)
        if isinstance(e, ClickException):
            e.show()
            sys.exit(e.exit_code)
        for cls, code, fmt in handlers:
            if isinstance(e, cls):
                err.print(f"[red]dashspool:[/] {fmt(e)}", highlight=False)
                sys.exit(code)
        raise


if __name__ == "__main__":
    main()
