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

    def __getattr__(self, name):  # describe(), fingerprint parts: the encoder's own
        return getattr(self.encoder, name)


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


def test_encoder_services_set_their_thread_count(monkeypatch):
    import os

    import torch

    from services.encoder_runtime import apply_threads

    before = torch.get_num_threads()
    try:
        assert apply_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setattr(os, "cpu_count", lambda: 16)
        assert apply_threads(None) == 4 and torch.get_num_threads() == 4  # cores / 4: four services on one host
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert apply_threads(None) == 1  # never 0, and not every core of a shared host
    finally:
        torch.set_num_threads(before)


def test_threads_setting_is_validated():
    import pytest

    from mixrec.config import ConfigError, load_config

    cfg = load_config(None, environ={"MIXREC__SERVING__TEXT_ENCODER__THREADS": "2"})
    assert cfg.serving.text_encoder.threads == 2 and cfg.serving.image_encoder.threads is None
    with pytest.raises(ConfigError, match="threads"):
        load_config(None, environ={"MIXREC__SERVING__TEXT_ENCODER__THREADS": "0"})


def test_catalog_text_reaches_the_encoder_in_blocks_it_can_sort(tmp_path):
    """``mixrec encode`` hands the text encoder many batches at once, so its length sort spans them
    (one batch at a time, the sort could not save any padding); a bad text still only drops itself."""
    from encoders.encode_catalog import CatalogEncoders, TEXT_BLOCK, encode_catalog
    from mixrec.catalog import Item, write_items
    from mixrec.config import config_from_dict

    cfg = config_from_dict({"encoders": {
        "text": {"kind": "hf-text", "model": "mixrec-tiny-bert", "weights": "random", "device": "cpu", "batch_size": 4},
        "image": {"kind": "open-clip", "model": "mixrec-tiny-clip", "weights": "random", "device": "cpu"},
        "audio": {"kind": "hf-audio", "model": "mixrec-tiny-clap", "weights": "random", "device": "cpu"},
    }}, environ={})
    items = [Item(item_id=f"i{i}", type="product", title=("long title " * (8 if i % 2 else 1)) + str(i))
             for i in range(30)]
    write_items(tmp_path, items)
    enc = CatalogEncoders.from_config(cfg)
    counted = _Counting(enc.text)
    enc.text = counted
    emb, stats = encode_catalog(cfg, tmp_path, progress=False, encoders=enc)
    assert counted.calls == [30, 2] and TEXT_BLOCK * 4 >= 30  # the catalogue in one call; then the fingerprint's probe
    assert emb.masks["text"].all() and stats["text"]["count"] == 30
    np.testing.assert_allclose(emb.vectors["text"][[0, 7]], enc.text.encoder.encode([items[0].text(), items[7].text()]),
                               atol=1e-5)
