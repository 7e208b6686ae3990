"""The ingest stage end to end: real files dropped in a real spool, real PyAV, a real ledger."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import gpxpy
import pytest
from conftest import Pipeline, chain_settings, listing
from mediagen import (
    make_audio_only,
    make_image,
    make_video,
    open_ended_mdat,
    random_bytes,
    remove_box,
    scramble_samples,
    truncate,
)

from watchers import app
from watchers.config import Policies, parse
from watchers.ledger import Ledger
from watchers.spool import Spool
from watchers.watch import Runner


def ingest_settings(**ingest: Any) -> dict[str, Any]:
    data = chain_settings(("ingest", "out"))
    data["stages"]["ingest"].update(type="ingest", timezone="Europe/London", **ingest)
    return data


@pytest.fixture
def policies(tmp_path: Path) -> Policies:
    return parse(ingest_settings(), source=None, base_dir=tmp_path)


@pytest.fixture
def raw(policies: Policies) -> Path:
    return policies.path(policies.stores.raw)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    (tmp_path / "made").mkdir(exist_ok=True)
    return make_video(tmp_path / "made" / "clip.mp4", seconds=1.0)


def put(inbox: Path, rel: str, data: bytes | Path) -> Path:
    """Drop a file at ``rel`` inside the inbox tree, as a finished copy."""
    path = inbox / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.read_bytes() if isinstance(data, Path) else data)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def out_jobs(spool: Spool) -> list[dict[str, Any]]:
    root = spool.backend.local_root
    assert root is not None
    return [
        json.loads((p / "job.json").read_text()) for p in sorted((root / "out" / "done").iterdir())
    ]


def notes(inbox: Path, folder: str) -> dict[str, str]:
    return {
        p.name[: -len(".error.json")]: json.loads(p.read_text())["reason"]
        for p in (inbox / folder).glob("*.error.json")
    }


# --------------------------------------------------------------------------- happy path
def test_clip_in_a_card_dump_is_filed_by_its_name_and_referenced(
    pipeline: Pipeline, spool: Spool, inbox: Path, raw: Path, clip: Path
) -> None:
    name = "2026_0513_172152_000120F.MP4"
    put(inbox, f"DCIM/Movie/RO/{name}", clip)
    pipeline.drain()

    filed = raw / "2026" / "05" / "13" / name
    assert filed.read_bytes() == clip.read_bytes()
    assert not (inbox / "DCIM").exists(), "the emptied card-dump folders are removed"
    (job,) = out_jobs(spool)
    digest = sha(clip)
    assert job["video_id"] == digest[:16]
    assert job["refs"]["video"] == f"raw:2026/05/13/{name}"
    assert job["recorded_at"] == "2026-05-13T17:21:52"
    assert job["priority"] == 10, "a locked (RO) clip goes first"
    facts = job["facts"]["ingest"]
    assert facts["sha256"] == digest
    assert facts["camera"] == {
        "family": "A129/A229/A329",
        "channel": "F",
        "mode": "event",
        "locked": True,
        "sequence": "000120",
    }
    assert facts["time"]["local"] == "2026-05-13T17:21:52"
    assert facts["time"]["utc_start"] == "2026-05-13T16:21:52Z", "BST is UTC+1 in May"
    assert facts["time"]["source"] == "name"
    # the clip is not copied along: the claim's link is gone once the job is complete
    assert not list((spool.backend.local_root / "ingest" / "done").glob(f"*/{name}"))  # type: ignore[operator]
    v = pipeline.coordinator.ledger.find_video(digest[:16])[0]
    assert (v.sha256, v.state, v.channel, v.locked) == (digest, "done", "F", 1)
    assert v.raw_path == f"2026/05/13/{name}"


def test_unknown_names_fall_back_to_container_time(
    pipeline: Pipeline, spool: Spool, inbox: Path, raw: Path, tmp_path: Path
) -> None:
    made = make_video(tmp_path / "phone.mp4", creation_time="2025-12-31T23:59:58Z")
    put(inbox, "holiday clip.mp4", made)
    pipeline.drain()
    (job,) = out_jobs(spool)
    t = job["facts"]["ingest"]["time"]
    assert (t["source"], t["utc_start"]) == ("container", "2025-12-31T23:59:58Z")
    assert t["local"] == "2025-12-31T23:59:58", "London is on UTC in winter"
    assert (raw / "2025" / "12" / "31" / "holiday clip.mp4").is_file()


def test_same_clip_under_another_name_is_a_duplicate(
    pipeline: Pipeline, spool: Spool, inbox: Path, raw: Path, clip: Path
) -> None:
    put(inbox, "2026-05-13/2026_0513_172152_000120F.MP4", clip)
    pipeline.drain()
    put(inbox, "again/copy of my clip.mp4", clip)
    pipeline.drain()

    assert len(out_jobs(spool)) == 1, "no second run through the pipeline"
    assert (inbox / "duplicates" / "copy of my clip.mp4").read_bytes() == clip.read_bytes()
    reason = notes(inbox, "duplicates")["copy of my clip.mp4"]
    assert reason.startswith("duplicate: ") and "2026_0513_172152_000120F.MP4" in reason
    states = {v.source_name: v.state for v in pipeline.coordinator.ledger.videos(limit=10)}
    assert states == {"2026_0513_172152_000120F.MP4": "done", "copy of my clip.mp4": "duplicate"}


def test_same_name_other_content_gets_its_own_name_in_the_store(
    pipeline: Pipeline, inbox: Path, raw: Path, tmp_path: Path
) -> None:
    name = "2026_0513_172152_000120F.MP4"
    a = make_video(tmp_path / "a.mp4", fps=10)
    b = make_video(tmp_path / "b.mp4", fps=12)
    put(inbox, f"carA/{name}", a)
    pipeline.drain()
    put(inbox, f"carB/{name}", b)
    pipeline.drain()
    filed = sorted(p.name for p in (raw / "2026" / "05" / "13").iterdir())
    assert filed == sorted([name, f"2026_0513_172152_000120F-{sha(b)[:8]}.MP4"])


def test_ignored_names_are_left_alone(pipeline: Pipeline, inbox: Path, clip: Path) -> None:
    kept = [".hidden.MP4", "x.MP4.part", "y.tmp", "z.crdownload", "w.MP4~", ".sync/a.MP4"]
    for rel in kept:
        put(inbox, rel, clip)
    pipeline.drain()
    for rel in kept:
        assert (inbox / rel).is_file(), rel
    assert listing(pipeline.spool, "inbox/rejected") == []


# ------------------------------------------------------------------------ bad input
def _bad_corpus(tmp: Path) -> dict[str, tuple[bytes | None, str]]:
    """name in the inbox -> (content, expected start of the sentence)."""
    good = make_video(tmp / "good.mp4", seconds=1.0)
    faststart = make_video(tmp / "fast.mp4", seconds=1.0, faststart=True)
    gif = make_image(tmp / "i.gif", codec="gif")
    return {
        "random.MP4": (random_bytes(tmp / "r").read_bytes(), "not a video"),
        "2026_0513_172152_000121F.MP4": (
            truncate(good, 0.5, dest=tmp / "t").read_bytes(),
            "truncated",
        ),
        "cut-at-the-end.mp4": (truncate(faststart, 0.7, dest=tmp / "t2").read_bytes(), "truncated"),
        "zero.MP4": (b"", "empty"),
        "audio.mp4": (make_audio_only(tmp / "a.mp4").read_bytes(), "not a video"),
        "photo.png": (make_image(tmp / "p.png").read_bytes(), "not a video"),
        "photo.JPG": (make_image(tmp / "p.jpg", codec="mjpeg").read_bytes(), "not a video"),
        "anim.gif": (gif.read_bytes(), "not a video"),
        "x" * 240 + ".MP4": (b"\x00" * 1000, "not a video"),
        "Fahrt über die Brücke \u2013 1.MP4": (b"hello " * 100, "not a video"),
        "no-moov.mp4": (remove_box(good, b"moov", dest=tmp / "nm").read_bytes(), "truncated"),
        "open-ended.mp4": (open_ended_mdat(good, dest=tmp / "oe").read_bytes(), "truncated"),
        "scrambled.mp4": (scramble_samples(good, dest=tmp / "sc").read_bytes(), "unreadable"),
        "notes.txt": (b"remember the milk\n", "not a video"),
        "meta.mp4": (b'{"schema_version": 1}', "not a video"),
        "page.html": (b"<html><body>hi</body></html>", "not a video"),
        "subs.srt": (b"1\n00:00:01,000 --> 00:00:02,000\nHi\n", "not a video"),
        "job.json": (b"{}", "not a video"),
        "junk folder/inner.MP4": (os.urandom(5000), "not a video"),
        "trip.gpx": (b"<gpx><trk><trkseg><trkpt lat='1' lon='2'/></trkseg></trk>", "not a"),
        "broken.gpx": (b"<gpx", "not a GPX"),
        "tab\tand\nnewline.MP4": (b"\x01\x02", "not a video"),
    }


def test_bad_input_corpus_is_set_aside_with_a_sentence_and_nothing_is_lost(
    policies: Policies, spool: Spool, inbox: Path, tmp_path: Path
) -> None:
    (tmp_path / "made").mkdir()
    corpus = _bad_corpus(tmp_path / "made")
    for rel, (data, _) in corpus.items():
        put(inbox, rel, data or b"")
    (tmp_path / "elsewhere.MP4").write_bytes(b"outside")
    os.symlink(tmp_path / "elsewhere.MP4", inbox / "link.MP4")
    os.mkfifo(inbox / "pipe.MP4")
    assert len(corpus) + 2 >= 20

    workers = app.build_workers(spool, policies, ["ingest", "out"], "d1")
    runner = Runner(spool, policies, "d1", workers, until_idle=True)
    assert runner.run() == 0  # one watcher, every bad job: it must not stop early

    reasons = notes(inbox, "rejected")
    for rel, (_, expected) in corpus.items():
        base = rel.rsplit("/", 1)[-1]
        match = [n for n in reasons if n == base or (len(base) > 200 and n.endswith("~.MP4"))]
        assert match, f"{rel!r} not in rejected/ (have {sorted(reasons)})"
        assert reasons[match[0]].startswith(expected), (rel, reasons[match[0]])
        if corpus[rel][0]:
            assert (inbox / "rejected" / match[0]).read_bytes() == corpus[rel][0], rel
    assert reasons["link.MP4"] == "not a regular file: a symbolic link"
    assert reasons["pipe.MP4"].startswith("not a regular file")
    assert (tmp_path / "elsewhere.MP4").read_bytes() == b"outside", "the link was not followed"
    files = [p for p in (inbox / "rejected").iterdir() if not p.name.endswith(".error.json")]
    assert len(files) == len(corpus) + 2, "every dropped file is still there, set aside"
    workers[0].mark_dirty()
    assert not workers[0].loop_once(), "nothing left to do ..."
    assert not (inbox / "junk folder").exists(), "... and the emptied folder is gone"
    ledger = Ledger(policies.ledger_path)
    try:
        from watchers.coordinator import Coordinator

        Coordinator(spool, policies, ledger).ingest()
        rejected = {v.source_name for v in ledger.videos(state="rejected", limit=100, kind=None)}
    finally:
        ledger.close()
    assert "random.MP4" in rejected and "zero.MP4" in rejected


# --------------------------------------------------------------------------- settling
@pytest.fixture
def slow_policies(tmp_path: Path) -> Policies:
    data = ingest_settings()
    data["spool"].update(settle_seconds=1.0, rescan_seconds=0.1)
    return parse(data, source=None, base_dir=tmp_path)


def test_a_file_written_slowly_is_claimed_only_when_complete(
    slow_policies: Policies, tmp_path: Path
) -> None:
    spool = app.open_spool(slow_policies)
    spool.ensure_layout(slow_policies.order())
    made = make_video(tmp_path / "made.mp4", seconds=3.0, size=(320, 240))
    data = made.read_bytes()
    root = spool.backend.local_root
    assert root is not None
    target = root / "inbox" / "2026-05-13" / "2026_0513_172152_000120F.MP4"
    target.parent.mkdir(parents=True)
    chunks = [data[i : i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]

    def write_slowly() -> None:
        with open(target, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                f.flush()
                time.sleep(0.4)  # the writer is slow on purpose: over 3 s in all

    writer = threading.Thread(target=write_slowly)
    stop = threading.Event()
    workers = app.build_workers(spool, slow_policies, ["ingest", "out"], "d1", stop)
    runner = Runner(spool, slow_policies, "d1", workers, stop=stop)
    watcher = threading.Thread(target=runner.run)
    watcher.start()
    writer.start()
    writer.join()
    deadline = time.monotonic() + 20
    while not list((root / "out" / "done").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    watcher.join(10)
    assert list((root / "inbox" / "rejected").iterdir()) == [], "never claimed while growing"
    raw = slow_policies.path(slow_policies.stores.raw)
    assert (raw / "2026/05/13/2026_0513_172152_000120F.MP4").read_bytes() == data


# ----------------------------------------------------------------------------- GPX
def _gpx(points: list[tuple[float, float, str]]) -> bytes:
    g = gpxpy.gpx.GPX()
    trk = gpxpy.gpx.GPXTrack()
    seg = gpxpy.gpx.GPXTrackSegment()
    from datetime import datetime

    for lat, lon, t in points:
        seg.points.append(
            gpxpy.gpx.GPXTrackPoint(lat, lon, time=datetime.fromisoformat(t.replace("Z", "+00:00")))
        )
    trk.segments.append(seg)
    g.tracks.append(trk)
    return g.to_xml(version="1.1").encode()


def test_viofosync_gpx_beside_a_clip_is_its_track(
    pipeline: Pipeline, spool: Spool, inbox: Path, clip: Path
) -> None:
    name = "2026_0513_172152_000120F.MP4"
    pts = [(51.5 + i * 1e-4, -0.12 - i * 1e-4, f"2026-05-13T16:21:{52 + i}Z") for i in range(5)]
    put(inbox, f"2026-05-13/{name}", clip)
    put(inbox, f"2026-05-13/{name}.gpx", _gpx(pts))
    pipeline.drain()
    (job,) = out_jobs(spool)
    gps = job["facts"]["ingest"]["gps"]
    assert (gps["source"], gps["points"]) == ("gpx", 5)
    assert [round(p["lat"], 6) for p in gps["track"]] == [round(p[0], 6) for p in pts]
    assert listing(spool, "inbox/rejected") == []


def test_dropped_trip_gpx_gives_clips_without_gps_their_points(
    make_clip_policies: Any, tmp_path: Path, clip: Path
) -> None:
    """Camera clock 10 s fast (gpx_clock_offset_seconds = 10): the clip named 17:22:02 local
    (16:22:02 UTC by its clock) was really recorded at 16:21:52 UTC."""
    policies = make_clip_policies(gpx_clock_offset_seconds=10)
    spool = app.open_spool(policies)
    spool.ensure_layout(policies.order())
    p = Pipeline(spool, policies)
    p.start()
    try:
        root = spool.backend.local_root
        assert root is not None
        inbox = root / "inbox"
        pts = [
            (51.5 + i * 1e-4, -0.12, f"2026-05-13T16:{20 + i // 60}:{i % 60:02d}Z")
            for i in range(300)
        ]
        put(inbox, "my trip.gpx", _gpx(pts))
        put(inbox, "2026_0513_172202_000121F.MP4", clip)
        p.drain()
        (job,) = out_jobs(spool)
        gps = job["facts"]["ingest"]["gps"]
        assert gps["source"] == "gpx:my trip.gpx"
        first = gps["track"][0]["time"]
        assert first.startswith("2026-05-13T16:21:5"), first
        tracks = p.coordinator.ledger.videos(state="track", kind=None)
        assert [t.source_name for t in tracks] == ["my trip.gpx"]
        raw = policies.path(policies.stores.raw)
        assert (raw / "tracks/2026/05/13/my trip.gpx").is_file()
    finally:
        p.close()


@pytest.fixture
def make_clip_policies(tmp_path: Path) -> Any:
    def make(**ingest: Any) -> Policies:
        return parse(ingest_settings(**ingest), source=None, base_dir=tmp_path / "p")

    return make


# ---------------------------------------------------------------------- review findings
def test_a_copy_with_the_same_path_and_mtime_is_still_a_duplicate(
    pipeline: Pipeline, spool: Spool, inbox: Path, clip: Path
) -> None:
    """`cp -p` / `rsync -a` of a card dump again: same path, size and mtime as before."""
    rel = "DCIM/Movie/2026_0513_172152_000120F.MP4"
    first = put(inbox, rel, clip)
    stamp = first.stat().st_mtime
    pipeline.drain()
    again = put(inbox, rel, clip)
    os.utime(again, (stamp, stamp))
    pipeline.drain()
    assert len(out_jobs(spool)) == 1
    assert list(notes(inbox, "duplicates")) == ["2026_0513_172152_000120F.MP4"]


def test_crash_between_publish_and_completion_event_keeps_the_facts(
    spool: Spool, policies: Policies, inbox: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watchers.sidecar import EventKind

    p = Pipeline(spool, policies)
    p.start()
    real_emit = spool.emit

    def crash_on_completion(event: Any, **kw: Any) -> None:
        if event.kind is EventKind.STAGE_COMPLETED and event.stage == "ingest":
            raise KeyboardInterrupt("power cut")  # after publish, before the event
        real_emit(event, **kw)

    put(inbox, "2026_0513_172152_000120F.MP4", clip)
    monkeypatch.setattr(spool, "emit", crash_on_completion)
    with pytest.raises(KeyboardInterrupt):
        p.drain()
    monkeypatch.setattr(spool, "emit", real_emit)
    p.close()
    restarted = Pipeline(spool, policies)
    restarted.start()  # takes its claim back: the output is already published, so it finishes
    try:
        restarted.drain()
        (v,) = restarted.coordinator.ledger.videos(kind=None)
        assert v.video_id == sha(clip)[:16] and v.sha256 == sha(clip)
        assert (v.state, v.channel, v.raw_path) == (
            "done",
            "F",
            "2026/05/13/2026_0513_172152_000120F.MP4",
        )
    finally:
        restarted.close()


def test_upper_case_gpx_companion_travels_with_its_clip(
    pipeline: Pipeline, spool: Spool, inbox: Path, clip: Path
) -> None:
    name = "2026_0513_172152_000120F.MP4"
    pts = [(51.5 + i * 1e-4, -0.12, f"2026-05-13T16:21:{52 + i}Z") for i in range(4)]
    put(inbox, f"d/{name}", clip)
    put(inbox, f"d/{name}.GPX", _gpx(pts))
    pipeline.drain()
    (job,) = out_jobs(spool)
    assert job["facts"]["ingest"]["gps"]["source"] == "gpx"
    assert pipeline.coordinator.ledger.videos(state="track", kind=None) == []


def test_locked_clips_go_first(policies: Policies, spool: Spool, inbox: Path, clip: Path) -> None:
    older = put(inbox, "DCIM/Movie/2026_0513_172152_000120F.MP4", clip)
    locked = put(
        inbox, "DCIM/Movie/RO/2026_0513_172252_000121F.MP4", make_video(clip.with_name("b.mp4"))
    )
    os.utime(older, (1_700_000_000, 1_700_000_000))  # by age alone the locked clip comes second
    os.utime(locked, (1_700_000_100, 1_700_000_100))
    (ingest, _) = app.build_workers(spool, policies, ["ingest", "out"], "d1")
    assert ingest.loop_once()
    root = spool.backend.local_root
    assert root is not None
    (done,) = (root / "out" / "inbox").iterdir()
    assert "000121F" in done.name


def test_index_and_track_ranges_written_by_others_cannot_point_outside(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from stages.rawstore import RawStore
    from watchers.backends import LocalBackend
    from watchers.stores import Store

    store = RawStore(Store("raw", LocalBackend(tmp_path / "raw")))
    store.check()
    digest = "ab" * 32
    (tmp_path / "raw" / ".index" / "ab").mkdir(parents=True)
    for bad in ("../outside.MP4", "/etc/passwd", "a/../../b"):
        body = {"raw_path": bad, "job": "j-abcdef", "source_path": "x"}
        (tmp_path / "raw" / ".index" / "ab" / f"{digest}.json").write_text(json.dumps(body))
        assert store.owner(digest) is None, bad
    ranges = tmp_path / "raw" / "tracks" / ".ranges"
    ranges.mkdir(parents=True)
    (ranges / "a.json").write_text(
        json.dumps(
            {
                "path": "../x.gpx",
                "start": "2026-01-01T00:00:00+00:00",
                "end": "2026-12-31T00:00:00+00:00",
            }
        )
    )
    (ranges / "b.json").write_text(
        json.dumps({"path": "t.gpx", "start": "2026-01-01T00:00:00", "end": "2026-12-31T00:00:00"})
    )
    when = datetime(2026, 5, 1, tzinfo=timezone.utc)
    assert store.tracks_between(when, when) == [], "outside the store, or naive times"


def test_losing_the_index_race_never_removes_the_winners_file(tmp_path: Path) -> None:
    """Device A links the clip at day/X.MP4; device B finds the same bytes there and owns the
    content first, under that very name. A loses: it must not remove day/X.MP4, the file B's
    index entry names (B's claim copy goes once B finishes)."""
    from datetime import datetime, timezone

    from stages import REGISTRY
    from stages.rawstore import IndexEntry
    from watchers.config import parse
    from watchers.errors import Duplicate
    from watchers.sidecar import Sidecar

    policies = parse(
        {"stages": {"ingest": {"type": "ingest", "next": []}}, "pipeline": {"entry": "ingest"}},
        source=None,
        base_dir=tmp_path,
    )
    stage = REGISTRY.build(policies)["ingest"]
    stage.setup(policies)
    clip = tmp_path / "claim-a" / "X.MP4"
    clip.parent.mkdir()
    clip.write_bytes(b"the same bytes on both devices")
    sha = hashlib.sha256(clip.read_bytes()).hexdigest()
    winner = IndexEntry(sha, "2026/05/13/X.MP4", "X-bbbbbb", "X.MP4")
    stage.raw.claim = lambda entry: winner  # type: ignore[attr-defined]
    job = Sidecar(
        job="X-aaaaaa",
        video_id="aaaaaa",
        source_name="X.MP4",
        stage="ingest",
        created_at=datetime.now(timezone.utc),
    )
    with pytest.raises(Duplicate):
        stage._file(job, "X.MP4", clip, sha, "2026/05/13", "X.MP4")  # type: ignore[attr-defined]
    kept = tmp_path / "raw" / "2026/05/13/X.MP4"
    assert kept.read_bytes() == b"the same bytes on both devices"
