"""Spool runtime benchmark: dashspool against a bare-filesystem floor and Huey, in one run.

    .venv/bin/python bench/spool.py [--jobs 500] [--rounds 3] [--samples 200] [--no-docs]

On one local disk, fsync on everywhere, all in this process:
  1. dashspool: jobs/s through a chain of three built-in ``copy`` stages (the entry stage adopts
     drops from ``<spool>/inbox/``), all workers in one ``watchers.watch.Runner`` thread, as
     ``dashspool run`` wires them; once without and once with the coordinator.
  2. drop->claimed latency (p50/p99) of an idle watcher: inotify on, and polling only.
  3. floor: a bare loop doing the same fsyncs and renames per job (counted on both sides).
  4. Huey (SqliteHuey, fsync=True): a chain of three no-op tasks, consumer threads in-process.
Writes bench/results/spool.json and the "Spool runtime" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import machine, parse_common, write_docs

from watchers import app
from watchers.backends import local as local_backend
from watchers.backends import open_backend
from watchers.config import Policies, load
from watchers.spool import Spool
from watchers.stage import NoSettings, Stage
from watchers.watch import Runner
from watchers.worker import Worker

REPO = Path(__file__).resolve().parents[1]
STAGES = ("a", "b", "c")
DEVICE = "bench"
PAYLOAD = os.urandom(1024)
BEGIN, END = "<!-- bench/spool.py:begin -->", "<!-- bench/spool.py:end -->"


def make_policies(root: Path, stages: tuple[str, ...] = STAGES, rescan: float = 30.0) -> Policies:
    """Write a policies.toml the way a user would, and load it."""
    toml = f'[spool]\npath = "spool"\nfsync = true\nsettle_seconds = 0\nrescan_seconds = {rescan}\n'
    toml += f'[pipeline]\nentry = "{stages[0]}"\n'
    for name, nxt in zip(stages, [*stages[1:], None], strict=True):
        toml += f'[stages.{name}]\ntype = "copy"\nnext = {json.dumps([nxt] if nxt else [])}\n'
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.toml").write_text(toml)
    return load(root / "policies.toml")


def drop_files(inbox: Path, n: int) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (inbox / f"clip-{i:06d}.mp4").write_bytes(PAYLOAD)


def rate(n: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"jobs": n, **extra, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds, 1)}


def pct(values: list[float], p: int) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[p - 1], 2)


class Counter:
    """Counts fsyncs, renames (renameat2 included) and directory listings while active."""

    def __init__(self) -> None:
        self.n = {"fsync": 0, "rename": 0, "scandir": 0}

    def _wrap(self, key: str, fn: Any) -> Any:
        def counted(*a: Any, **kw: Any) -> Any:
            self.n[key] += 1
            return fn(*a, **kw)

        return counted

    def __enter__(self) -> Counter:
        self.saved = (os.fsync, os.rename, os.replace, os.scandir, local_backend._renameat2)
        os.fsync, os.rename = self._wrap("fsync", os.fsync), self._wrap("rename", os.rename)
        os.replace = self._wrap("rename", os.replace)
        os.scandir = self._wrap("scandir", os.scandir)
        if local_backend._renameat2 is not None:
            local_backend._renameat2 = self._wrap("rename", local_backend._renameat2)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.fsync, os.rename, os.replace, os.scandir, local_backend._renameat2 = self.saved

    def per_job(self, jobs: int) -> dict[str, float]:
        return {k: round(v / jobs, 2) for k, v in self.n.items()}


# ---------------------------------------------------------------------------------- dashspool
def dashspool_chain(root: Path, n: int, *, coordinator: bool = False) -> dict[str, Any]:
    """Drop n files, then time the Runner until the n-th job completes the last stage (with the
    coordinator: until ``--until-idle`` returns, i.e. the ledger has ingested every event)."""
    policies = make_policies(root)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    drop_files(root / "spool" / "inbox", n)
    stop = threading.Event()
    workers = app.build_workers(spool, policies, policies.order(), DEVICE, stop)
    coord = app.build_coordinator(spool, policies) if coordinator else None
    state = {"done": 0, "t_end": 0.0}

    def on_job(w: Worker) -> None:
        if w.name == STAGES[-1]:
            state["done"] += 1
            if state["done"] == n and coord is None:
                state["t_end"] = time.perf_counter()
                runner.request_stop()

    runner = Runner(spool, policies, DEVICE, workers, coord, until_idle=True, stop=stop)
    runner.on_job = on_job
    t0 = time.perf_counter()
    runner.run()
    t_end = state["t_end"] or time.perf_counter()
    finished = len(list((root / "spool" / STAGES[-1] / "done").iterdir()))
    assert finished == n, f"only {finished}/{n} jobs reached {STAGES[-1]}/done"
    return rate(n, t_end - t0)


# -------------------------------------------------------------------------------------- floor
def _write_fsync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _event(root: Path, seq: list[int], durable: bool = True) -> None:  # = Spool.emit
    seq[0] += 1
    data = json.dumps({"event": seq[0], "at": time.time()}).encode()
    if durable:
        _write_fsync(root / ".tmp" / "ev", data)
    else:
        (root / ".tmp" / "ev").write_bytes(data)
    os.rename(root / ".tmp" / "ev", root / "ledger" / f"{seq[0]:012d}.json")
    if durable:
        _fsync_dir(root / "ledger")


def floor_chain(root: Path, n: int) -> dict[str, Any]:
    """No framework: Spool.adopt/claim/emit/publish/finish's fsyncs and renames, nothing else."""
    for d in [".tmp", "ledger", "inbox"] + [f"{s}/{q}" for s in STAGES for q in ("inbox", "done")]:
        (root / d).mkdir(parents=True, exist_ok=True)
    for s in STAGES:
        (root / s / "work" / DEVICE).mkdir(parents=True)
    drop_files(root / "inbox", n)
    seq = [0]
    t0 = time.perf_counter()
    for i in range(n):
        name, job = f"clip-{i:06d}.mp4", f"clip-{i:06d}-abcdef"
        work = root / STAGES[0] / "work" / DEVICE / job
        os.mkdir(work)  # adopt: sidecar, the drop renamed into the claim, an event
        _write_fsync(work / ".job.json.t", json.dumps({"job": job, "files": [name]}).encode())
        os.replace(work / ".job.json.t", work / "job.json")
        os.rename(root / "inbox" / name, work / name)
        _event(root, seq, durable=False)  # video.new
        for k, stage in enumerate(STAGES):
            work = root / stage / "work" / DEVICE / job
            if k:  # claim
                os.rename(root / stage / "inbox" / job, work)
            json.loads((work / "job.json").read_bytes())
            _event(root, seq, durable=False)  # started
            if k + 1 < len(STAGES):  # publish: stage, fsync files + folder, rename, fsync inbox
                staged = root / ".tmp" / f"{DEVICE}~{i}" / job
                os.makedirs(staged)
                _write_fsync(staged / name, (work / name).read_bytes())
                _write_fsync(staged / "job.json", json.dumps({"job": job, "stage": k}).encode())
                _fsync_dir(staged)
                os.rename(staged, root / STAGES[k + 1] / "inbox" / job)
                _fsync_dir(root / STAGES[k + 1] / "inbox")
                os.rmdir(staged.parent)
            _event(root, seq)  # completed
            os.rename(work, root / stage / "done" / job)
    return rate(n, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------- Huey
def huey_chain(root: Path, n: int, workers: int) -> dict[str, Any]:
    from huey import SqliteHuey

    root.mkdir(parents=True)
    huey = SqliteHuey("bench", filename=str(root / "huey.db"), fsync=True)  # synchronous=FULL
    lock, state, finished = threading.Lock(), {"done": 0, "t_end": 0.0}, threading.Event()

    @huey.task()
    def c(i: int) -> None:
        with lock:
            state["done"] += 1
            if state["done"] == n:
                state["t_end"] = time.perf_counter()
                finished.set()

    @huey.task()
    def b(i: int) -> None:
        c(i)

    @huey.task()
    def a(i: int) -> None:
        b(i)

    for i in range(n):  # enqueued before the clock starts, like the dropped files
        a(i)
    consumer = huey.create_consumer(workers=workers, worker_type="thread", periodic=False)
    t0 = time.perf_counter()
    consumer.start()  # worker threads + scheduler thread, in this process
    ok = finished.wait(300)
    consumer.stop(graceful=True)
    assert ok, f"huey finished only {state['done']}/{n} chains"
    return rate(n, state["t_end"] - t0, workers=workers)


# ------------------------------------------------------------------------------------ latency
class Probe(Stage):
    """Records when process() starts, by drop name."""

    type_name = "probe"

    def __init__(self, name: str) -> None:
        super().__init__(name, NoSettings())
        self.started: dict[str, float] = {}

    def process(self, job: Any, ctx: Any) -> None:
        self.started[job.source_name] = time.perf_counter()


class TimedSpool(Spool):
    """Records when each drop was claimed (adopt returns right after its exclusive rename)."""

    claimed: dict[str, float]

    def adopt(self, entry: Any, stage: str, device: str, now: Any) -> Any:
        claim = super().adopt(entry, stage, device, now)
        if claim is not None:
            self.claimed[entry.name] = time.perf_counter()
        return claim


def latency(root: Path, samples: int, every: float, events: bool, rescan: float) -> dict:
    """An idle one-stage watcher; one drop renamed into <spool>/inbox every `every` seconds."""
    policies = make_policies(root, ("a",), rescan)
    spool = TimedSpool(open_backend(policies.spool_url), fsync=True)
    spool.claimed = {}
    spool.ensure_layout(policies.order())
    probe, stop = Probe("a"), threading.Event()
    worker = Worker(spool, policies, probe, DEVICE, stop=stop)
    runner = Runner(spool, policies, DEVICE, [worker], use_events=events, stop=stop)
    thread = threading.Thread(target=runner.run, name="runner")
    thread.start()
    while runner.state != "running":
        time.sleep(0.01)
    time.sleep(0.3)  # idle before the first drop
    outside, inbox = root / "outside", root / "spool" / "inbox"
    outside.mkdir()
    published: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(samples):
        name = f"clip-{i:06d}.mp4"
        (outside / name).write_bytes(PAYLOAD)
        time.sleep(max(0.0, start + i * every - time.perf_counter()))
        published[name] = time.perf_counter()
        os.rename(outside / name, inbox / name)
    deadline = time.perf_counter() + rescan + 10
    while len(probe.started) < samples and time.perf_counter() < deadline:
        time.sleep(0.01)
    runner.request_stop()
    thread.join()
    assert len(probe.started) == samples, f"only {len(probe.started)}/{samples} drops handled"
    claim = [(spool.claimed[k] - t) * 1e3 for k, t in published.items()]
    proc = [(probe.started[k] - t) * 1e3 for k, t in published.items()]
    return {
        "samples": samples,
        "claimed_ms": {"p50": pct(claim, 50), "p99": pct(claim, 99), "max": round(max(claim), 2)},
        "process_start_ms": {"p50": pct(proc, 50), "p99": pct(proc, 99)},
    }


# ---------------------------------------------------------------------------------- reporting
def rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(measurement, result) pairs, for the printed table and the docs table."""

    def tput(key: str, unit: str = "jobs/s") -> str:
        t = r["throughput"][key]
        return f"{t['median']} {unit} (runs: {', '.join(str(x) for x in t['runs'])})"

    out = [
        ("dashspool: 3 copy stages, one Runner, no coordinator", tput("dashspool")),
        ("dashspool run: the same + the coordinator ingesting the ledger", tput("dashspool_run")),
        ("floor: bare loop, the same fsyncs and renames", tput("floor")),
        ("Huey: SqliteHuey fsync=True, 1 worker thread", tput("huey_1", "chains/s")),
        ("Huey: SqliteHuey fsync=True, 2 worker threads", tput("huey_2", "chains/s")),
    ]
    for v in r["latency"].values():
        c, p = v["claimed_ms"], v["process_start_ms"]
        result = f"p50 {c['p50']} ms, p99 {c['p99']} ms (process() starts: p50 {p['p50']} ms)"
        out.append((f"drop->claimed, {v['label']}", result))
    return out


def docs_section(r: dict[str, Any]) -> str:
    m, pr, c = r["machine"], r["params"], r["ops_per_job"]
    table = "\n".join(f"| {a} | {b} |" for a, b in rows(r))
    targets = "\n".join(
        f"| {k} | {v['value']} | {v['goal']} | {'met' if v['met'] else '**not met**'} |"
        for k, v in r["targets"].items()
    )
    d, f, q = c["dashspool"], c["floor"], r["ratios"]
    rounds = ", ".join(str(x) for x in q["dashspool_over_floor_per_round"])
    return f"""{BEGIN}
`bench/spool.py --jobs {pr["jobs"]} --rounds {pr["rounds"]} --samples {pr["samples"]}`, run
{r["generated_at"]}: {m["nproc"]} CPUs ({m["cpu"]}), {m["filesystem"]} on local disk, Linux
{m["kernel"]}, Python {m["python"]}. fsync on everywhere (`spool.fsync = true`; SqliteHuey
`fsync=True`: WAL with `synchronous=FULL`), 1 KiB payloads, logging at WARNING, one process.
Throughput: the {pr["jobs"]} drops (or enqueued chains) exist before the clock starts; it stops
when the last one completes the third stage. Median of {pr["rounds"]} interleaved rounds (the
coordinator row: one run, timed until `--until-idle` returns). Latency: an idle watcher, one drop
renamed into `spool/inbox/` every {pr["interval_ms"]:g} ms, {pr["samples"]} drops; "claimed" is
when the exclusive rename into `work/` has returned.

| measurement | result |
|---|---|
{table}

Per job (three stages), counted in the same run: dashspool {d["fsync"]:g} fsyncs,
{d["rename"]:g} renames, {d["scandir"]:g} directory listings; the floor {f["fsync"]:g} fsyncs,
{f["rename"]:g} renames, {f["scandir"]:g} listings. Ratios of the medians: dashspool / floor =
{q["dashspool_over_floor"]} (round by round: {rounds}),
dashspool / best Huey = {q["dashspool_over_huey"]}.

| target (from the issue) | measured | goal | |
|---|---|---|---|
{targets}
{END}"""


# --------------------------------------------------------------------------------------- main
def count_ops(tmp: Path, jobs: int = 20) -> dict[str, Any]:
    """Warm-up, and the check that the floor does the fsyncs and renames dashspool does."""
    with Counter() as cd:
        dashspool_chain(tmp / "count-dashspool", jobs)
    with Counter() as cf:
        floor_chain(tmp / "count-floor", jobs)
    return {"dashspool": cd.per_job(jobs), "floor": cf.per_job(jobs)}


def throughput(tmp: Path, n: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("dashspool", "floor", "huey_1", "huey_2")
    }
    for i in range(rounds):  # interleaved: a slow patch of the disk hits everyone alike
        runs["floor"].append(floor_chain(tmp / f"floor-{i}", n))
        runs["dashspool"].append(dashspool_chain(tmp / f"dashspool-{i}", n))
        runs["huey_1"].append(huey_chain(tmp / f"huey1-{i}", n, 1))
        runs["huey_2"].append(huey_chain(tmp / f"huey2-{i}", n, 2))
        print(f"round {i + 1}:", {k: v[-1]["jobs_per_s"] for k, v in runs.items()}, flush=True)
    runs["dashspool_run"] = [dashspool_chain(tmp / "dashspool-run", n, coordinator=True)]
    out = {}
    for k, v in runs.items():
        per_s = [x["jobs_per_s"] for x in v]
        out[k] = {"runs": per_s, "median": round(statistics.median(per_s), 1)}
    return out


def latencies(tmp: Path, samples: int, every: float) -> dict[str, Any]:
    from watchdog.observers.inotify import InotifyObserver

    from watchers import watch

    lat = {}
    for key, label, events, rescan in (
        ("inotify", "inotify on, rescan 30 s", True, 30.0),
        ("polling", "polling only, rescan 1 s", False, 1.0),
    ):
        lat[key] = {"label": label, **latency(tmp / key, samples, every, events, rescan)}
    saved, watch.prompt_observer = watch.prompt_observer, InotifyObserver  # baseline, restored
    try:
        label = "baseline: watchdog's stock inotify observer (0.5 s move pairing), rescan 30 s"
        lat["stock"] = {"label": label, **latency(tmp / "stock", samples, every, True, 30.0)}
    finally:
        watch.prompt_observer = saved
    return lat


def verdict(r: dict[str, Any]) -> None:
    """Ratios and the issue's targets."""
    t = r["throughput"]
    ds, huey = t["dashspool"]["median"], max(t["huey_1"]["median"], t["huey_2"]["median"])
    vs_floor, vs_huey = round(ds / t["floor"]["median"], 2), round(ds / huey, 2)
    pairs = zip(t["dashspool"]["runs"], t["floor"]["runs"], strict=True)
    r["ratios"] = {
        "dashspool_over_floor": vs_floor,
        "dashspool_over_floor_per_round": [round(d / f, 2) for d, f in pairs],
        "dashspool_over_huey": vs_huey,
    }
    p50 = r["latency"]["inotify"]["claimed_ms"]["p50"]
    r["targets"] = {
        "throughput at least Huey's (best of 1 and 2 workers)": {
            "value": f"{vs_huey}x", "goal": ">= 1x", "met": vs_huey >= 1},
        "throughput within 2x of the floor": {
            "value": f"{vs_floor}x", "goal": ">= 0.5x", "met": vs_floor >= 0.5},
        "drop->claimed p50 with inotify": {
            "value": f"{p50} ms", "goal": "< 50 ms", "met": p50 < 50},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=500, help="drops / chains per throughput run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved throughput rounds")
    ap.add_argument("--samples", type=int, default=200, help="drops per latency run")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="between latency drops")
    args = parse_common(ap, "spool")
    tmp = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    params = {
        k: v for k, v in vars(args).items() if k in ("jobs", "rounds", "samples", "interval_ms")
    }
    r: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(tmp),
        "params": {**params, "payload_bytes": len(PAYLOAD)},
    }
    try:
        r["ops_per_job"] = count_ops(tmp)
        print("ops per job:", r["ops_per_job"], flush=True)
        r["throughput"] = throughput(tmp, args.jobs, args.rounds)
        r["latency"] = latencies(tmp, args.samples, args.interval_ms / 1e3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    verdict(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print()
    for a, b in rows(r):
        print(f"{a:<66} {b}")
    for k, v in r["targets"].items():
        print(f"target: {k}: {v['value']} (goal {v['goal']}): {'met' if v['met'] else 'NOT met'}")
    print(f"wrote {args.out}")
    if not args.no_docs:
        write_docs(args.docs, "Spool runtime", docs_section(r), BEGIN, END)
        print(f"wrote {args.docs}")


if __name__ == "__main__":
    main()
