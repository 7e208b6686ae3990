"""Model files for the detectors: ``dashspool models fetch``, run on a machine with internet.

The devices that run dashspool often have no internet (and Ultralytics must not download at run
time anyway), so weights are fetched once, on any machine that can, and copied to where
``policies.toml`` points. This fetches YOLO weights (``yolov8n.pt``) from Ultralytics' release
assets (through Ultralytics' own downloader, which knows the current release) or from a mirror
(``base_url``: any HTTP(S) folder holding the same file names), and can export them to ONNX for
the ``onnx`` detector. Every file is written under a temporary name and renamed when complete,
so a broken download never leaves a file a watcher would try to load.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
TIMEOUT_SECONDS = 60


class FetchError(Exception):
    """A model could not be fetched or exported; ``str()`` says why and what to do."""


def fetch(
    name: str, folder: Path, *, base_url: str | None = None, formats: tuple[str, ...] = ("pt",)
) -> list[Path]:
    """Fetch ``<name>.pt`` into ``folder`` (kept if already there) and export the other
    ``formats`` (``onnx``) next to it; returns the files."""
    if not name or set(name.lower()) - NAME_CHARS or name.startswith("."):
        raise FetchError(f"{name!r} is not a model name (letters, digits, '-', '_', '.')")
    unknown = set(formats) - {"pt", "onnx"}
    if unknown:
        raise FetchError(f"cannot make {sorted(unknown)}: the formats are 'pt' and 'onnx'")
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}.pt"
    out = []
    if not weights.is_file():
        _download(name + ".pt", weights, base_url)
    out.append(weights)
    if "onnx" in formats:
        out.append(_export_onnx(weights))
    return out


def _download(file: str, dest: Path, base_url: str | None) -> None:
    part = dest.with_name(f".{dest.name}.part")
    try:
        if base_url:
            url = urllib.parse.urljoin(base_url.rstrip("/") + "/", file)
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise FetchError(f"{base_url!r} is not an http(s) address")
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        else:
            os.environ.pop("YOLO_OFFLINE", None)  # fetching is the one time it may go online
            from ultralytics.utils.downloads import attempt_download_asset

            got = Path(attempt_download_asset(str(part.with_name(file))))
            if not got.is_file():
                raise FetchError(f"Ultralytics' downloader did not produce {file}")
            got.replace(part)
        if part.stat().st_size == 0:
            raise FetchError(f"{file}: the download is empty")
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        part.replace(dest)
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        raise FetchError(
            f"could not download {file} ({err}); run `dashspool models fetch` on a machine with "
            f"internet (or give --base-url of a mirror), then copy {dest.parent} to the device"
        ) from None
    finally:
        part.unlink(missing_ok=True)
    log.info("fetched %s", dest)


def _export_onnx(weights: Path) -> Path:
    """``<name>.onnx`` beside ``weights`` (a fixed 640x640 input, as the onnx detector takes)."""
    target = weights.with_suffix(".onnx")
    if target.is_file():
        return target
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO  # type: ignore[attr-defined]
    except ImportError as err:
        raise FetchError(f"exporting to ONNX needs ultralytics ({err})") from None
    try:
        made = Path(YOLO(str(weights)).export(format="onnx", imgsz=640, verbose=False))
    except Exception as err:  # ultralytics raises many kinds
        raise FetchError(f"could not export {weights.name} to ONNX: {err}") from None
    if made.resolve() != target.resolve():
        made.replace(target)
    return target
