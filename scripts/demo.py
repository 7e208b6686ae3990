"""`make demo`: drop a few clips into a fresh spool, run every stage and the coordinator until
idle (`dashspool run --until-idle`), then show what happened with `status` and `ledger`.

Everything happens in .demo/ (git-ignored) with the repository's policies.toml, so the demo runs
exactly the configuration a user starts from. The clips are small real H.264 MP4s made by the
test generators: driving scenes with Novatek freeGPS tracks (tests/scenegen.py,
tests/gpsgen.py) and one parking clip where nothing happens, laid out as an SD-card dump; one bad
file shows what happens to rejects. Ingest and preprocess are the real stages (preprocess sends
the drives to heavy and the parking clip straight to archive); heavy and archive are still the
runtime's `copy` stage until their issues land.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
sys.path.insert(0, str(REPO / "tests"))
UTC = timezone.utc
# (path in the inbox, GPS start in UTC, video frame rate: front and rear differ in content)
CLIPS = [
    ("DCIM/Movie/2024_0101_123456_000120F.MP4", datetime(2024, 1, 1, 12, 34, 56, tzinfo=UTC), 10),
    ("DCIM/Movie/2024_0101_123456_000121R.MP4", datetime(2024, 1, 1, 12, 34, 56, tzinfo=UTC), 12),
    ("DCIM/Movie/2024_0101_123556_000122F.MP4", datetime(2024, 1, 1, 12, 35, 56, tzinfo=UTC), 10),
    (
        "DCIM/Movie/RO/2024_0101_123656_000123EF.MP4",
        datetime(2024, 1, 1, 12, 36, 56, tzinfo=UTC),
        10,
    ),
    ("DCIM/Movie/Parking/2024_0101_180000_000200PF.MP4", None, 10),
]


def dashspool(*args: str) -> None:
    cmd = [sys.executable, "-m", "watchers.cli", "--config", str(DEMO / "policies.toml"), *args]
    print(f"\n$ dashspool {' '.join(args)}", flush=True)
    subprocess.run(cmd, cwd=DEMO, check=True)


def main() -> None:
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "spool" / "inbox").mkdir(parents=True)
    shutil.copy(REPO / "policies.toml", DEMO / "policies.toml")
    from gpsgen import novatek_mp4
    from scenegen import make_scene

    origin = (51.5007, -0.1246)
    made = DEMO / "made.mp4"
    for name, start, fps in CLIPS:
        path = DEMO / "spool" / "inbox" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if start is None:  # parked: no GPS fix, and nothing moves
            make_scene(path, seconds=20, fps=fps, noise=3)
            continue
        make_scene(made, seconds=20, fps=fps, drive=True, seed=fps)
        minute = (start.minute - 34) * 60
        lat, lon = origin[0] + minute * 1e-4, origin[1] - minute * 1.5e-4
        path.write_bytes(
            novatek_mp4(made.read_bytes(), count=20, start=start, origin=(lat, lon)).data
        )
    made.unlink()
    (DEMO / "spool" / "inbox" / "DCIM" / "notes.txt").write_text("not a video\n")
    print(f"dropped an SD-card dump with {len(CLIPS)} clips and one stray file into")
    print(f"{DEMO / 'spool/inbox'}; files are claimed once settled (settle_seconds)")
    t0 = time.monotonic()
    dashspool("run", "--until-idle")
    took = time.monotonic() - t0
    dashspool("status")
    dashspool("ledger", "videos")
    for video in _videos():
        if video["heavy_skipped"]:  # what preprocess says about the clip it did not send on
            dashspool("ledger", "video", video["video_id"][:12])
    dashspool("ledger", "trips")
    dashspool("ledger", "failures")
    print(f"\n{len(CLIPS)} clips from drop to the end of the pipeline in {took:.1f}s.")
    print(f"Look around: find {DEMO}/raw; ls {DEMO}/spool/inbox/rejected;")
    print(f"the frames preprocess kept: ls {DEMO}/spool/heavy/done/*/")


def _videos() -> list[dict[str, object]]:
    cmd = [sys.executable, "-m", "watchers.cli", "--config", str(DEMO / "policies.toml")]
    out = subprocess.run(
        [*cmd, "ledger", "videos", "--json"], cwd=DEMO, check=True, capture_output=True, text=True
    ).stdout
    rows: list[dict[str, object]] = json.loads(out)
    return rows


if __name__ == "__main__":
    main()
