"""An on-disk cache of item vectors, keyed by the item's content and the encoders that made them.

Layout: ``<root>/<encoder key>/encoders.json`` (the encoders' describe() + fingerprint, as
``ItemEmbeddings.encoders`` records them) and ``<root>/<encoder key>/<ab>/<item key>.npz`` (one item's
vectors and masks). The encoder key hashes what decides the vectors without loading a model: each
encoder's config (kind, model, weights, seed, options), the video and media-limit settings, where the
weights live on disk (file names, sizes and modification times) and the torch / transformers /
open_clip versions. The item key hashes what the encoders read: ``Item.text()`` and the bytes of each
medium (whether given as a path or as bytes). An unchanged item under unchanged encoders is a file
read; anything else is a miss. Files are written to a temporary name and renamed, so a crash leaves no
half-written entry.

Hand-written rather than ``diskcache`` / ``joblib.Memory``: neither is a dependency, and an entry is a
plain ``.npz`` of float32 arrays (no pickle) that the cache reads back with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mixrec.catalog import Item
from mixrec.config import MODALITIES, MixrecConfig

CACHE_VERSION = 1
ENCODERS_FILE = "encoders.json"
_VERSIONED = ("torch", "transformers", "open_clip_torch", "torchaudio")


def _sha(obj: Any) -> str:
    data = obj if isinstance(obj, bytes) else json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(data).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _weights_signature(weights: str | None, model: str) -> Any:
    """Where the weights are and what the files look like (name, size, mtime), without reading them."""
    from encoders.weights import resolve_weights

    try:
        source = resolve_weights(weights, model)
    except Exception as e:  # noqa: BLE001 - an unresolvable source is a key part too (build_encoder will say why)
        return {"unresolved": f"{type(e).__name__}: {e}"}
    path = source.path
    if path is None or not Path(path).exists():
        return {"kind": source.kind, "ref": source.ref}
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {"kind": source.kind, "files": [(p.relative_to(path).as_posix() if p != path else p.name,
                                            p.stat().st_size, p.stat().st_mtime_ns) for p in files]}


def encoder_key(cfg: MixrecConfig) -> str:
    encoders = {}
    for m in MODALITIES:
        ecfg = getattr(cfg.encoders, m)
        encoders[m] = {**ecfg.model_dump(exclude={"batch_size", "device", "fp16"}),
                       "weights_files": _weights_signature(ecfg.weights, ecfg.model)}
    return _sha({"version": CACHE_VERSION, "encoders": encoders, "video": cfg.video.model_dump(),
                 "limits": cfg.limits.model_dump(), "libraries": {d: _version(d) for d in _VERSIONED}})[:32]


def content_digest(source: bytes | str | os.PathLike | None) -> str | None:
    """sha256 of a medium's bytes (read from its path when given one)."""
    if source is None:
        return None
    if isinstance(source, (bytes, bytearray)):
        return _sha(bytes(source))
    h = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def item_key(item: Item, media: dict[str, str | None]) -> str:
    """``media``: the content digest of each medium the item has."""
    return _sha({"text": item.text(), **media})[:40]


class EmbeddingCache:
    """Vectors of items under one encoder key, in ``root``."""

    def __init__(self, root: str | os.PathLike, key: str) -> None:
        self.dir = Path(root).expanduser() / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, bool]] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                vectors = {m: z[f"vec_{m}"] for m in MODALITIES if f"vec_{m}" in z.files}
                masks = {m: bool(z[f"mask_{m}"]) for m in vectors}
        except (OSError, ValueError, KeyError):  # a damaged entry is a miss; the next put replaces it
            return None
        return vectors, masks

    def put(self, key: str, vectors: dict[str, np.ndarray], masks: dict[str, bool]) -> None:
        arrays = {f"vec_{m}": np.asarray(v, np.float32) for m, v in vectors.items()}
        arrays.update({f"mask_{m}": np.asarray(bool(masks[m])) for m in vectors})
        self._atomic(self._path(key), lambda f: np.savez(f, **arrays))

    def encoders(self) -> dict[str, dict] | None:
        path = self.dir / ENCODERS_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def put_encoders(self, described: dict[str, dict]) -> None:
        self._atomic(self.dir / ENCODERS_FILE, lambda f: f.write(json.dumps(described, sort_keys=True).encode()))

    @staticmethod
    def _atomic(path: Path, write) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
