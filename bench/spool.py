"""Spool runtime benchmark: dashspool against a bare-filesystem floor and Huey, in one run.

    .venv/bin/python bench/spool.py [--jobs 500] [--samples 200] [--dir PATH] [--no-docs]

Measures, on one local disk with fsync on everywhere:
  1. dashspool: jobs/s through a 3-stage chain of the built-in ``copy`` stage (drops adopted from
     ``<spool>/inbox/``), all workers in one process with ``watchers.watch.Runner`` (what
     ``dashspool run`` does, without the coordinator; a second row adds it).
  2. drop->claimed latency p50/p99 for an idle watcher: inotify on, and polling only.
  3. floor: a bare loop doing the same fsyncs and renames per job-stage (counted, both sides).
  4. Huey (SqliteHuey, fsync on): a chain of three no-op tasks, one consumer in this process.
Writes bench/results/spool.json and the "Spool runtime" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------------ helpers
def make_policies(root: Path, stages: tuple[str, ...] = STAGES, rescan: float = 30.0) -> Policies:
    """Write a policies.toml the way a user would and load it."""
    lines = ['[spool]', 'path = "spool"', "fsync = true", "settle_seconds = 0",
             f"rescan_seconds = {rescan}", "[pipeline]", f'entry = "{stages[0]}"']
    for i, name in enumerate(stages):
        nxt = f'["{stages[i + 1]}"]' if i + 1 < len(stages) else "[]"
        lines += [f"[stages.{name}]", 'type = "copy"', f"next = {nxt}"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.toml").write_text("\n".join(lines) + "\n")
    return load(root / "policies.toml")


def drop_files(inbox: Path, n: int) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (inbox / f"clip-{i:06d}.mp4").write_bytes(PAYLOAD)


class Counter:
    """Counts fsyncs, renames and directory listings while active (os-level, both sides)."""

    def __init__(self) -> None:
        self.n = {"fsync": 0, "rename": 0, "scandir": 0}

    def _wrap(self, key: str, fn: Any) -> Any:
        def counted(*a: Any, **kw: Any) -> Any:
            self.n[key] += 1
            return fn(*a, **kw)
        return counted

    def __enter__(self) -> Counter:
        self.saved = (os.fsync, os.rename, os.scandir, local_backend._renameat2)
        os.fsync = self._wrap("fsync", os.fsync)
        os.rename = self._wrap("rename", os.rename)
        os.scandir = self._wrap("scandir", os.scandir)
        if local_backend._renameat2 is not None:
            local_backend._renameat2 = self._wrap("rename", local_backend._renameat2)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.fsync, os.rename, os.scandir, local_backend._renameat2 = self.saved

    def per_job(self, jobs: int) -> dict[str, float]:
        return {k: round(v / jobs, 2) for k, v in self.n.items()}


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


# ---------------------------------------------------------------------- dashspool
def dashspool_chain(root: Path, n: int, *, coordinator: bool = False) -> dict[str, Any]:
    """Drop n files, then time the Runner until the n-th job lands in the last stage's done/."""
    policies = make_policies(root)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    drop_files(spool.backend.local_root / "inbox", n)
    stop = threading.Event()
    workers = app.build_workers(spool, policies, policies.order(), DEVICE, stop)
    coord = app.build_coordinator(spool, policies) if coordinator else None
    state = {"done": 0, "t_end": 0.0}

    def on_job(w: Worker) -> None:
        if w.name == STAGES[-1]:
            state["done"] += 1
            if state["done"] == n:
                state["t_end"] = time.perf_counter()
                if coord is None:
                    runner.request_stop()

    runner = Runner(spool, policies, DEVICE, workers, coord, until_idle=True, stop=stop,
                    on_job=on_job)
    t0 = time.perf_counter()
    runner.run()
    t_idle = time.perf_counter()  # with the coordinator: the ledger has caught up too
    finished = len(list((spool.backend.local_root / STAGES[-1] / "done").iterdir()))
    assert finished == n, f"only {finished}/{n} jobs reached {STAGES[-1]}/done"
    seconds = (t_idle if coordinator else state["t_end"]) - t0
    return {"jobs": n, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds, 1)}


