"""The web tests' shared world: a spool, ledger and archive filled by running the real pipeline
(ingest, preprocess, heavy with the reference model and rapidocr, archive with H.264 previews)
on real clips, and a uvicorn server on loopback for the browser tests.

Import the fixtures into a test module (``from web_home import web_home``); the pipeline runs
once per session however many modules use it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import TESTDATA, chain_settings, dropped
from scenegen import make_scene
from test_heavy import MODEL, photo_video
from test_preprocess import gpx_track

from watchers.config import Policies
from watchers.ledger import Video

T0 = datetime(2026, 5, 13, 16, 0, 0, tzinfo=timezone.utc)
FRONT = "2026_0513_160000_000300F.MP4"  # real plate photos, one a second
REAR = "2026_0513_160000_000301R.MP4"  # the same moment's rear channel
LATER = "2026_0513_160030_000302F.MP4"  # the next clip of the trip
BROKEN = "2026_0513_163000_000303F.MP4"  # not a video: rejected, a failure with its reason
PHOTOS = 6
TOKEN = "test-token-0123456789abcdef"


@dataclass
class WebHome:
    root: Path
    policies: Policies
    videos: dict[str, Video]  # by source name

    def video(self, name: str) -> Video:
        return self.videos[name]


def settings(model: Path) -> dict[str, Any]:
    data = chain_settings(("ingest", "preprocess", "heavy", "archive"))
    stages = data["stages"]
    stages["ingest"].update(type="ingest", timezone="UTC")
    stages["preprocess"] = {"type": "preprocess", "next": ["heavy", "archive"]}
    stages["heavy"] = {
        "type": "heavy",
        "next": ["archive"],
        "window_fps": 4,  # ByteTrack confirms a new object on its second frame
        "detector": {"type": "litert", "model": str(model)},
        "tracker": {"lost_frames": 1},
    }
    stages["archive"] = {
        "type": "archive",
        "next": [],
        "terminal_state": "archived",
        "preview": {"mode": "always", "max_height": 360},  # what the browser plays
    }
    data["retry"] = {"in_process_attempts": 1, "max_attempts": 1}
    return data


def build(root: Path, testdata: Path) -> WebHome:
    made = root / "made"
    made.mkdir(parents=True)
    front = made / "front.mp4"
    photo_video(testdata, front, PHOTOS)
    rear = make_scene(made / "rear.mp4", seconds=PHOTOS, fps=10, drive=True, seed=3)
    later = make_scene(made / "later.mp4", seconds=6, fps=10, drive=True, seed=4)

    def gpx(start: datetime, seconds: int) -> bytes:
        return gpx_track([(start + timedelta(seconds=i), 8.0 + i) for i in range(seconds + 1)])

    clips: dict[str, Path | bytes] = {
        FRONT: front,
        f"{FRONT}.gpx": gpx(T0, PHOTOS),
        REAR: rear,
        f"{REAR}.gpx": gpx(T0, PHOTOS),
        LATER: later,
        f"{LATER}.gpx": gpx(T0 + timedelta(seconds=30), 6),
        BROKEN: b"not a video at all",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_OFFLINE", "1")
        mp.setenv("YOLO_CONFIG_DIR", str(root / "yolo"))
        p = dropped(root, settings(testdata / MODEL), clips)
        try:
            p.drain()
            videos = {v.source_name: v for v in p.coordinator.ledger.videos(limit=100)}
        finally:
            p.close()
    return WebHome(root=root, policies=p.policies, videos=videos)


@pytest.fixture(scope="session")
def web_home(tmp_path_factory: pytest.TempPathFactory) -> WebHome:
    """The pipeline's result on real clips (skips without the shared test data)."""
    if not (TESTDATA / MODEL).is_file():
        if os.environ.get("DASHSPOOL_REQUIRE_TESTDATA") == "1":
            pytest.fail(f"test data required but missing: {TESTDATA}")
        pytest.skip(f"no test data at {TESTDATA} (set DASHSPOOL_TESTDATA)")
    return build(tmp_path_factory.mktemp("web-home"), TESTDATA)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    home: WebHome


@pytest.fixture(scope="session")
def served(web_home: WebHome) -> Iterator[Served]:
    """``dashspool web`` on 127.0.0.1 with a token, in a thread of this process."""
    from watchers.web import LOOPBACK_HOSTS, create_app

    app = create_app(web_home.policies, token=TOKEN, allowed_hosts=LOOPBACK_HOSTS)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # polled, with a deadline
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Served(url=f"http://127.0.0.1:{port}", home=web_home)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
