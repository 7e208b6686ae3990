"""ISO BMFF (MP4/MOV) boxes, read defensively.

Dashcam files are cut short by power loss, so every size in them is untrusted: a walk never
reads outside ``[start, end)``, always moves forward, and stops (noting why in
:attr:`BoxReader.problems`) at the first box whose size cannot be right. Nothing here raises on
bad data; callers decide what a problem means.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

# boxes that hold other boxes, as far as dashspool needs to descend
CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf"})


@dataclass(frozen=True)
class Box:
    type: bytes  # four bytes, e.g. b"moov"
    start: int  # file offset of the header
    header: int  # 8, or 16 with a 64-bit size
    size: int  # declared size, header included
    limit: int  # end of the region the box was found in

    @property
    def end(self) -> int:
        """Where the box ends, clamped to the region it was found in."""
        return min(self.start + self.size, self.limit)

    @property
    def payload_start(self) -> int:
        return self.start + self.header

    @property
    def truncated(self) -> bool:
        """The declared size runs past the region (the file was cut short)."""
        return self.start + self.size > self.limit

    @property
    def name(self) -> str:
        return self.type.decode("latin-1")


class BoxReader:
    """Walks the boxes of one open file. ``problems`` collects one line per oddity met."""

    def __init__(self, f: BinaryIO, size: int | None = None) -> None:
        self.f = f
        self.size = os.fstat(f.fileno()).st_size if size is None else size
        self.problems: list[str] = []

    def boxes(self, start: int = 0, end: int | None = None) -> Iterator[Box]:
        """The boxes laid end to end in ``[start, end)`` (default: the top level of the file)."""
        end = self.size if end is None else min(end, self.size)
        pos = start
        while pos + 8 <= end:
            head = self.read_at(pos, 16 if pos + 16 <= end else 8)
            size, kind = struct.unpack(">I4s", head[:8])
            header = 8
            if size == 1:  # 64-bit size follows the type
                if len(head) < 16:
                    self.problems.append(f"box {kind!r} at {pos}: 64-bit size cut off")
                    return
                (size,) = struct.unpack(">Q", head[8:16])
                header = 16
            elif size == 0:  # "to the end of the file" (or of the enclosing box)
                size = end - pos
            if size < header:
                self.problems.append(f"box {kind!r} at {pos}: size {size} is smaller than a box")
                return
            box = Box(kind, pos, header, size, end)
            if box.truncated:
                self.problems.append(
                    f"box {box.name!r} at {pos}: declares {size} bytes, only {end - pos} are there"
                )
            yield box
            if box.truncated:
                return
            pos += size

    def children(self, box: Box) -> Iterator[Box]:
        return self.boxes(box.payload_start, box.end)

    def find(self, path: Sequence[bytes], start: int = 0, end: int | None = None) -> Box | None:
        """The first box at ``path`` (e.g. ``[b"moov", b"udta", b"\\xa9xyz"]``) below a region."""
        region: tuple[int, int | None] = (start, end)
        found: Box | None = None
        for kind in path:
            found = next((b for b in self.boxes(*region) if b.type == kind), None)
            if found is None:
                return None
            region = (found.payload_start, found.end)
        return found

    def top(self, kind: bytes) -> list[Box]:
        return [b for b in self.boxes() if b.type == kind]

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file, never past it)."""
        if offset < 0 or offset >= self.size or length <= 0:
            return b""
        self.f.seek(offset)
        return self.f.read(min(length, self.size - offset))

    def payload(self, box: Box, limit: int = 1 << 24) -> bytes:
        """A box's payload, at most ``limit`` bytes (the caller bounds what it trusts)."""
        return self.read_at(box.payload_start, min(box.end - box.payload_start, limit))
