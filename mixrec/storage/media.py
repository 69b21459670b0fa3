"""MediaStore: uploaded image / audio / video bytes on disk under content-addressed names.

A file is stored as ``<root>/<h[:2]>/<h>.<ext>`` where ``h`` is the SHA-256 of its
bytes and ``ext`` comes from the bytes themselves (magic numbers), never from a
caller-supplied file name. Names handed back in are checked against that exact
shape, so no name can reach outside ``root``. Identical uploads share one file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mixrec.errors import shown
from mixrec.storage.errors import MediaError, MediaTooLargeError, UnsupportedMediaError

MEDIA_KINDS = ("image", "audio", "video")
_NAME = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{64})\.([a-z0-9]{2,4})$")


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, extension) from the first bytes of a file, or None when unrecognised."""
    riff = head[:4] == b"RIFF"
    if head[:3] == b"\xff\xd8\xff":
        return "image", "jpg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "image", "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif"
    if riff and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "image", "bmp"
    if riff and head[8:12] == b"WAVE":
        return "audio", "wav"
    if head[:4] == b"fLaC":
        return "audio", "flac"
    if head[:4] == b"OggS":
        return "audio", "ogg"
    if head[:3] == b"ID3":
        return "audio", "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS sync with layer bits 00
            return "audio", "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG audio frame sync, layer I-III
            return "audio", "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio", "m4a"
        return "video", "mov" if brand == b"qt  " else "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska / WebM
        return "video", "webm" if b"webm" in head[:64] else "mkv"
    if riff and head[8:11] == b"AVI":
        return "video", "avi"
    return None


@dataclass(frozen=True)
class StoredMedia:
    name: str  # relative, content-addressed: what items reference
    path: Path
    kind: str
    ext: str
    size: int
    sha256: str


class MediaStore:
    """Save and find uploaded media under ``root``; ``max_bytes`` is one limit or one per kind."""

    def __init__(self, root: str | os.PathLike, max_bytes: int | Mapping[str, int] = 10 * 1024 * 1024):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        limits = {k: max_bytes for k in MEDIA_KINDS} if isinstance(max_bytes, int) else dict(max_bytes)
        unknown = set(limits) - set(MEDIA_KINDS)
        if unknown or any(v <= 0 for v in limits.values()):
            raise ValueError(f"max_bytes must map {MEDIA_KINDS} to positive sizes, got {shown(dict(limits), 200)}")
        self.limits = limits

    def save(self, data: bytes, expected_kind: str | None = None) -> StoredMedia:
        """Store ``data`` and return where it lives; raises a ``MediaError`` subclass when refused."""
        if expected_kind is not None and expected_kind not in MEDIA_KINDS:
            raise ValueError(f"unknown media kind {shown(expected_kind)}; expected one of {MEDIA_KINDS}")
        ceiling = self.limits.get(expected_kind, 0) if expected_kind else max(self.limits.values(), default=0)
        if len(data) > ceiling:  # refuse before looking inside
            raise MediaTooLargeError(len(data), ceiling, expected_kind or "media")
        found = sniff(bytes(data[:64]))
        if found is None:
            raise UnsupportedMediaError("unrecognised media format (expected an image, audio or video file)")
        kind, ext = found
        if expected_kind is not None and kind != expected_kind:
            raise UnsupportedMediaError(f"expected {expected_kind} data but got {kind} ({ext})")
        limit = self.limits.get(kind)
        if limit is None:
            raise UnsupportedMediaError(f"{kind} uploads are not accepted here")
        if len(data) > limit:
            raise MediaTooLargeError(len(data), limit, kind)
        digest = hashlib.sha256(data).hexdigest()
        name = f"{digest[:2]}/{digest}.{ext}"
        path = self.root / name
        if not path.exists():
            self._write_atomically(path, data)
        return StoredMedia(name, path, kind, ext, len(data), digest)

    def save_file(self, source: str | os.PathLike, expected_kind: str | None = None) -> StoredMedia:
        """Like ``save`` for a file on disk (e.g. a BentoML upload); its size is checked before reading."""
        size = Path(source).stat().st_size
        ceiling = self.limits.get(expected_kind, 0) if expected_kind else max(self.limits.values(), default=0)
        if size > ceiling:
            raise MediaTooLargeError(size, ceiling, expected_kind or "media")
        return self.save(Path(source).read_bytes(), expected_kind)

    def path(self, name: str) -> Path:
        """The file for a stored name; refuses anything that is not a name this store hands out."""
        m = _NAME.match(name or "")
        if m is None or m.group(1) != m.group(2)[:2]:
            raise MediaError(f"invalid media name {shown(name)}")
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"no stored media named {shown(name)}")
        return path

    def read(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def delete(self, name: str) -> bool:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        # Write a temp file in the same directory, fsync it, then rename: readers never see a partial file.
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
