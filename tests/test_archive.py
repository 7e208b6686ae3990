"""The archive stage end to end: real clips through real ingest and preprocess into a real
archive folder, hashed as sent and as read back; the ledger marks a clip archived only then."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import av
import cv2
import pytest
from conftest import Pipeline, chain_settings, dropped
from mediagen import top_boxes
from scenegen import make_scene
from test_preprocess import gpx_track

import stages.archive as archive_stage
from watchers.archiving import apply_archive, parse_archive
from watchers.ledger import Video
from watchers.stores import Store

T0 = datetime(2026, 5, 13, 16, 0, 0, tzinfo=timezone.utc)
NAME = "2026_0513_160000_000104F.MP4"


def settings(**archive: Any) -> dict[str, Any]:
    data = chain_settings(("ingest", "preprocess", "heavy", "archive"))
    stages = data["stages"]
    stages["ingest"].update(type="ingest", timezone="UTC")
    stages["preprocess"] = {"type": "preprocess", "next": ["heavy", "archive"]}
    stages["archive"] = {
        "type": "archive",
        "next": [],
        "terminal_state": "archived",
        **archive,
    }
    data["retry"] = {
        "in_process_attempts": 2,
        "in_process_initial_seconds": 0,
        "in_process_max_seconds": 0,
        "max_attempts": 1,
    }
    return data


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """``run(clips, **archive settings)``: drop the clips, drain the pipeline, return it."""
    made: list[Pipeline] = []

    def go(clips: dict[str, Path | bytes], **archive: Any) -> Pipeline:
        p = dropped(tmp_path, settings(**archive), clips)
        made.append(p)
        p.drain()
        return p

    yield go
    for p in made:
        p.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entries(root: Path) -> list[Path]:
    """Archive entries (YYYY/MM/DD/<id>), dot folders (work in progress) left out."""
    return sorted(p for p in root.glob("*/*/*/*") if not p.name.startswith("."))


def one_video(p: Pipeline) -> Video:
    (video,) = p.coordinator.ledger.videos()
    return video


def drive(tmp_path: Path, **scene: Any) -> dict[str, Path | bytes]:
    clip = make_scene(tmp_path / "clip.mp4", seconds=6, fps=10, drive=True, **scene)
    gpx = gpx_track([(T0 + timedelta(seconds=i), 10.0) for i in range(7)])
    return {NAME: clip, f"{NAME}.gpx": gpx}


def test_a_drive_is_archived_verified_with_everything_known(run: Any, tmp_path: Path) -> None:
    clips = drive(tmp_path)
    original = sha256(tmp_path / "clip.mp4")
    p = run(clips)
    (entry,) = entries(tmp_path / "archive")
    video = one_video(p)
    assert entry.relative_to(tmp_path / "archive").as_posix() == f"2026/05/13/{video.video_id}"
    assert sha256(entry / NAME) == original == video.sha256
    assert (video.state, video.archive_sha256) == ("archived", original)
    assert video.archive_path == f"2026/05/13/{video.video_id}/{NAME}"
    meta = json.loads((entry / "meta.json").read_text())
    assert (meta["sha256"], meta["file"], meta["source_name"]) == (original, NAME, NAME)
    assert meta["camera"]["channel"] == "F"
    assert [s["stage"] for s in meta["route"]["stages"]] == ["ingest", "preprocess", "heavy"]
    assert meta["track"]["points"] == 7 and meta["track"]["distance_m"] > 50
    assert {"track.gpx", "track.geojson", "poster.jpg"} <= set(os.listdir(entry))
    poster = cv2.imread(str(entry / "poster.jpg"))
    assert poster is not None and poster.shape[:2] == (180, 320)
    assert not (entry / "preview.mp4").exists(), "an H.264 clip at 180 lines plays as it is"
    assert not [p for p in (tmp_path / "archive").rglob(".*")], "no work-in-progress left"


def test_an_hevc_clip_gets_a_faststart_h264_preview(run: Any, tmp_path: Path) -> None:
    clips = drive(tmp_path, codec="libx265", width=480, height=270)
    run(clips, preview={"max_height": 144})
    (entry,) = entries(tmp_path / "archive")
    preview = entry / "preview.mp4"
    with av.open(str(preview)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.height, stream.width) == ("h264", 144, 256)
        assert sum(1 for _ in c.decode(stream)) == 60
    kinds = [kind for kind, _, _ in top_boxes(preview)]
    assert kinds.index("moov") < kinds.index("mdat"), "faststart: the index comes first"
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["preview"].startswith("H.264 256x144, 60 frames")


def test_preview_mode_never_and_always(run: Any, tmp_path: Path) -> None:
    run(drive(tmp_path), preview={"mode": "always", "max_height": 144})
    (entry,) = entries(tmp_path / "archive")
    assert (entry / "preview.mp4").is_file()


def test_a_copy_that_reads_back_wrong_is_retried_then_failed_never_archived(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store.put
    tries: list[Path] = []

    def flaky_disk(self: Store, src: Path, rel: str, *, fsync: bool) -> str:
        sent = real(self, src, rel, fsync=fsync)
        if self.name == "archive":
            dst = self.local_path(rel)
            assert dst is not None
            data = bytearray(dst.read_bytes())
            data[len(data) // 2] ^= 0x01  # one bit flipped on its way to the platter
            dst.write_bytes(bytes(data))
            tries.append(dst)
        return sent

    monkeypatch.setattr(Store, "put", flaky_disk)
    p = run(drive(tmp_path))
    assert len(tries) == 2, "retried in process once, then failed (max_attempts 1)"
    video = one_video(p)
    assert video.state == "failed" and video.archive_sha256 is None and video.archived_at is None
    assert "reads back wrong" in (video.last_error or "")
    assert entries(tmp_path / "archive") == []
    assert not [x for x in (tmp_path / "archive").rglob("*") if x.is_file()], "no bad copy kept"
    (failed,) = (tmp_path / "spool/archive/failed").glob("*.error.json")
    assert "reads back wrong" in failed.read_text()


def test_a_damaged_raw_clip_is_never_archived(run: Any, tmp_path: Path) -> None:
    """The raw store's copy changed after ingest hashed it: the bytes sent do not match."""
    p = dropped(tmp_path, settings(), drive(tmp_path))
    archive_worker = p.workers[-1]
    for w in p.workers[:-1]:
        while w.loop_once():
            pass
    (raw,) = (tmp_path / "raw").rglob("*.MP4")
    damaged = bytearray(raw.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    raw.unlink()  # a new file: the spool's hard-linked copies keep the original bytes
    raw.write_bytes(bytes(damaged))
    while archive_worker.loop_once():
        pass
    p.coordinator.ingest()
    video = one_video(p)
    p.close()
    assert video.state == "failed" and video.archive_sha256 is None
    assert "does not hash to its identity" in (video.last_error or "")
    assert entries(tmp_path / "archive") == []


def requeue_done(tmp_path: Path) -> None:
    """Run the archived job again (as a repair does): a new attempt, so a new completion."""
    (job,) = (tmp_path / "spool/archive/done").iterdir()
    sidecar = json.loads((job / "job.json").read_text())
    sidecar["attempts"] += 1
    (job / "job.json").write_text(json.dumps(sidecar))
    job.rename(tmp_path / "spool/archive/inbox" / job.name)


def test_archiving_an_archived_clip_verifies_and_finishes(run: Any, tmp_path: Path) -> None:
    p = run(drive(tmp_path))
    (entry,) = entries(tmp_path / "archive")
    before = (entry / NAME).stat()
    requeue_done(tmp_path)
    assert p.drain() == 1
    after = (entry / NAME).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "not copied"
    assert one_video(p).state == "archived"


def test_a_damaged_archive_copy_is_set_aside_and_copied_again(run: Any, tmp_path: Path) -> None:
    p = run(drive(tmp_path))
    (entry,) = entries(tmp_path / "archive")
    good = sha256(entry / NAME)
    damaged = bytearray((entry / NAME).read_bytes())
    damaged[1000] ^= 0x10
    (entry / NAME).write_bytes(bytes(damaged))
    requeue_done(tmp_path)
    p.drain()
    assert sha256(entry / NAME) == good
    (aside,) = entry.glob(f"{NAME}.corrupt-*")
    assert aside.read_bytes() == bytes(damaged), "the bad copy is kept, never deleted"
    assert one_video(p).archive_sha256 == good


def test_a_crash_leftover_is_cleared_and_the_entry_appears_whole(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-built entry of this device (a crash mid-copy) is rebuilt from scratch."""
    real = archive_stage.ArchiveStage._extras
    seen: list[list[str]] = []

    def looking(self: Any, job: Any, ctx: Any, store: Any, target: str, *args: Any) -> Any:
        seen.append(sorted(os.listdir(store.local_root / target.rsplit("/", 1)[0])))
        return real(self, job, ctx, store, target, *args)

    monkeypatch.setattr(archive_stage.ArchiveStage, "_extras", looking)
    leftover = tmp_path / "archive/2026/05/13"
    leftover.mkdir(parents=True)
    clips = drive(tmp_path)
    vid = hashlib.sha256(Path(clips[NAME]).read_bytes()).hexdigest()  # type: ignore[arg-type]
    stale = leftover / f".{vid[:16]}.partial-dev1"
    stale.mkdir()
    (stale / "junk").write_bytes(b"half a clip")
    run(clips)
    assert seen == [[stale.name]], "while building, only the work-in-progress folder exists"
    (entry,) = entries(tmp_path / "archive")
    assert not stale.exists() and not (entry / "junk").exists()


def test_a_link_in_place_of_the_partial_entry_is_removed_not_followed(
    run: Any, tmp_path: Path
) -> None:
    """Cleaning up ``.<id>.partial-<device>`` never deletes what a link there points to."""
    day = tmp_path / "archive/2026/05/13"
    day.mkdir(parents=True)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_bytes(b"not the archive's")
    clips = drive(tmp_path)
    vid = hashlib.sha256(Path(clips[NAME]).read_bytes()).hexdigest()  # type: ignore[arg-type]
    (day / f".{vid[:16]}.partial-dev1").symlink_to(precious)
    p = run(clips)
    assert one_video(p).state == "archived"
    assert (precious / "keep.txt").read_bytes() == b"not the archive's"
    assert entries(tmp_path / "archive") == [day / vid[:16]]


def test_the_ledger_takes_only_a_hash_that_is_the_clips_own() -> None:
    sha = "ab" * 32
    facts = {
        "kind": "archived",
        "path": f"2026/05/13/{sha[:16]}/{NAME}",
        "sha256": sha,
        "verified_at": "2026-05-13T16:10:00Z",
        "readback": True,
    }
    parsed = parse_archive(facts)
    assert parsed is not None
    video = Video(
        video_id=sha[:16], job="j", source_name=NAME, state="x", created_at="", updated_at=""
    )
    video.sha256 = "cd" * 32
    apply_archive(video, parsed)
    assert video.archive_sha256 is None, "another clip's hash is not an archive of this one"
    video.sha256 = sha
    apply_archive(video, parsed)
    recorded: tuple[str | None, str | None] = (video.archive_sha256, video.archived_at)
    assert recorded == (sha, "2026-05-13T16:10:00Z")
    bad = {**facts, "path": "../../etc/passwd"}
    assert parse_archive(bad) is None
    unread = parse_archive({**facts, "readback": False})
    assert unread is not None
    video.archive_sha256 = video.archived_at = None
    apply_archive(video, unread)
    assert video.archive_sha256 is None, "a copy never read back is not verified"


def test_a_rerun_that_knows_less_keeps_what_the_entry_knew(run: Any, tmp_path: Path) -> None:
    """A repair job rebuilt from the ledger has no heavy labels: the entry keeps its own."""
    p = run(drive(tmp_path))
    (entry,) = entries(tmp_path / "archive")
    meta = json.loads((entry / "meta.json").read_text())
    meta["objects"] = [{"track_id": 1, "label": "car"}]
    (entry / "meta.json").write_text(json.dumps(meta))
    requeue_done(tmp_path)
    p.drain()
    again = json.loads((entry / "meta.json").read_text())
    assert again["objects"] == [{"track_id": 1, "label": "car"}]
    assert again["archived_at"] != "" and again["track"]["points"] == 7


def test_a_preview_that_fails_does_not_cost_the_archive(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise archive_stage.PermanentError("preview: PyAV could not transcode the clip: EOF")

    monkeypatch.setattr(archive_stage.media, "make_preview", broken)
    p = run(drive(tmp_path), preview={"mode": "always"})
    (entry,) = entries(tmp_path / "archive")
    assert one_video(p).state == "archived" and not (entry / "preview.mp4").exists()
    meta = json.loads((entry / "meta.json").read_text())
    assert any("could not transcode" in line for line in meta["problems"])
    assert not list(entry.glob(".preview*")), "no half-made preview left behind"
