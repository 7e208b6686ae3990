"""`dashspool models fetch`: weights from a mirror on loopback, an ONNX export next to them,
and clear failures that leave no half-written file."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import dashspool, write_config

from stages.detectors import OnnxSettings, build_detector
from stages.models import FetchError, fetch


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An HTTP folder on 127.0.0.1 holding ``tiny.pt``: a random-weight YOLOv8n checkpoint."""
    served = tmp_path_factory.mktemp("mirror")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(served.parent / "yolo-config"))
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(served / "tiny.pt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    thread.join()


def test_fetch_from_a_mirror_and_export_onnx(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, served = mirror
    made = fetch("tiny", tmp_path / "models", base_url=url, formats=("pt", "onnx"))
    assert [m.name for m in made] == ["tiny.pt", "tiny.onnx"]
    assert made[0].read_bytes() == (served / "tiny.pt").read_bytes()
    detector = build_detector(
        OnnxSettings(model=str(made[1])), classes=[], resolve=Path, where="test"
    )
    assert detector.input_size == (640, 640)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny.onnx", "tiny.pt"]
    again = fetch("tiny", tmp_path / "models", base_url=url + "gone/")  # already there: kept
    assert again == [made[0]]


def test_a_failed_download_says_what_to_do_and_leaves_nothing(
    mirror: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = mirror
    with pytest.raises(FetchError, match=r"could not download nothere\.pt .*machine with internet"):
        fetch("nothere", tmp_path / "models", base_url=url)
    assert list((tmp_path / "models").iterdir()) == []
    with pytest.raises(FetchError, match="not a model name"):
        fetch("../etc", tmp_path / "models", base_url=url)
    with pytest.raises(FetchError, match="not an http"):
        fetch("tiny", tmp_path / "models", base_url="file:///etc/")
    with pytest.raises(FetchError, match="formats are"):
        fetch("tiny", tmp_path / "models", base_url=url, formats=("engine",))


def test_the_cli_fetches_beside_policies_toml(mirror: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = mirror
    write_config(tmp_path)
    done = dashspool("models", "fetch", "--name", "tiny", "--base-url", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "models" / "tiny.pt").is_file()
    failed = dashspool("models", "fetch", "--name", "nothere", "--base-url", url, cwd=tmp_path)
    assert failed.returncode == 1
    assert "could not download nothere.pt" in failed.stderr
