"""Shared space: cross-modal alignment, masking of missing modalities, dims checks, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.shared_space import IncompatibleEmbeddingsError, SharedSpace, unit_rows
from fusion.synthetic import make_catalog
from mixrec.config import FusionConfig
from mixrec.embeddings import ItemEmbeddings

CFG = FusionConfig(shared_dim=12, codebook_size=8)


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=300, n_users=10, seed=1)


def recall_at_1(queries: np.ndarray, keys: np.ndarray) -> float:
    """Share of rows whose nearest key (cosine) is the same item."""
    sims = unit_rows(queries) @ unit_rows(keys).T
    return float((sims.argmax(axis=1) == np.arange(len(queries))).mean())


def own_pca(x: np.ndarray, k: int) -> np.ndarray:
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    return xc @ vt[:k].T


def test_alignment_beats_unaligned_baseline(catalog):
    emb = catalog.embeddings
    space = SharedSpace.fit(emb, CFG)
    both = emb.masks["image"] & emb.masks["text"]
    img, txt = emb.vectors["image"][both], emb.vectors["text"][both]
    aligned = recall_at_1(space.project("image", img), space.project("text", txt))
    # Unaligned: each modality reduced to the same width on its own (no cross-modal fit).
    unaligned = recall_at_1(own_pca(img, space.dim), own_pca(txt, space.dim))
    assert aligned > 0.3
    assert aligned > 3 * unaligned


def test_projections_are_unit_rows_in_shared_dim(catalog):
    space = SharedSpace.fit(catalog.embeddings, CFG)
    out = space.project("audio", catalog.embeddings.vectors["audio"][:5])
    assert out.shape == (5, CFG.shared_dim)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert space.anchor == "text" and space.weight("text") == 1.0
    assert 0.0 < space.weight("image") <= 1.0


def test_missing_modalities_are_masked_not_zero_data(catalog):
    emb = catalog.embeddings
    space = SharedSpace.fit(emb, CFG)
    rows = [0, 1, 2]
    vectors = {m: emb.vectors[m][rows].copy() for m in emb.vectors}
    masks = {m: np.zeros(3, bool) for m in emb.vectors}
    masks["audio"][0] = True  # item 0: audio only
    masks["text"][1] = masks["image"][1] = True  # item 1: text + image; item 2: nothing
    # Garbage in the masked-out slots must not leak into the fused vectors.
    vectors["text"][0] = 100.0
    sub = ItemEmbeddings(["a", "b", "c"], vectors, masks, emb.encoders)
    fused = space.fuse(sub)
    np.testing.assert_allclose(fused[0], space.project("audio", vectors["audio"][:1])[0], atol=1e-5)
    w_t, w_i = space.weight("text"), space.weight("image")
    expect = unit_rows(w_t * space.project("text", vectors["text"][1:2]) + w_i * space.project("image", vectors["image"][1:2]))
    np.testing.assert_allclose(fused[1], expect[0], atol=1e-5)
    assert not fused[2].any()


def test_noise_modality_gets_low_weight(catalog):
    emb = catalog.embeddings
    rng = np.random.default_rng(0)
    noisy = dict(emb.vectors)
    noisy["audio"] = unit_rows(rng.standard_normal(emb.vectors["audio"].shape)) * emb.masks["audio"][:, None]
    space = SharedSpace.fit(ItemEmbeddings(emb.item_ids, noisy, emb.masks, emb.encoders), CFG)
    assert space.weight("audio") < 0.1 < space.weight("image")


def test_query_from_any_modality_lands_near_its_item(catalog):
    emb = catalog.embeddings
    space = SharedSpace.fit(emb, CFG)
    fused = space.fuse(emb)
    j = int(np.flatnonzero(emb.masks["audio"])[0])
    q = space.fuse_query({"audio": emb.vectors["audio"][j]})
    sims = fused @ q
    assert np.argsort(-sims).tolist().index(j) < 10


def test_wrong_dims_fail_clearly(catalog):
    space = SharedSpace.fit(catalog.embeddings, CFG)
    with pytest.raises(IncompatibleEmbeddingsError, match="48-d text"):
        space.project("text", np.zeros((2, 50), np.float32))
    other = dict(catalog.embeddings.encoders)
    other["text"] = {**other["text"], "model": "another-model"}
    emb = catalog.embeddings
    with pytest.raises(IncompatibleEmbeddingsError, match="another-model"):
        space.check_compatible(ItemEmbeddings(emb.item_ids, emb.vectors, emb.masks, other))


def test_save_load_round_trip(tmp_path, catalog):
    space = SharedSpace.fit(catalog.embeddings, CFG)
    space.save(tmp_path)
    back = SharedSpace.load(tmp_path)
    np.testing.assert_allclose(back.fuse(catalog.embeddings), space.fuse(catalog.embeddings), atol=1e-6)
    assert back.meta() == space.meta()
