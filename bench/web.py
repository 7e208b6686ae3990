"""Web benchmark: plate search and trip page latency on a two-year ledger, under wrk on loopback.

    .venv/bin/python bench/web.py [--scale 1] [--baseline-scale 0.01] [--seconds 15]
                                  [--connections 4] [--queries-only] [--no-docs]

Ledgers (bench/web_ledger.py, generated once and kept under ``<dir>/web-ledgers/``): at
``--scale 1`` 100 000 clips, 1 000 000 detections and 200 000 plates; the baseline is the same
generator at ``--baseline-scale`` (1 000 clips), so big / tiny is what the ledger's size costs.
Requests come from each ledger's own rows, seeded, and all of them find something: plate
searches a third each exact (a whole plate), partial (its first 3-4 characters) and fuzzy (the
plate with one OCR confusion, 0/O, 8/B, ...), ``limit=50``; trip ids drawn from all trips.

1. Query level, in this process: ``Ledger.plates`` (with ``match=`` when it takes one),
   ``Ledger.trip`` and ``queries.trip_detail`` (what the trip page and API build; its parts
   timed alone too) for every request of the lists, p50/p95, and EXPLAIN QUERY PLAN of the
   statements they send.
2. HTTP (when ``watchers.web`` is there): ``dashspool web`` on a free loopback port per
   ledger, then per row a 2 s warm-up and wrk (``--latency``; bench/web.lua picks the paths
   and prints p50/p90/p95/p99) for ``--seconds`` on ``GET /api/plates?q=&match=&limit=50``
   (the mix, and each mode alone on the big ledger), ``GET /trips/{id}`` and
   ``GET /api/trips/{id}`` with ``--connections``, the mix and the page again with 1; the
   floor is a 404 on the same server. ``--queries-only`` (or no ``watchers.web``) skips this.
Writes bench/results/web.json and the "Web (issue 8)" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from common import machine, met, parse_common, write_docs
from web_ledger import CONFUSIONS, Spec, cached

from watchers.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUA = REPO / "bench" / "web.lua"
BEGIN, END = "<!-- bench/web.py:begin -->", "<!-- bench/web.py:end -->"
MODES = ("exact", "partial", "fuzzy")
TARGETS = {"plates": 50.0, "trip_page": 200.0}  # p95, ms (issue 8)


def pct(values: list[float], p: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 2)


# --------------------------------------------------------------------------------- workload
def workload(path: Path, seed: int, n: int = 120) -> dict[str, list[str]]:
    """Plate queries per mode and trip ids, drawn from the ledger's own rows (seeded)."""
    rng = random.Random(seed)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    readings = [r[0] for r in db.execute("SELECT text FROM plates ORDER BY rowid")]
    trips = [r[0] for r in db.execute("SELECT trip_id FROM trips ORDER BY trip_id")]
    db.close()
    distinct = sorted(set(readings))
    # half as people search (a plate seen often is searched often), half any plate once seen
    picks = [rng.choice(readings) if i % 2 else rng.choice(distinct) for i in range(n)]
    fuzzy = []
    for text in picks:
        spots = [i for i, ch in enumerate(text) if ch in CONFUSIONS]
        i = rng.choice(spots) if spots else 0
        fuzzy.append(text[:i] + CONFUSIONS.get(text[i], text[i]) + text[i + 1 :])
    return {
        "exact": picks,
        "partial": [t[: rng.choice((3, 4))] for t in picks],
        "fuzzy": fuzzy,
        "trips": [rng.choice(trips) for _ in range(n)],
    }


def plate_paths(w: dict[str, list[str]], modes: tuple[str, ...], limit: int) -> list[str]:
    out = []
    for i in range(len(w["exact"])):
        for mode in modes:
            q = urllib.parse.quote(w[mode][i])
            out.append(f"/api/plates?q={q}&match={mode}&limit={limit}")
    return out


# ------------------------------------------------------------------------------ query level
def _timed(fn: Callable[[str], Any], args: list[str]) -> dict[str, Any]:
    for a in args[:5]:  # warm: page cache, statement cache
        fn(a)
    ms, sizes = [], []
    for a in args:
        t0 = time.perf_counter()
        got = fn(a)
        ms.append((time.perf_counter() - t0) * 1e3)
        sizes.append(got)
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "max_ms": round(max(ms), 2),
        "rows_median": statistics.median(sizes),
        "rows_max": max(sizes),
    }


