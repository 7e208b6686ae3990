"""`make demo`: drop an SD-card dump into a fresh spool, run every stage and the coordinator until
idle (`dashspool run --until-idle`), then show the verified archive and what the ledger knows.

Everything happens in .demo/ (git-ignored) with the repository's policies.toml, except that
heavy is switched from the `copy` stage to the real one (docs/heavy.md). It works offline:

* **With the shared test data** (`../shared/testdata`, or `DASHSPOOL_TESTDATA`): heavy runs the
  reference YOLOv8n int8 model, and the dump also holds a clip of real EU plate photos, so
  there are cars, tracks and plates to find.
* **Without it**: heavy runs with no object detector (nothing to download); it still reads
  GPS from the burned-in overlay of the clip that has no embedded track.

The clips are small real H.264 MP4s made by the test generators: drives with Novatek freeGPS
tracks (tests/scenegen.py, tests/gpsgen.py), one drive with only a rendered Viofo overlay
(tests/overlaygen.py), a parking clip where nothing happens, and one stray text file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
TESTDATA = Path(os.environ.get("DASHSPOOL_TESTDATA", REPO.parent / "shared" / "testdata"))
MODEL = TESTDATA / "models" / "yolov8n_full_integer_quant.tflite"
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
OVERLAY_CLIP = ("DCIM/Movie/2024_0101_124000_000124F.MP4", datetime(2024, 1, 1, 12, 40, 0))
PHOTO_CLIP = "DCIM/Movie/2024_0101_124100_000125F.MP4"


def heavy_table(real_model: bool) -> str:
    detector = f'type = "litert"\nmodel = "{MODEL}"\nthreads = 2' if real_model else 'type = "none"'
    return f"""[stages.heavy]
type = "heavy"
next = ["archive"]
window_seconds = 1
window_fps = 4
max_frames = 200

[stages.heavy.detector]
{detector}

[stages.heavy.ocr]
type = "rapidocr"
"""


def dashspool(*args: str, quiet: bool = False) -> str:
    cmd = [sys.executable, "-m", "watchers.cli", "--config", str(DEMO / "policies.toml"), *args]
    if quiet:
        return subprocess.run(cmd, cwd=DEMO, check=True, capture_output=True, text=True).stdout
    print(f"\n$ dashspool {' '.join(args)}", flush=True)
    subprocess.run(cmd, cwd=DEMO, check=True)
    return ""


def make_dump(inbox: Path, real_data: bool) -> None:
    from gpsgen import novatek_mp4
    from overlaygen import overlay_text, write_clip
    from scenegen import make_scene

    origin = (51.5007, -0.1246)
    made = DEMO / "made.mp4"
    for name, start, fps in CLIPS:
        path = inbox / name
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
    name, local = OVERLAY_CLIP  # no embedded GPS: heavy reads the camera's burned-in line
    lines = [
        overlay_text(local + timedelta(seconds=i), 51.52 + i * 2e-4, -0.10 - i * 3e-4, 40 + i)
        for i in range(8)
    ]
    write_clip(inbox / name, lines, width=960, height=540)
    if real_data:
        from test_heavy import photo_video

        photo_video(TESTDATA, inbox / PHOTO_CLIP, 6)
    (inbox / "DCIM" / "notes.txt").write_text("not a video\n")


def main() -> None:
    real_data = MODEL.is_file()
    shutil.rmtree(DEMO, ignore_errors=True)
    inbox = DEMO / "spool" / "inbox"
    inbox.mkdir(parents=True)
    settings = (REPO / "policies.toml").read_text()
    old = '[stages.heavy]\ntype = "copy"\nnext = ["archive"]\n'
    if old not in settings:
        sys.exit("policies.toml no longer has the copy heavy table this demo replaces")
    (DEMO / "policies.toml").write_text(settings.replace(old, heavy_table(real_data)))
    make_dump(inbox, real_data)
    clips = len(CLIPS) + 1 + real_data
    print(f"dropped an SD-card dump with {clips} clips and one stray file into {inbox}")
    if real_data:
        print(f"heavy: the reference model {MODEL.name} and rapidocr (test data found)")
    else:
        print(f"heavy: no object detector (no test data at {TESTDATA}); overlay GPS via rapidocr")
    t0 = time.monotonic()
    dashspool("run", "--until-idle")
    took = time.monotonic() - t0
    dashspool("status")
    dashspool("ledger", "videos")
    dashspool("ledger", "plates")
    dashspool("ledger", "failures")
    dashspool("verify")  # the ledger against the archive: every copy there, every hash right
    dashspool("retention", "--dry-run")  # nothing is old enough to go yet
    summary(took)


def summary(took: float) -> None:
    videos: list[dict[str, Any]] = json.loads(dashspool("ledger", "videos", "--json", quiet=True))
    archive = DEMO / "archive"
    print(f"\n{'clip':<34} {'state':<9} {'track':>8} {'objects':>7} {'plates':>6}  archive folder")
    for v in sorted(videos, key=lambda v: str(v["source_name"])):
        track = objects = plates = "-"
        folder = "-"
        if v.get("archive_path"):
            entry = archive / str(v["archive_path"])
            meta = json.loads((entry.parent / "meta.json").read_text())
            t = meta.get("track")
            track = f"{t['distance_m']:.0f} m" if t else "none"
            objects, plates = str(len(meta["objects"])), str(len(meta["plates"]))
            folder = str(entry.parent.relative_to(DEMO))
        name = str(v["source_name"])[-34:]
        print(f"{name:<34} {v['state']:<9} {track:>8} {objects:>7} {plates:>6}  {folder}")
    archived = sum(1 for v in videos if v["state"] == "archived")
    print(f"\n{archived} of {len(videos)} clips archived and verified, {took:.1f}s after the drop.")
    print(f"Look around: ls -R {archive} | head; cat {archive}/*/*/*/*/meta.json | head -40;")
    print(f"the rejected stray file and its note: ls {DEMO}/spool/inbox/rejected")


if __name__ == "__main__":
    main()
