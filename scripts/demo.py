"""`make demo`: drop a few clips into a fresh spool, run every stage and the coordinator until
idle (`dashspool run --until-idle`), then show what happened with `status` and `ledger`.

Everything happens in .demo/ (git-ignored) with the repository's policies.toml, so the demo runs
exactly the configuration a user starts from. Until the real stages land (issues 3-6) each stage
of the pipeline is the runtime's `copy` stage, so the "clips" are small stand-in files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
CLIPS = [
    "2024_0101_123456_000120F.MP4",
    "2024_0101_123456_000121R.MP4",
    "2024_0101_123756_000122F.MP4",
    "Parking/2024_0101_180000_000200P.MP4",
]


def dashspool(*args: str) -> None:
    cmd = [sys.executable, "-m", "watchers.cli", "--config", str(DEMO / "policies.toml"), *args]
    print(f"\n$ dashspool {' '.join(args)}", flush=True)
    subprocess.run(cmd, cwd=DEMO, check=True)


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "spool" / "inbox").mkdir(parents=True)
    shutil.copy(REPO / "policies.toml", DEMO / "policies.toml")
    for name in CLIPS:
        path = DEMO / "spool" / "inbox" / Path(name).name
        path.write_bytes(os.urandom(64 * 1024))
    print(f"dropped {len(CLIPS)} clips into {DEMO / 'spool/inbox'}; they are claimed once they")
    print("have settled (settle_seconds in policies.toml)")
    t0 = time.monotonic()
    dashspool("run", "--until-idle")
    took = time.monotonic() - t0
    dashspool("status")
    dashspool("ledger", "videos")
    print(f"\n{len(CLIPS)} clips from drop to the end of the pipeline in {took:.1f}s.")
    print(f"Look around: ls {DEMO}/spool/*/done")


if __name__ == "__main__":
    main()
