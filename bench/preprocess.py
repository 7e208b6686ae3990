"""Preprocess benchmark: the stage's wall time on a clip against decoding every frame of it.

    .venv/bin/python bench/preprocess.py [--rounds 3] [--gops 30 15] [--no-4k] [--no-docs]

Clips: generated 60 s 1080p30 H.264 drives (scrolling detail plus sensor grain at 16 Mbit/s),
one per keyframe interval in ``--gops`` (frames; dashcams write a keyframe every 0.5-1 s), the
udacity highway clips from the shared test data when present, and a 10 s 4K clip for peak
memory.

For each clip, in one run, rounds interleaved:
- baseline (a): PyAV decoding every frame (threads on, as the stage has them);
- baseline (b): ``ffmpeg -threads 2 -i CLIP -f null -`` when ffmpeg is installed;
- the sampler alone at 1 fps (what sampling costs, against (a));
- the whole preprocess job through a real spool worker (claim, sample, motion, detector, JPEGs,
  sidecar, publish with fsync) with detector ``none`` at 1 fps and ``litert`` at 2 fps.
Peak RSS is the largest of ``--rounds`` child processes each running the litert job on the 4K
clip.
Writes bench/results/preprocess.json and the "Preprocess" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from common import machine, met, parse_common, write_docs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the scene generator (dev extra)

import av  # noqa: E402
from scenegen import make_scene  # noqa: E402

from stages.frames import FrameSampler, every_seconds  # noqa: E402
from watchers import app  # noqa: E402
from watchers.config import parse  # noqa: E402

BEGIN, END = "<!-- bench/preprocess.py:begin -->", "<!-- bench/preprocess.py:end -->"
TESTDATA = REPO.parent / "shared" / "testdata"
MODEL = TESTDATA / "models" / "yolov8n_full_integer_quant.tflite"


def clip_info(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
        return {
            "name": path.name,
            "codec": s.codec_context.name,
            "size": f"{s.width}x{s.height}",
            "fps": round(float(s.average_rate or 0), 2),
            "seconds": round(duration, 2),
            "mbit_s": round(path.stat().st_size * 8 / duration / 1e6, 1),
        }


def decode_all(path: Path) -> float:
    t = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t


def ffmpeg(path: Path) -> float | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    t = time.perf_counter()
    cmd = [exe, "-v", "error", "-threads", "2", "-i", str(path), "-f", "null", "-"]
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def sample_only(path: Path, seconds: float, fps: float) -> float:
    t = time.perf_counter()
    for _ in FrameSampler(path).sample(every_seconds(seconds, fps)):
        pass
    return time.perf_counter() - t


def stage_job(path: Path, root: Path, detector: dict[str, Any], fps: float) -> dict[str, Any]:
    """Ingest the clip (not timed), then time the preprocess job on it."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    settings = {
        "spool": {"settle_seconds": 0, "prune_empty_after_seconds": 0},
        "pipeline": {"entry": "ingest"},
        "stages": {
            "ingest": {"type": "ingest", "next": ["preprocess"]},
            "preprocess": {
                "type": "preprocess",
                "next": ["heavy", "archive"],
                "fps": fps,
                "detector": detector,
            },
            "heavy": {"type": "copy", "next": []},
            "archive": {"type": "copy", "next": []},
        },
    }
    policies = parse(settings, source=None, base_dir=root)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    (root / "spool" / "inbox" / path.name).hardlink_to(path)
    stop = threading.Event()
    ingest, pre = app.build_workers(spool, policies, ["ingest", "preprocess"], "bench", stop)
    for w in (ingest, pre):
        w.start()
    assert ingest.loop_once(), "ingest found no clip"
    t = time.perf_counter()
    assert pre.loop_once(), "preprocess found no job"
    wall = time.perf_counter() - t
    done = [p for p in (root / "spool").glob("*/inbox/*/job.json")]
    facts = json.loads(done[0].read_text())["facts"]["preprocess"]
    return {
        "wall": wall,
        "route": facts["route"],
        "sampled": facts["frames_sampled"],
        "kept": facts["frames_kept"],
        "decoded": facts["decode"]["decoded"],
        "packets": facts["decode"]["packets"],
    }


def child_rss(path: Path, root: Path) -> int:
    """Peak RSS (bytes) of a fresh process running the litert 2 fps job on ``path``."""
    code = (
        "import sys, resource; sys.path.insert(0, 'bench');"
        "from pathlib import Path; import preprocess as b;"
        f"b.stage_job(Path({str(path)!r}), Path({str(root)!r}), "
        f"{{'type': 'litert', 'model': {str(MODEL)!r}}}, 2.0);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True
    )
    return int(done.stdout.split()[-1]) * 1024  # ru_maxrss is in KiB on Linux


