"""What the three encoder services share: robust batch encoding and wire format.

Media crosses service boundaries as base64 strings: BentoML batches list-like
JSON inputs across requests, and bytes are not JSON.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from typing import Any, Sequence

import numpy as np

from encoders.base import Encoder
from encoders.errors import InvalidMediaError

log = logging.getLogger("mixrec.services")


def apply_threads(threads: int | None) -> int:
    """Set this encoder process's torch intra-op threads (``serving.<m>_encoder.threads``; None: cores / 4, at
    least 1) before the encoder is built, so an ONNX Runtime session takes the same number. Returns it."""
    import torch

    n = threads or max(1, (os.cpu_count() or 1) // 4)
    torch.set_num_threads(n)
    return n


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(data: str, index: int | None = None, modality: str | None = None) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidMediaError("not valid base64", modality=modality, index=index) from None


def encode_batch(encoder: Encoder, batch: Sequence[Any]) -> np.ndarray:
    """Encode a merged adaptive batch without letting one bad item fail the others.

    Requests from different callers share a batch, so an invalid item yields a
    NaN row (the caller validates its own input first and reports the error)
    instead of an exception that would fail every request in the batch. The
    encoder names the first bad item's index: that row is set aside and the rest
    is encoded again as one batch (one extra call per bad item, not one per item).
    """
    rows = np.full((len(batch), encoder.dim), np.nan, dtype=np.float32)
    todo = list(range(len(batch)))
    while todo:
        try:
            rows[todo] = encoder.encode([batch[i] for i in todo])
            break
        except InvalidMediaError as e:
            if e.index is None or not 0 <= e.index < len(todo):  # no usable index: find the bad ones one by one
                return _encode_one_by_one(encoder, batch, todo, rows)
            log.warning("encoder %s: %s", encoder.modality, e.at(index=todo[e.index]))
            del todo[e.index]
    return rows


def _encode_one_by_one(encoder: Encoder, batch: Sequence[Any], todo: list[int], rows: np.ndarray) -> np.ndarray:
    for i in todo:
        try:
            rows[i] = encoder.encode([batch[i]])[0]
        except InvalidMediaError as e:
            log.warning("encoder %s: %s", encoder.modality, e.at(index=i))
    return rows


def fingerprint_of(encoder: Encoder) -> dict:
    from encoders.fingerprint import fingerprint

    return fingerprint(encoder)


def describe_served(encoder: Encoder) -> dict:
    """describe() plus the fingerprint's short digest (the full one, with probe vectors, is ``fingerprint``)."""
    import torch

    return {**encoder.describe(), "fingerprint_digest": fingerprint_of(encoder)["digest"],
            "threads": torch.get_num_threads()}
