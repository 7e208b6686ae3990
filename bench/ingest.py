"""Ingest benchmark: MB/s of the ingest stage on one large clip against `sha256sum` of it.

    .venv/bin/python bench/ingest.py [--mb 500] [--rounds 3] [--no-docs]

The clip is a real H.264 MP4 (made with PyAV) whose media data is padded with random bytes to
``--mb`` MB, with Novatek freeGPS blocks and a ``moov/gps `` index (the format of
reference/viofo.md), so one job does everything ingest does: adoption, the sha256 of the whole
file, the PyAV check, the GPS track, the hard link into the raw store, GPX/GeoJSON outputs and
the publish to the next stage (fsync on). The floor is `sha256sum FILE`, the same bytes hashed by
coreutils. Rounds are interleaved and the file is read once beforehand, so both run from the
page cache: this compares CPU cost, not the disk. Writes bench/results/ingest.json and the
"Ingest" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, parse_common, write_docs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test media generators (dev extra)

from gpsgen import base_mp4, novatek_mp4  # noqa: E402
from mediagen import pad_mdat  # noqa: E402

from stages.ingest import sha256_file  # noqa: E402
from watchers import app  # noqa: E402
from watchers.config import load  # noqa: E402

BEGIN, END = "<!-- bench/ingest.py:begin -->", "<!-- bench/ingest.py:end -->"
NAME = "2026_0513_172152_000120F.MP4"


def make_clip(path: Path, mb: int) -> Path:
    """A valid clip of about ``mb`` MB: padded video, then GPS blocks and index."""
    small = path.with_suffix(".small.mp4")
    small.write_bytes(base_mp4())
    padded = pad_mdat(small, mb << 20, fill=os.urandom(1 << 20), dest=path.with_suffix(".pad"))
    clip = novatek_mp4(padded.read_bytes(), count=60)
    path.write_bytes(clip.data)
    small.unlink()
    padded.unlink()
    return path


def ingest_once(clip: Path, root: Path) -> float:
    """Seconds for one ingest job of ``clip``, from adoption to published output."""
    root.mkdir(parents=True)
    (root / "policies.toml").write_text(
        '[spool]\npath = "spool"\nsettle_seconds = 0\n'
        '[pipeline]\nentry = "ingest"\n'
        '[stages.ingest]\ntype = "ingest"\nnext = ["out"]\n'
        '[stages.out]\ntype = "copy"\nnext = []\n'
    )
    policies = load(root / "policies.toml")
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    (ingest, _) = app.build_workers(spool, policies, policies.order(), "bench")
    os.link(clip, root / "spool" / "inbox" / NAME)  # same filesystem: no copy
    t0 = time.perf_counter()
    assert ingest.loop_once(), "the clip was not taken"
    took = time.perf_counter() - t0
    if not list((root / "spool" / "out" / "inbox").iterdir()):
        raise SystemExit("ingest did not publish the clip: see the log above")
    return took


def floor_once(clip: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", str(clip)], check=True, capture_output=True)
    return time.perf_counter() - t0


def hashlib_once(clip: Path) -> float:
    t0 = time.perf_counter()
    sha256_file(clip)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=500, help="size of the clip")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parse_common(ap, "ingest")
    tmp = Path(tempfile.mkdtemp(prefix="ingest-bench-", dir=args.dir))
    runs: dict[str, list[float]] = {"ingest": [], "sha256sum": [], "hashlib": []}
    try:
        clip = make_clip(tmp / "clip.mp4", args.mb)
        size = clip.stat().st_size
        sha256_file(clip)  # into the page cache
        for i in range(args.rounds):
            runs["sha256sum"].append(floor_once(clip))
            runs["ingest"].append(ingest_once(clip, tmp / f"round-{i}"))
            runs["hashlib"].append(hashlib_once(clip))
            shutil.rmtree(tmp / f"round-{i}")
            print(f"round {i + 1}:", {k: round(v[-1], 3) for k, v in runs.items()}, flush=True)
        where = machine(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mbps = {k: round(size / 1e6 / statistics.median(v), 1) for k, v in runs.items()}
    ratio = round(mbps["ingest"] / mbps["sha256sum"], 2)
    r: dict[str, Any] = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": where,
        "params": {"mb": args.mb, "rounds": args.rounds, "bytes": size},
        "seconds": runs,
        "mb_per_s": mbps,
        "ratio_ingest_over_sha256sum": ratio,
        "target": {"goal": ">= 0.8x sha256sum", "met": ratio >= 0.8},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=2) + "\n")
    for k, v in mbps.items():
        print(f"{k:<10} {v} MB/s")
    print(f"ingest / sha256sum = {ratio} (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'})")
    if not args.no_docs:
        write_docs(args.docs, "Ingest", docs_section(r), BEGIN, END)
        print(f"wrote {args.docs}")


def docs_section(r: dict[str, Any]) -> str:
    m, p, v = r["machine"], r["params"], r["mb_per_s"]

    def runs(key: str) -> str:
        return ", ".join(f"{p['bytes'] / 1e6 / s:.0f}" for s in r["seconds"][key])

    met = "met" if r["target"]["met"] else "**not met**"
    return f"""{BEGIN}
`bench/ingest.py --mb {p["mb"]} --rounds {p["rounds"]}`, run {r["generated_at"]}: {m["nproc"]}
CPUs ({m["cpu"]}), {m["filesystem"]}, Linux {m["kernel"]}, Python {m["python"]}. One clip of
{p["bytes"] / 1e6:.0f} MB (H.264 MP4, media data padded with random bytes, 60 Novatek freeGPS
blocks with a `moov/gps ` index), read from the page cache; median of {p["rounds"]} interleaved
rounds.

| measurement | MB/s (median) | runs |
|---|---|---|
| ingest job: adopt, sha256, PyAV, GPS, link, outputs, publish | {v["ingest"]} | {runs("ingest")} |
| floor: `sha256sum` of the same file | {v["sha256sum"]} | {runs("sha256sum")} |
| for reference: Python hashlib alone, as ingest hashes | {v["hashlib"]} | {runs("hashlib")} |

| target (from the issue) | measured | goal | |
|---|---|---|---|
| ingest MB/s against `sha256sum` | {r["ratio_ingest_over_sha256sum"]}x | >= 0.8x | {met} |
{END}"""


if __name__ == "__main__":
    main()