def make_clips(folder: Path, gops: list[int], with_4k: bool) -> list[Path]:
    clips = []
    for gop in gops:
        main = folder / f"drive-1080p30-gop{gop}.mp4"
        if not main.exists():
            print(f"making {main.name} (about a minute)…", flush=True)
            make_scene(
                main,
                seconds=60,
                fps=30,
                width=1920,
                height=1080,
                drive=True,
                noise=4,
                gop=gop,
                bitrate=16_000_000,
            )
        clips.append(main)
    for name in ("udacity_solidWhiteRight.mp4", "udacity_test_video.mp4"):
        if (TESTDATA / "video" / name).exists():
            clips.append(TESTDATA / "video" / name)
    if with_4k:
        big = folder / "drive-2160p30.mp4"
        if not big.exists():
            print(f"making {big.name}…", flush=True)
            make_scene(
                big,
                seconds=10,
                fps=30,
                width=3840,
                height=2160,
                drive=True,
                noise=4,
                gop=30,
                bitrate=45_000_000,
            )
        clips.append(big)
    return clips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--gops", type=int, nargs="+", default=[30, 15], help="keyframe intervals of 1080p clips"
    )
    ap.add_argument("--no-4k", action="store_true", help="skip the 4K peak-memory clip")
    args = parse_common(ap, "preprocess")
    work = args.dir / "preprocess"
    work.mkdir(parents=True, exist_ok=True)
    clips = make_clips(work, args.gops, not args.no_4k)
    litert = {"type": "litert", "model": str(MODEL)} if MODEL.exists() else None

    results = []
    for clip in clips:
        info = clip_info(clip)
        runs: dict[str, list[float]] = {"decode_all": [], "ffmpeg": [], "sample_1fps": []}
        jobs: dict[str, list[dict[str, Any]]] = {"none_1fps": [], "litert_2fps": []}
        for _ in range(args.rounds):
            runs["decode_all"].append(decode_all(clip))
            if (f := ffmpeg(clip)) is not None:
                runs["ffmpeg"].append(f)
            runs["sample_1fps"].append(sample_only(clip, info["seconds"], 1.0))
            jobs["none_1fps"].append(stage_job(clip, work / "spool", {"type": "none"}, 1.0))
            if litert:
                jobs["litert_2fps"].append(stage_job(clip, work / "spool", litert, 2.0))
        med = {k: statistics.median(v) for k, v in runs.items() if v}
        out = {**info, **{k: round(v, 3) for k, v in med.items()}}
        out["sample_vs_decode"] = round(med["sample_1fps"] / med["decode_all"], 3)
        for key, rows in jobs.items():
            if not rows:
                continue
            wall = statistics.median(r["wall"] for r in rows)
            out[key] = {
                **{k: v for k, v in rows[0].items() if k != "wall"},
                "wall": round(wall, 3),
                "realtime": round(info["seconds"] / wall, 1),
                "vs_decode": round(wall / med["decode_all"], 3),
            }
        out["decode_realtime"] = round(info["seconds"] / med["decode_all"], 1)
        if "ffmpeg" in med:
            out["ffmpeg_realtime"] = round(info["seconds"] / med["ffmpeg"], 1)
        print(json.dumps(out), flush=True)
        results.append(out)

    rss = None
    if not args.no_4k and litert:
        rss = max(child_rss(clips[-1], work / "rss") for _ in range(args.rounds))
        print(f"peak RSS, litert 2 fps on {clips[-1].name}: {rss / 2**20:.0f} MiB")
    report = {
        "machine": machine(work),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": args.rounds,
        "clips": results,
        "peak_rss": rss,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_docs:
        write_docs(args.docs, "Preprocess", section(report, clips[-1].name), BEGIN, END)


def section(report: dict[str, Any], big: str) -> str:
    m = report["machine"]
    lines = [
        BEGIN,
        f"`bench/preprocess.py --rounds {report['rounds']}`, run {report['when']}: "
        f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}. Median of "
        f"{report['rounds']} interleaved rounds. Realtime = clip length / wall time. The stage "
        "columns time one whole preprocess job through a spool worker (claim, decode, motion, "
        "detector, JPEGs, sidecar, publish with fsync).",
        "",
        "| clip | video | decode all (a) | ffmpeg (b) | sampler 1 fps / (a) | none 1 fps | "
        "litert 2 fps | litert: route, kept/sampled, decoded/packets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in report["clips"]:
        none, lit = c.get("none_1fps"), c.get("litert_2fps")
        ff = f"{c['ffmpeg']:.2f} s ({c['ffmpeg_realtime']}x)" if "ffmpeg" in c else "-"
        lines.append(
            f"| {c['name']} | {c['codec']} {c['size']} {c['fps']} fps, {c['seconds']} s, "
            f"{c['mbit_s']} Mbit/s | {c['decode_all']:.2f} s ({c['decode_realtime']}x) | {ff} | "
            f"{c['sample_vs_decode']:.2f}x | "
            + (f"{none['wall']:.2f} s ({none['realtime']}x) | " if none else "- | ")
            + (f"{lit['wall']:.2f} s ({lit['realtime']}x) | " if lit else "- | ")
            + (
                f"{lit['route']}, {lit['kept']}/{lit['sampled']}, "
                f"{lit['decoded']}/{lit['packets']} |"
                if lit
                else "- |"
            )
        )
    lines += ["", "| target (from the issue) | clip | measured | goal | |", "|---|---|---|---|---|"]
    for c in report["clips"]:
        if not c["name"].startswith("drive-1080p"):
            continue
        rows = [
            (
                "sampling at 1 fps vs decoding every frame",
                f"{c['sample_vs_decode']:.2f}x",
                "<= 0.25x",
                c["sample_vs_decode"] <= 0.25,
            )
        ]
        if c.get("none_1fps"):
            r = c["none_1fps"]["realtime"]
            rows.append(("detector none, 1 fps", f"{r}x realtime", ">= 20x", r >= 20))
        if c.get("litert_2fps"):
            r = c["litert_2fps"]["realtime"]
            rows.append(("detector litert, 2 fps", f"{r}x realtime", ">= 5x", r >= 5))
        for what, got, goal, ok in rows:
            lines.append(f"| {what} | {c['name']} | {got} | {goal} | {met(ok)} |")
    if report["peak_rss"]:
        mib = report["peak_rss"] / 2**20
        lines.append(
            f"| peak RSS, litert 2 fps job in a fresh process (largest of {report['rounds']}) "
            f"| {big} | {mib:.0f} MiB | < 1024 MiB | {met(mib < 1024)} |"
        )
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