def query_level(path: Path, w: dict[str, list[str]], limit: int) -> dict[str, Any]:
    ledger = Ledger(path, read_only=True)
    try:
        takes_match = "match" in inspect.signature(ledger.plates).parameters
        out: dict[str, Any] = {"plates_match_param": takes_match}
        for mode in MODES:

            def plates(q: str, mode: str = mode) -> int:
                return len(_plates_call(ledger, q, limit, mode if takes_match else None)())

            # without match=: Ledger.plates is a prefix search, so "fuzzy" finds the plates
            # that start with the misread text (usually none), "exact" those starting with it
            out[f"plates_{mode}"] = _timed(plates, w[mode])

        def trip(t: str) -> int:  # the CLI's `dashspool ledger trip`
            return len(ledger.trip(t)[2])  # its track points

        out["trip"] = _timed(trip, w["trips"])
        try:
            from watchers import queries
        except ImportError:
            return out

        def trip_detail(t: str) -> int:  # what the trip page and GET /api/trips/{id} build
            with ledger.reading() as s:
                d = queries.trip_detail(s, t)
            return len(d.points) + len(d.clips) + len(d.detections) + len(d.plates)

        out["trip_detail"] = _timed(trip_detail, w["trips"])
        out["trip_detail_parts"] = trip_parts(ledger, w["trips"][:40])
        return out
    finally:
        ledger.close()


def trip_parts(ledger: Ledger, trips: list[str]) -> dict[str, float]:
    """Where the trip page's query (``queries.trip_detail`` with the page's object cap) spends
    its time: its parts timed one by one, p50 ms."""
    from sqlmodel import Session, col, select

    from watchers import labels, queries
    from watchers.ledger import Video
    from watchers.web.pages import MAP_OBJECTS

    def clips(s: Session, t: str) -> Any:
        q = select(Video).where(Video.trip_id == t)
        return [queries.ClipRow.of(v) for v in s.exec(q.order_by(col(Video.start_utc)))]

    def detections(s: Session, t: str) -> Any:
        return labels.find_detections(
            s, label=None, trip=t, since=None, until=None, limit=MAP_OBJECTS, best=True
        )

    def plates(s: Session, t: str) -> Any:
        return labels.find_plates(s, None, queries.MAX_LABELS, trip=t)

    steps: dict[str, Callable[[Session, str], Any]] = {
        "clips, ClipRow models": clips,
        "track: one clip a moment, thinned (queries.trip_track)": queries.trip_track,
        f"objects: the {MAP_OBJECTS} best-scored (find_detections)": detections,
        "plates (find_plates)": plates,
        "objects: how many (count_detections)": labels.count_detections,
    }
    parts: dict[str, list[float]] = {}
    with ledger.reading() as s:
        for t in trips:
            for name, fn in steps.items():
                t0 = time.perf_counter()
                fn(s, t)
                parts.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
    return {k: pct(v, 50) for k, v in parts.items()}


def _plates_call(ledger: Ledger, q: str, limit: int, mode: str | None) -> Callable[[], Any]:
    if mode is None:
        return lambda: ledger.plates(q, limit)
    return lambda: ledger.plates(q, limit, match=mode)  # type: ignore[arg-type]


def _trip_detail(ledger: Ledger, trip: str) -> Any:
    from watchers import queries

    with ledger.reading() as s:
        return queries.trip_detail(s, trip)