# -------------------------------------------------------------------------- floor
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


def _event(root: Path, seq: list[int]) -> None:
    seq[0] += 1
    tmp = root / ".tmp" / f"ev-{seq[0]}"
    _write_fsync(tmp, json.dumps({"event": seq[0], "at": time.time()}).encode())
    os.rename(tmp, root / "ledger" / f"{seq[0]:012d}.json")
    _fsync_dir(root / "ledger")


def floor_chain(root: Path, n: int) -> dict[str, Any]:
    """No framework: per job-stage the fsyncs and renames spool.adopt/emit/publish/claim/finish do."""
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
        os.mkdir(work)  # adopt: sidecar, then the drop renamed into the claim, then an event
        _write_fsync(work / "job.json", json.dumps({"job": job, "files": [name]}).encode())
        os.rename(root / "inbox" / name, work / name)
        _event(root, seq)
        for k, stage in enumerate(STAGES):
            work = root / stage / "work" / DEVICE / job
            if k:  # claim
                os.rename(root / stage / "inbox" / job, work)
            json.loads((work / "job.json").read_bytes())
            _event(root, seq)  # started
            if k + 1 < len(STAGES):  # publish: stage, fsync files + folder, rename, fsync inbox
                wrapper = root / ".tmp" / f"{DEVICE}~{i}"
                staged = wrapper / job
                os.makedirs(staged)
                _write_fsync(staged / name, (work / name).read_bytes())
                _write_fsync(staged / "job.json", json.dumps({"job": job, "stage": k}).encode())
                _fsync_dir(staged)
                inbox = root / STAGES[k + 1] / "inbox"
                os.rename(staged, inbox / job)
                _fsync_dir(inbox)
                os.rmdir(wrapper)
            _event(root, seq)  # completed
            os.rename(work, root / stage / "done" / job)
    seconds = time.perf_counter() - t0
    return {"jobs": n, "seconds": round(seconds, 3), "jobs_per_s": round(n / seconds, 1)}


# --------------------------------------------------------------------------- Huey
def huey_chain(root: Path, n: int, workers: int) -> dict[str, Any]:
    from huey import SqliteHuey

    root.mkdir(parents=True)
    huey = SqliteHuey("bench", filename=str(root / "huey.db"), fsync=True)  # synchronous=FULL
    lock, state = threading.Lock(), {"done": 0, "t_end": 0.0}
    finished = threading.Event()

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
    consumer.start()  # in this process: worker threads + scheduler thread
    ok = finished.wait(300)
    consumer.stop(graceful=True)
    assert ok, f"huey finished only {state['done']}/{n} chains"
    seconds = state["t_end"] - t0
    return {"jobs": n, "workers": workers, "seconds": round(seconds, 3),
            "jobs_per_s": round(n / seconds, 1)}


# ------------------------------------------------------------------------ latency
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


def latency(root: Path, samples: int, interval: float, *, events: bool, rescan: float
            ) -> dict[str, Any]:
    """An idle watcher; publish one drop every `interval` s (rename from outside the spool)."""
    policies = make_policies(root, ("a",), rescan)
    spool = TimedSpool(open_backend(policies.spool_url), fsync=True,
                       ignore_patterns=policies.spool.ignore_patterns)
    spool.claimed = {}
    spool.ensure_layout(policies.order())
    probe, stop = Probe("a"), threading.Event()
    runner = Runner(spool, policies, DEVICE, [Worker(spool, policies, probe, DEVICE, stop=stop)],
                    use_events=events, stop=stop)
    thread = threading.Thread(target=runner.run, name="runner")
    thread.start()
    while runner.state != "running":
        time.sleep(0.01)
    time.sleep(0.3)  # idle before the first drop
    outside, inbox = root / "outside", spool.backend.local_root / "inbox"
    outside.mkdir()
    published: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(samples):
        name = f"clip-{i:06d}.mp4"
        (outside / name).write_bytes(PAYLOAD)
        time.sleep(max(0.0, start + i * interval - time.perf_counter()))
        published[name] = time.perf_counter()
        os.rename(outside / name, inbox / name)
    deadline = time.perf_counter() + rescan + 10
    while len(probe.started) < samples and time.perf_counter() < deadline:
        time.sleep(0.01)
    runner.request_stop()
    thread.join()
    assert len(probe.started) == samples, f"only {len(probe.started)}/{samples} drops processed"
    claim = [(spool.claimed[k] - t) * 1e3 for k, t in published.items()]
    proc = [(probe.started[k] - t) * 1e3 for k, t in published.items()]
    return {"samples": samples, "interval_ms": interval * 1e3, "events": events,
            "rescan_seconds": rescan,
            "claimed_ms": {"p50": round(pct(claim, 50), 2), "p99": round(pct(claim, 99), 2)},
            "process_start_ms": {"p50": round(pct(proc, 50), 2), "p99": round(pct(proc, 99), 2)}}


