"""Artifacts: safe formats, identical scores after load, refusal of other encoders, BentoML model store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fusion.artifacts import ARRAYS_DIR, META_FILE, ArtifactError
from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.shared_space import IncompatibleEmbeddingsError
from fusion.synthetic import make_catalog
from mixrec.catalog import Interaction
from mixrec.embeddings import ItemEmbeddings
from test_fusion_hybrid import new_items, small_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=150, n_users=80, seed=2)


@pytest.fixture(scope="module")
def trained(catalog):
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=5))


def assert_same_scores(a: HybridModel, b: HybridModel, catalog) -> None:
    user = catalog.interactions[0].user_id
    np.testing.assert_array_equal(a.score_all(user), b.score_all(user))
    q = Query(text_vec=catalog.embeddings.vectors["text"][5], liked_item_ids=(catalog.items[2].item_id,))
    np.testing.assert_array_equal(a.score_all(q), b.score_all(q))
    assert [r.item_id for r in a.recommend(user, 5)] == [r.item_id for r in b.recommend(user, 5)]
    assert [r.explanation for r in a.recommend(user, 3)] == [r.explanation for r in b.recommend(user, 3)]
    assert a.user_interests(user) == b.user_interests(user)
    assert a.item_ids() == b.item_ids() and a.known_users() == b.known_users()


def test_round_trip_gives_identical_scores(tmp_path, trained, catalog):
    trained.save(tmp_path / "art")
    # Safe formats only: json + .npy files that load without pickle.
    json.loads((tmp_path / "art" / META_FILE).read_text())
    names = {p.stem for p in (tmp_path / "art" / ARRAYS_DIR).glob("*.npy")}
    assert {"lfm_item_embeddings", "lfm_item_embedding_gradients", "item_id_bytes", "item_title_ends"} <= names
    for p in (tmp_path / "art" / ARRAYS_DIR).glob("*.npy"):
        np.load(p, allow_pickle=False)
    back = HybridModel.load(tmp_path / "art", expected_encoders=catalog.embeddings.encoders)
    assert_same_scores(trained, back, catalog)
    assert back.weights == trained.weights and back.blend_weights == trained.blend_weights


def test_loaded_model_keeps_learning(tmp_path, catalog):
    model = HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=5))
    items, emb = new_items(catalog, "jazz", 2, seed=9)
    model.add_items(items, emb)
    model.save(tmp_path / "art")
    back = HybridModel.load(tmp_path / "art")
    assert_same_scores(model, back, catalog)  # cold items too
    user = catalog.interactions[0].user_id
    before = back.score_all(user).copy()
    back.add_interactions([Interaction(user, "new0", "like", 1.0)])
    back.fit_partial(epochs=2)
    assert not np.allclose(before, back.score_all(user))
    back.save(tmp_path / "again")
    assert_same_scores(back, HybridModel.load(tmp_path / "again"), catalog)


def test_other_encoder_dims_are_refused(tmp_path, trained, catalog):
    trained.save(tmp_path / "art")
    other = {**catalog.embeddings.encoders, "text": {**catalog.embeddings.encoders["text"], "dim": 384}}
    with pytest.raises(IncompatibleEmbeddingsError, match="text encoder"):
        HybridModel.load(tmp_path / "art", expected_encoders=other)
    renamed = {**catalog.embeddings.encoders, "image": {**catalog.embeddings.encoders["image"], "model": "ViT-B-32"}}
    with pytest.raises(IncompatibleEmbeddingsError, match="ViT-B-32"):
        HybridModel.load(tmp_path / "art", expected_encoders=renamed)
    # New items encoded with another encoder are refused too.
    items, emb = new_items(catalog, "rock", 1, seed=1)
    wide = {**emb.vectors, "text": np.zeros((1, 384), np.float32)}
    with pytest.raises(IncompatibleEmbeddingsError, match="48-d text"):
        trained.add_items(items, ItemEmbeddings(emb.item_ids, wide, emb.masks, emb.encoders))


def test_unknown_format_is_refused(tmp_path, trained):
    trained.save(tmp_path / "art")
    meta = json.loads((tmp_path / "art" / META_FILE).read_text())
    meta["format_version"] = 999
    (tmp_path / "art" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="v999"):
        HybridModel.load(tmp_path / "art")
    with pytest.raises(ArtifactError, match="missing"):
        HybridModel.load(tmp_path / "empty")


def test_bentoml_model_store_round_trip(bentoml_home, trained, catalog):
    import bentoml

    tag = trained.save_to_model_store("mixrec-test", labels={"purpose": "test"})
    ref = bentoml.models.get(tag)
    assert ref.info.labels["purpose"] == "test"
    assert str(ref.path).startswith(str(bentoml_home))
    back = HybridModel.load_from_model_store(tag, expected_encoders=catalog.embeddings.encoders)
    assert_same_scores(trained, back, catalog)


def test_saving_over_a_loaded_model_leaves_its_readers_intact(tmp_path, trained):
    """A served model maps its arrays; saving into the same directory (a retrain, ``model.save`` of a
    loaded model) must not truncate those files under it: in place that is a SIGBUS, so this runs in
    a child process to report it as a failure rather than take pytest down."""
    import subprocess
    import sys

    trained.save(tmp_path / "art")
    script = f"""
import sys
sys.path[:0] = {[str(p) for p in (ROOT, ROOT / "tests")]!r}
import numpy as np
from fusion.hybrid import HybridModel
path = {str(tmp_path / "art")!r}
model = HybridModel.load(path)
before = np.array(model.export_state().fused)
HybridModel.load(path).save(path)
model.save(path)
after = np.array(model.export_state().fused)
assert np.array_equal(before, after)
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, (out.returncode, out.stderr[-2000:])
    assert not list((tmp_path / "art" / ARRAYS_DIR).glob(".*.tmp"))