def explain(path: Path, w: dict[str, list[str]], limit: int) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of the SQL the query functions send (captured from the engine)."""
    from sqlalchemy import event

    ledger = Ledger(path, read_only=True)
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, params: Any, *_a: Any) -> None:
        seen.append((statement, params))

    event.listen(ledger.engine, "before_cursor_execute", grab)
    plans: dict[str, list[str]] = {}
    try:
        takes_match = "match" in inspect.signature(ledger.plates).parameters
        runs: list[tuple[str, Callable[[], Any]]] = [
            (
                f"Ledger.plates ({m})",
                _plates_call(ledger, w[m][0], limit, m if takes_match else None),
            )
            for m in MODES
        ]
        for name, run in (
            *runs,
            ("Ledger.trip", lambda: ledger.trip(w["trips"][0])),
            ("queries.trip_detail", lambda: _trip_detail(ledger, w["trips"][0])),
        ):
            seen.clear()
            run()
            with ledger.engine.connect() as conn:
                for i, (stmt, params) in enumerate(seen):
                    if not stmt.lstrip().upper().startswith("SELECT"):
                        continue
                    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}", params).all()
                    plans[f"{name} #{i + 1}"] = [str(r[-1]) for r in rows]
    finally:
        ledger.close()
    return plans


# -------------------------------------------------------------------------------------- HTTP
def web_available() -> str | None:
    """None when ``watchers.web.create_app`` imports, else why not."""
    try:
        from watchers.web import create_app  # noqa: F401
    except ImportError as e:
        return f"watchers.web is not there yet ({e})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(ledger: Path, scratch: Path, workers: int = 1) -> Iterator[str]:
    """``dashspool web`` on a free loopback port with policies pointing at ``ledger``."""
    root = Path(tempfile.mkdtemp(prefix="web-", dir=scratch))
    (root / "policies.toml").write_text(f'[ledger]\npath = "{ledger}"\n')
    port = free_port()
    log = (root / "server.log").open("w")
    env = {**os.environ, "DASHSPOOL_CONFIG": str(root / "policies.toml")}
    cmd = [
        str(BIN / "dashspool"),
        "--log-level",
        "warning",
        "web",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"`dashspool web` exited {proc.returncode}: "
                    f"{(root / 'server.log').read_text()[-2000:]}"
                )
            try:
                urllib.request.urlopen(base + "/openapi.json", timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("`dashspool web` did not answer within 60 s") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def check(base: str, paths: list[str]) -> dict[str, Any]:
    """Each path once before the load: the statuses, how many plate searches found nothing,
    the median body size (a load of 404s or of empty answers would measure nothing)."""
    statuses: dict[str, int] = {}
    sizes, empty = [], 0
    for p in paths:
        try:
            with urllib.request.urlopen(base + p, timeout=60) as r:
                body = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            body, status = b"", e.code
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        sizes.append(len(body))
        if status == 200 and p.startswith("/api/plates") and json.loads(body) == []:
            empty += 1
    return {"statuses": statuses, "empty": empty, "bytes_median": statistics.median(sizes)}


def wrk(
    base: str, paths: list[str], scratch: Path, seconds: int, conns: int, threads: int
) -> dict[str, Any]:
    listing = scratch / f"wrk-paths-{os.getpid()}.txt"
    listing.write_text("\n".join(paths) + "\n")
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{conns}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base,
        "--",
        str(listing),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        listing.unlink()
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK-JSON "))
    r = json.loads(line.removeprefix("WRK-JSON "))
    return {
        **{f"p{p}_ms": round(r[f"p{p}_us"] / 1e3, 1) for p in (50, 90, 95, 99)},
        "max_ms": round(r["max_us"] / 1e3, 1),
        "requests": r["requests"],
        "req_per_s": round(r["requests"] / (r["duration_us"] / 1e6), 1),
        "errors": {
            k: r[k]
            for k in ("non_2xx_3xx", "connect_errors", "read_errors", "write_errors", "timeouts")
            if r[k]
        },
    }


def http_level(
    ledger: Path, w: dict[str, list[str]], args: argparse.Namespace, scratch: Path, big: bool
) -> dict[str, Any]:
    """One server on ``ledger``; each row: every path checked once (for the trips: the first
    20), a 2 s warm-up, then ``--seconds`` of wrk."""
    plates, trips = plate_paths(w, MODES, args.limit), [f"/trips/{t}" for t in w["trips"]]
    c = args.connections
    runs: list[tuple[str, list[str], int]] = [("plates", plates, c)]
    if big:
        runs += [(f"plates_{m}", plate_paths(w, (m,), args.limit), c) for m in MODES]
    runs += [("trip_page", trips, c), ("trip_api", [f"/api{p}" for p in trips], c)]
    if c != 1:
        runs += [("plates_c1", plates, 1), ("trip_page_c1", trips, 1)]
    if big:
        runs.append(("floor_404", ["/bench-no-such-page"], c))
    out: dict[str, Any] = {}
    with serve(ledger, scratch) as base:
        for name, paths, conns in runs:
            checked = (
                {} if name == "floor_404" else check(base, paths[:20] if "trip" in name else paths)
            )
            wrk(base, paths, scratch, 2, conns, args.threads)  # warm-up, not counted
            out[name] = {
                **wrk(base, paths, scratch, args.seconds, conns, args.threads),
                "connections": conns,
                **checked,
            }
            print(f"  {name}: {out[name]}", flush=True)
    if big:  # the same load on two server processes (dashspool web --workers 2)
        with serve(ledger, scratch, workers=2) as base:
            for name, paths in (("plates_w2", plates), ("trip_page_w2", trips)):
                wrk(base, paths, scratch, 2, c, args.threads)  # warm-up, not counted
                out[name] = {**wrk(base, paths, scratch, args.seconds, c, args.threads)}
                out[name]["connections"] = c
                print(f"  {name}: {out[name]}", flush=True)
    return out


# ---------------------------------------------------------------------------------- reporting
def http_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    big, tiny = r["http"]["big"], r["http"]["tiny"]
    labels = {
        "plates": "plate search, exact/partial/fuzzy mix",
        "plates_exact": "plate search, exact only",
        "plates_partial": "plate search, partial only",
        "plates_fuzzy": "plate search, fuzzy only",
        "trip_page": "trip page `GET /trips/{id}` (HTML)",
        "trip_api": "trip `GET /api/trips/{id}` (JSON)",
        "plates_c1": "plate search, mix, 1 connection",
        "trip_page_c1": "trip page, 1 connection",
        "plates_w2": "plate search, mix, `--workers 2`",
        "trip_page_w2": "trip page, `--workers 2`",
        "floor_404": "floor: a 404 on the same server",
    }
    out: list[tuple[str, ...]] = []
    for key, label in labels.items():
        if key not in big:
            continue
        b, t = big[key], tiny.get(key)
        ratio = f"{b['p95_ms'] / t['p95_ms']:.1f}x" if t and t["p95_ms"] else "-"
        tiny_cell = f"{t['p95_ms']} ms" if t else "-"
        out.append(
            (
                label,
                f"{b['p50_ms']} ms",
                f"{b['p95_ms']} ms",
                f"{b['p99_ms']} ms",
                f"{b['req_per_s']}",
                tiny_cell,
                ratio,
            )
        )
    return out


def query_rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    big, tiny = r["queries"]["big"], r["queries"]["tiny"]
    labels = {
        f"plates_{m}": f'`Ledger.plates(q, {r["params"]["limit"]}, match="{m}")`' for m in MODES
    }
    labels["trip"] = "`Ledger.trip(id)` (`dashspool ledger trip`), rows: points"
    labels["trip_detail"] = "`queries.trip_detail` (the API's trip: every object), rows: all"
    out: list[tuple[str, ...]] = []
    for key, label in labels.items():
        if key not in big:
            continue
        b, t = big[key], tiny[key]
        out.append(
            (
                label,
                f"{b['p50_ms']} ms",
                f"{b['p95_ms']} ms",
                f"{b['max_ms']} ms",
                f"{b['rows_median']:g} / {b['rows_max']:g}",
                f"{t['p95_ms']} ms",
                f"{b['p95_ms'] / t['p95_ms']:.1f}x" if t["p95_ms"] else "-",
            )
        )
    return out


def parts_table(r: dict[str, Any]) -> str:
    big = r["queries"]["big"].get("trip_detail_parts")
    if not big:
        return ""
    rows = [(k, f"{v} ms") for k, v in big.items()]
    return (
        "\nWhere the trip page's query time goes on the big ledger (each part alone, p50 of "
        "40 trips):\n\n" + table(("part", "p50"), rows) + "\n"
    )


def verdict(r: dict[str, Any]) -> None:
    r["targets"] = {}
    http = r.get("http", {}).get("big")
    src = "HTTP under wrk" if http else "query level only (no HTTP run)"
    for key, goal in TARGETS.items():
        if http:
            value = http[key]["p95_ms"]
        else:
            q = r["queries"]["big"]
            value = (
                max(q[f"plates_{m}"]["p95_ms"] for m in MODES)
                if key == "plates"
                else q.get("trip_detail", q["trip"])["p95_ms"]
            )
        r["targets"][key] = {"value": value, "goal": goal, "met": value < goal, "source": src}


def table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def fill(text: str) -> str:
    """One paragraph, wrapped at 100 columns (the values make the lines' lengths unknown)."""
    return textwrap.fill(" ".join(text.split()), 100, break_on_hyphens=False)


def docs_section(r: dict[str, Any]) -> str:
    m, p, lb, lt = r["machine"], r["params"], r["ledgers"]["big"], r["ledgers"]["tiny"]
    cmd = " ".join(["bench/web.py", *r["argv"]])
    out = [
        BEGIN,
        fill(f"""`{cmd}`, run {r["generated_at"]}: {m["nproc"]} CPUs ({m["cpu"]}),
        {m["filesystem"]}, Linux {m["kernel"]}, Python {m["python"]}, SQLite {r["sqlite"]}; no
        GPU. Ledger (`bench/web_ledger.py`, seed {p["seed"]}, scale {p["scale"]}, made in
        {lb["seconds"]:g} s): {lb["clips"]:,} clips (front and rear, 1 min each) in
        {lb["trips"]:,} trips over two years (clips per trip: median
        {lb["trip_clips"]["median"]}, max {lb["trip_clips"]["max"]}), {lb["track_points"]:,}
        track points (1 Hz, both channels), {lb["detections"]:,} detections, {lb["plates"]:,}
        plate readings of {lb["distinct_plates"]:,} distinct plates; {lb["bytes"] / 2**20:,.0f}
        MiB, read from the page cache. Baseline ("tiny"): the same generator at scale
        {p["baseline_scale"]} ({lt["clips"]:,} clips, {lt["plates"]:,} plates). Plate searches
        ask for {p["limit"]} results at most: a third each exact (a whole plate), partial (its
        first 3-4 characters) and fuzzy (the plate with one OCR confusion), all of them hits.
        Trips: drawn from all trips."""),
        "",
    ]
    if "http" in r:
        out += [
            fill(f"""HTTP: `dashspool web` (uvicorn, one process unless the row says
            `--workers 2`) on 127.0.0.1; wrk {p["wrk"]},
            {p["threads"]} thread, {p["connections"]} connections (unless the row says 1),
            {p["seconds"]} s per row after a 2 s warm-up, on the same CPUs as the server."""),
            "",
            table(
                ("request", "p50", "p95", "p99", "req/s", "p95, tiny ledger", "big / tiny"),
                http_rows(r),
            ),
        ]
    else:
        out.append(f"HTTP: not measured: {r['http_skipped']}.")
    out += [
        "",
        fill("""Query level, in one process, one request after the other (no HTTP): the
        functions the pages call, over the same request lists; rows: median / max returned."""),
        "",
        table(
            ("query", "p50", "p95", "max", "rows", "p95, tiny ledger", "big / tiny"), query_rows(r)
        ),
        parts_table(r),
        "| target (from the issue) | measured (p95) | goal | |",
        "|---|---|---|---|",
        *(
            f"| {k.replace('_', ' ')}, {v['source']} | {v['value']} ms | < {v['goal']:g} ms "
            f"| {met(v['met'])} |"
            for k, v in r["targets"].items()
        ),
        END,
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1: 100 k clips, 1 M detections")
    ap.add_argument("--baseline-scale", type=float, default=0.01, help="the tiny ledger")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=15, help="wrk's duration per row")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=50, help="plate search results per request")
    ap.add_argument("--queries-only", action="store_true", help="no server, no wrk")
    argv = sys.argv[1:]
    args = parse_common(ap, "web")
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    r: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "argv": argv,
        "machine": machine(args.dir),
        "sqlite": sqlite3.sqlite_version,
        "params": {
            k: getattr(args, k)
            for k in (
                "scale",
                "baseline_scale",
                "seed",
                "seconds",
                "connections",
                "threads",
                "limit",
            )
        }
        | {"wrk": wrk_version[1] if len(wrk_version) > 1 else "?"},
    }
    paths = {}
    r["ledgers"] = {}
    for which, scale in (("big", args.scale), ("tiny", args.baseline_scale)):
        paths[which], r["ledgers"][which] = cached(Spec(scale, args.seed), args.dir)
    loads = {k: workload(v, args.seed) for k, v in paths.items()}
    for path in paths.values():  # into the page cache: this measures queries, not the disk
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass
    r["queries"] = {}
    for which in ("big", "tiny"):
        print(f"query level, {which} ledger", flush=True)
        r["queries"][which] = query_level(paths[which], loads[which], args.limit)
        print(f"  {r['queries'][which]}", flush=True)
    r["plans"] = explain(paths["big"], loads["big"], args.limit)
    why = "--queries-only" if args.queries_only else web_available()
    if why is None:
        r["http"] = {}
        for which in ("big", "tiny"):
            print(f"HTTP, {which} ledger", flush=True)
            r["http"][which] = http_level(
                paths[which], loads[which], args, args.dir, which == "big"
            )
    else:
        r["http_skipped"] = why
    verdict(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print()
    if "http" in r:
        print(
            table(("request", "p50", "p95", "p99", "req/s", "p95 tiny", "big/tiny"), http_rows(r))
        )
    else:
        print(f"HTTP not measured: {r['http_skipped']}")
    print(table(("query", "p50", "p95", "max", "rows", "p95 tiny", "big/tiny"), query_rows(r)))
    for name, plan in r["plans"].items():
        print(f"plan {name}: " + "; ".join(plan))
    for k, v in r["targets"].items():
        print(
            f"target: {k} p95 ({v['source']}): {v['value']} ms (goal < {v['goal']:g} ms): "
            f"{'met' if v['met'] else 'NOT met'}"
        )
    print(f"wrote {args.out}")
    if not args.no_docs:
        write_docs(args.docs, "Web (issue 8)", docs_section(r), BEGIN, END)
        print(f"wrote {args.docs}")


if __name__ == "__main__":
    main()