# ---------------------------------------------------------------------- reporting
def machine(where: Path) -> dict[str, str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor() or "?")
    df = subprocess.run(["df", "-T", str(where)], capture_output=True, text=True).stdout.split()
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "filesystem": df[9] if len(df) > 9 else "?",
            "kernel": platform.release(), "python": platform.python_version()}


def docs_section(r: dict[str, Any]) -> str:
    m, ds, fl, t = r["machine"], r["dashspool"], r["floor"], r["targets"]
    hu = r["huey"]
    lat = {k: r["latency"][k] for k in r["latency"]}
    rows = [
        f"| dashspool, 3 copy stages, one Runner (`dashspool run` minus coordinator) | "
        f"{ds['jobs_per_s']} jobs/s |",
        f"| dashspool, same + coordinator ingesting the ledger (`dashspool run`) | "
        f"{r['dashspool_run']['jobs_per_s']} jobs/s |",
        f"| floor: bare loop, same fsyncs and renames | {fl['jobs_per_s']} jobs/s |",
        *(f"| Huey {h['workers']} thread worker(s), SqliteHuey fsync=True, 3 no-op tasks | "
          f"{h['jobs_per_s']} chains/s |" for h in hu),
        *(f"| drop->claimed, {name} | p50 {v['claimed_ms']['p50']} ms, "
          f"p99 {v['claimed_ms']['p99']} ms (process() start p50 {v['process_start_ms']['p50']} ms)"
          f" |" for name, v in lat.items()),
    ]
    c = r["ops_per_job"]
    targets = "\n".join(f"| {k} | {v['value']} | {v['goal']} | {'met' if v['met'] else 'NOT met'} |"
                        for k, v in t.items())
    return f"""{BEGIN}
Generated by `bench/spool.py --jobs {ds['jobs']} --samples {r['params']['samples']}` on
{r['generated_at']}: {m['nproc']} CPUs ({m['cpu']}), {m['filesystem']} on local disk, Linux
{m['kernel']}, Python {m['python']}. fsync on everywhere (`spool.fsync = true`; SqliteHuey
`fsync=True`, i.e. `synchronous=FULL` in WAL mode); 1 KiB payloads; logging at WARNING.

| measurement | result |
|---|---|
{chr(10).join(rows)}

Per job (all three stages), counted in the same run: dashspool {c['dashspool']['fsync']} fsyncs,
{c['dashspool']['rename']} renames, {c['dashspool']['scandir']} directory listings; floor
{c['floor']['fsync']} fsyncs, {c['floor']['rename']} renames, {c['floor']['scandir']} listings.
Ratios: dashspool / floor = {r['ratios']['dashspool_over_floor']},
dashspool / Huey (1 worker) = {r['ratios']['dashspool_over_huey']}.

| target (from the issue) | measured | goal | |
|---|---|---|---|
{targets}
{END}"""


