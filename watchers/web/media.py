"""Files of an archived clip, served from inside the archive root only.

A clip's folder is ``<archive>/YYYY/MM/DD/<video id>/`` (docs/archive.md); the ledger's
``archive_path`` names the clip in it. A request names the video and a file of that folder: a
plain name or ``thumbs/<name>``, never ``..``, a hidden name or a symlink that leads out of the
archive (the path is resolved and checked before anything is opened).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from watchers.archiving import ARCHIVE_PATH_RE
from watchers.errors import NotFound

MEDIA_RE = re.compile(r"^(thumbs/)?[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
PREVIEW, POSTER = "preview.mp4", "poster.jpg"
TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".ts": "video/mp2t",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".gpx": "application/gpx+xml",
}


class Media(BaseModel):
    """URLs of what the archive holds for one clip (empty when it is not archived yet)."""

    archived: bool = False
    video: str | None = None  # what a browser should play: the preview when there is one
    clip: str | None = None  # the original file
    preview: str | None = None
    poster: str | None = None
    meta: str | None = None
    thumbs: dict[str, str] = {}  # heavy's file name (track-0003.jpg) → URL


def entry(archive_root: Path | None, archive_path: str | None) -> tuple[Path, str] | None:
    """The clip's folder and file name, when the ledger's path has the archive's shape (and
    the archive is a local or mounted folder: None for an ``smb://`` archive)."""
    if archive_root is None or not archive_path or not ARCHIVE_PATH_RE.match(archive_path):
        return None
    rel = PurePosixPath(archive_path)
    return archive_root / rel.parent, rel.name


def resolve(archive_root: Path | None, archive_path: str | None, name: str) -> Path:
    """The file ``name`` of a clip's folder, resolved; NotFound unless it is a regular file
    inside the archive root."""
    found = entry(archive_root, archive_path)
    if found is None or not MEDIA_RE.match(name) or ".." in name:
        raise NotFound(f"no such file {name!r}")
    folder, _ = found
    assert archive_root is not None  # entry() found the folder under it
    root = archive_root.resolve()
    try:
        target = (folder / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        raise NotFound(f"no such file {name!r}") from None
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"no such file {name!r}")
    return target


def media_type(path: Path) -> str:
    return TYPES.get(path.suffix.lower(), "application/octet-stream")


def url(video_id: str, name: str) -> str:
    return f"/media/{video_id}/{name}"


def media(archive_root: Path | None, video_id: str, archive_path: str | None) -> Media:
    """What the clip's archive folder holds, as URLs (files that escape the root are left out)."""
    found = entry(archive_root, archive_path)
    if found is None:
        return Media()
    folder, clip = found

    def have(name: str) -> str | None:
        try:
            resolve(archive_root, archive_path, name)
        except NotFound:
            return None
        return url(video_id, name)

    thumbs: dict[str, str] = {}
    if (folder / "thumbs").is_dir():
        for p in sorted((folder / "thumbs").iterdir()):
            if have(f"thumbs/{p.name}"):
                thumbs[p.name] = url(video_id, f"thumbs/{p.name}")
    original, preview = have(clip), have(PREVIEW)
    return Media(
        archived=original is not None,
        video=preview or original,
        clip=original,
        preview=preview,
        poster=have(POSTER),
        meta=have("meta.json"),
        thumbs=thumbs,
    )
