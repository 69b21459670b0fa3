"""A merged adaptive batch with bad items: NaN rows for those, one batch call for the rest (not one per item)."""

from __future__ import annotations

import numpy as np

from conftest import encoder_config, image_bytes
from encoders.registry import build_encoder
from services.encoder_runtime import encode_batch


class _Counting:
    """The encoder, with the size of every ``encode`` call recorded."""

    def __init__(self, encoder) -> None:
        self.encoder, self.calls = encoder, []
        self.modality, self.dim = encoder.modality, encoder.dim

    def encode(self, batch):
        self.calls.append(len(batch))
        return self.encoder.encode(batch)


def test_bad_items_in_a_merged_batch_cost_one_extra_call_each():
    enc = _Counting(build_encoder(encoder_config("open-clip", "mixrec-tiny-clip")))
    colours = [(30 * i, 200 - 20 * i, 90) for i in range(8)]
    batch = [image_bytes(c) for c in colours]
    batch[2], batch[5] = b"not an image", b"\x89PNG\r\n\x1a\n truncated"
    rows = encode_batch(enc, batch)
    assert rows.shape == (8, enc.dim) and rows.dtype == np.float32
    assert np.isnan(rows[[2, 5]]).all()
    good = [i for i in range(8) if i not in (2, 5)]
    np.testing.assert_allclose(rows[good], enc.encoder.encode([batch[i] for i in good]), atol=1e-5)
    assert enc.calls == [8, 7, 6]  # the batch, then the rest after each bad item, as one call each


def test_a_clean_batch_is_one_call():
    enc = _Counting(build_encoder(encoder_config("hf-text", "mixrec-tiny-bert")))
    rows = encode_batch(enc, ["a", "b c", "d e f"])
    assert enc.calls == [3] and np.isfinite(rows).all()
