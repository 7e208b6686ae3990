"""What every benchmark here shares: the machine description and the docs block writer."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEADER = """# Benchmarks

Benchmarks live in `bench/` and are run with `make bench`. Each one compares against a baseline
measured in the same run, on the same machine, and writes its figures to `bench/results/`.
"""


def parse_common(ap: argparse.ArgumentParser, name: str) -> argparse.Namespace:
    """The options every benchmark has (scratch folder, results file, docs), then parse."""
    scratch = "scratch space, on the disk to measure (not tmpfs)"
    ap.add_argument("--dir", type=Path, default=REPO / "bench" / "results", help=scratch)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / f"{name}.json")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "benchmarks.md")
    ap.add_argument("--no-docs", action="store_true", help="leave docs/benchmarks.md alone")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    return args


def machine(where: Path) -> dict[str, str]:
    info = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), "?")
    df = subprocess.run(["df", "-T", str(where)], capture_output=True, text=True).stdout.split()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "filesystem": df[9] if len(df) > 9 else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_docs(path: Path, heading: str, section: str, begin: str, end: str) -> None:
    """Replace the generated block between ``begin`` and ``end``, keeping any hand-written text
    around it; a missing block goes at the end under ``## heading``."""
    text = path.read_text() if path.exists() else HEADER
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def met(ok: bool) -> str:
    """A target table's verdict cell."""
    return "met" if ok else "**not met**"