def write_docs(path: Path, section: str) -> None:
    header = ("# Benchmarks\n\nBenchmarks live in `bench/` and are run with `make bench`; each "
              "compares against a baseline measured in the same run, on the same machine.\n")
    text = path.read_text() if path.exists() else header
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Spool runtime\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=500, help="jobs (drops / chains) per throughput run")
    ap.add_argument("--samples", type=int, default=200, help="drops per latency run")
    ap.add_argument("--interval-ms", type=float, default=20.0, help="time between latency drops")
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results",
                    help="scratch space on the disk to measure (not tmpfs)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "spool.json")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
    try:
        r: dict[str, Any] = {"generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
                             "machine": machine(tmp),
                             "params": {"jobs": args.jobs, "samples": args.samples,
                                        "interval_ms": args.interval_ms, "payload_bytes": 1024}}
        warm = 20  # also the counting pass: fsync/rename/listing counts per job, both sides
        with Counter() as cd:
            dashspool_chain(tmp / "count-dashspool", warm)
        with Counter() as cf:
            floor_chain(tmp / "count-floor", warm)
        r["ops_per_job"] = {"dashspool": cd.per_job(warm), "floor": cf.per_job(warm)}
        print(f"ops per job: dashspool {cd.per_job(warm)}  floor {cf.per_job(warm)}", flush=True)
        r["dashspool"] = dashspool_chain(tmp / "dashspool", args.jobs)
        print("dashspool", r["dashspool"], flush=True)
        r["dashspool_run"] = dashspool_chain(tmp / "dashspool-run", args.jobs, coordinator=True)
        print("dashspool + coordinator", r["dashspool_run"], flush=True)
        r["floor"] = floor_chain(tmp / "floor", args.jobs)
        print("floor", r["floor"], flush=True)
        r["huey"] = [huey_chain(tmp / f"huey-{w}", args.jobs, w) for w in (1, 2)]
        print("huey", r["huey"], flush=True)
        iv = args.interval_ms / 1e3
        r["latency"] = {
            "inotify (rescan 30 s)": latency(tmp / "lat-ev", args.samples, iv, events=True,
                                             rescan=30.0),
            "polling only (rescan 1 s)": latency(tmp / "lat-poll", args.samples, iv,
                                                 events=False, rescan=1.0),
        }
        print("latency", json.dumps(r["latency"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ds, huey1 = r["dashspool"]["jobs_per_s"], r["huey"][0]["jobs_per_s"]
    ratio_floor, ratio_huey = round(ds / r["floor"]["jobs_per_s"], 2), round(ds / huey1, 2)
    p50 = r["latency"]["inotify (rescan 30 s)"]["claimed_ms"]["p50"]
    r["ratios"] = {"dashspool_over_floor": ratio_floor, "dashspool_over_huey": ratio_huey}
    r["targets"] = {
        "throughput vs Huey (1 worker)": {"value": f"{ratio_huey}x", "goal": ">= 1x",
                                          "met": ratio_huey >= 1},
        "throughput vs floor": {"value": f"{ratio_floor}x", "goal": ">= 0.5x (within 2x)",
                                "met": ratio_floor >= 0.5},
        "drop->claimed p50, inotify": {"value": f"{p50} ms", "goal": "< 50 ms", "met": p50 < 50},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    print(f"\n{'measurement':<44}{'result':>30}")
    print(f"{'dashspool jobs/s (Runner, 3 stages)':<44}{ds:>30}")
    print(f"{'dashspool run jobs/s (+ coordinator)':<44}{r['dashspool_run']['jobs_per_s']:>30}")
    print(f"{'floor jobs/s':<44}{r['floor']['jobs_per_s']:>30}")
    for h in r["huey"]:
        print(f"{'huey chains/s, workers=' + str(h['workers']):<44}{h['jobs_per_s']:>30}")
    for name, v in r["latency"].items():
        txt = f"p50 {v['claimed_ms']['p50']} / p99 {v['claimed_ms']['p99']} ms"
        print(f"{'drop->claimed ' + name:<44}{txt:>30}")
    for name, v in r["targets"].items():
        print(f"target {name}: {v['value']} (goal {v['goal']}): {'met' if v['met'] else 'NOT met'}")
    if not args.no_docs:
        write_docs(args.docs, docs_section(r))
        print(f"wrote {args.out} and {args.docs}")


if __name__ == "__main__":
    main()
