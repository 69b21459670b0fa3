"""Columnar item state (fusion/item_catalog.py), append-only writes and the memory-mapped artifact format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusion.artifacts import ARRAYS_DIR, META_FILE, ArtifactError
from fusion.hybrid import HybridModel
from fusion.item_catalog import IdColumn, ItemCatalog
from fusion.synthetic import make_catalog
from mixrec.catalog import Item
from services.candidates import SnapshotMeta
from test_fusion_artifacts import assert_same_scores
from test_fusion_hybrid import new_items, small_config

ODD = [Item(item_id="a", type="product", title="Tente légère ⛺", description="two\nlines", tags=["x", "y", "x"],
            category="outdoor", image="media/a.png"),
       Item(item_id="b", type="audio", title="b", tags=[], audio="media/b.wav"),
       Item(item_id="c", type="video", title="c", description="", tags=["y"], category=None, video="v.mp4",
            image="")]


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=120, n_users=60, seed=4)


@pytest.fixture
def model(catalog):
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=3))


def fields(it: Item) -> dict:
    return it.model_dump()


def test_catalog_rows_give_back_the_items():
    cat = ItemCatalog.of(ODD[:2])
    cat.append(ODD[2:])
    assert [fields(cat.item(r)) for r in range(3)] == [fields(it) for it in ODD]
    assert cat.index == {"a": 0, "b": 1, "c": 2}
    kept = cat.kept(np.array([True, False, True]))
    assert [fields(it) for it in kept] == [fields(ODD[0]), fields(ODD[2])]
    assert kept.index == {"a": 0, "c": 1} and len(cat) == 3  # the old catalogue is untouched
    back = ItemCatalog.from_arrays(cat.arrays(2), cat.vocabularies())
    assert [fields(it) for it in back] == [fields(it) for it in ODD[:2]]
    # a slice reads like a list's (callers that held ``list[Item]`` before keep working)
    assert [fields(it) for it in cat[1:]] == [fields(it) for it in ODD[1:]]
    assert [fields(it) for it in cat[::-2]] == [fields(ODD[2]), fields(ODD[0])]


def test_a_view_never_sees_later_appends():
    cat = ItemCatalog.of(ODD[:1])
    view = cat.view()
    cat.append(ODD[1:])
    assert len(view) == 1 and list(view.ids) == ["a"] and "b" not in view.index and view.index.get("c") is None
    assert dict(view.index) == {"a": 0} and list(view.types) == ["product"]
    full = cat.view()
    assert full.ids[:1] == view.ids and full.ids != view.ids and full.ids == ("a", "b", "c")
    assert ("a", "b", "c") == full.ids and IdColumn(["a", "b"], 2) == ["a", "b"]
    assert full.ids[1] == "b" and full.ids[-1] == "c" and full.ids[1:] == ("b", "c")
    with pytest.raises(IndexError):
        view.ids[1]


def test_type_labels_are_a_vocabulary_the_catalogue_grows():
    """Any label: codes in first-seen order, a longer label widens the type column without changing
    what earlier views see, the vocabulary survives save/load and a kept catalogue, and artifacts
    saved before labels were the catalogue's own read as the demo's three types."""
    cat = ItemCatalog.of([Item(item_id="a", type="book", title="a"), Item(item_id="b", type="zine", title="b")])
    before = cat.view()
    cat.append([Item(item_id="c", type="audiobook-long", title="c"), Item(item_id="d", type="book", title="d")])
    after = cat.view()
    assert after.type_names == ("book", "zine", "audiobook-long") and before.type_names == ("book", "zine")
    assert list(after.types) == ["book", "zine", "audiobook-long", "book"] and list(before.types) == ["book", "zine"]
    assert after.type_codes.tolist() == [0, 1, 2, 0] and cat.item(2).type == "audiobook-long"
    back = ItemCatalog.from_arrays(cat.arrays(), cat.vocabularies())
    assert [fields(it) for it in back] == [fields(it) for it in cat]
    assert cat.kept(np.array([True, False, True, False])).view().type_names == after.type_names
    legacy = {k: v for k, v in ItemCatalog.of(ODD).vocabularies().items() if k != "types"}
    arrays = dict(ItemCatalog.of(ODD).arrays(), item_type=np.array([0, 2, 1], np.int8))  # then: product, video, audio
    old = ItemCatalog.from_arrays(arrays, legacy)
    assert [it.type for it in old] == ["product", "audio", "video"]


def test_too_many_type_labels_is_an_input_error_and_changes_nothing():
    from mixrec.catalog import MAX_ITEM_TYPES
    from mixrec.errors import InputError

    cat = ItemCatalog.of([Item(item_id=f"i{t}", type=f"t{t}", title="x") for t in range(MAX_ITEM_TYPES - 1)])
    with pytest.raises(InputError, match=f"at most {MAX_ITEM_TYPES} item types"):
        cat.append([Item(item_id="x", type="new-a", title="x"), Item(item_id="y", type="new-b", title="y")])
    assert len(cat) == MAX_ITEM_TYPES - 1 and len(cat.type_names.names) == MAX_ITEM_TYPES - 1
    cat.append([Item(item_id="x", type="new-a", title="x")])
    assert cat.view().type_names[-1] == "new-a"


def test_adding_items_extends_the_snapshot_without_copying_it(model, catalog):
    items, emb = new_items(catalog, "jazz", 3, seed=1, prefix="one")
    model.add_items(items, emb)  # first append: the loaded arrays move into growable buffers
    before = model.snapshot
    items, emb = new_items(catalog, "rock", 2, seed=2, prefix="two")
    model.add_items(items, emb)
    after = model.snapshot
    # Nothing user-side is recomputed and the item arrays are the same buffers, extended.
    assert after.user_repr is before.user_repr and after.user_interest is before.user_interest
    for name in ("fused", "item_repr", "item_bias", "counts"):
        assert np.shares_memory(getattr(after, name), getattr(before, name)), name
    assert np.shares_memory(after.item_assign.clusters, before.item_assign.clusters)
    # The earlier snapshot still reads as it was published.
    assert len(before.item_ids) == len(before.fused) == len(after.item_ids) - 2
    assert "two0" not in before.item_index and after.item_index["two1"] == len(after.item_ids) - 1
    assert after.items[after.item_index["two0"]].title == "fresh rock 0"


def test_appended_snapshot_equals_a_full_rebuild(tmp_path, model, catalog):
    for seed in range(3):
        items, emb = new_items(catalog, ("jazz", "rock", "cooking")[seed], 4, seed=seed, prefix=f"s{seed}-")
        model.add_items(items, emb)
    rebuilt = HybridModel.from_state(model.export_state())  # the full publish path
    a, b = model.snapshot, rebuilt.snapshot
    for name in ("item_repr", "item_bias", "fused", "counts", "user_repr", "user_interest"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.item_ids == b.item_ids and list(a.item_types) == list(b.item_types)
    assert (a.seen != b.seen).nnz == 0 and a.seen.shape == b.seen.shape
    assert_same_scores(model, rebuilt, catalog)
    model.save(tmp_path / "art")
    assert_same_scores(model, HybridModel.load(tmp_path / "art"), catalog)
    # Training after appends still matches a reload of the same state.
    model.fit_partial(epochs=1)
    model.save(tmp_path / "again")
    assert_same_scores(model, HybridModel.load(tmp_path / "again"), catalog)


def test_removing_then_adding_matches_a_rebuild(model, catalog):
    model.remove_items([catalog.items[3].item_id, catalog.items[7].item_id])
    items, emb = new_items(catalog, "jazz", 2, seed=5, prefix="after")
    model.add_items(items, emb)
    assert catalog.items[3].item_id not in model.snapshot.item_index
    assert_same_scores(model, HybridModel.from_state(model.export_state()), catalog)


def test_loaded_arrays_are_memory_mapped(tmp_path, model):
    model.save(tmp_path / "art")
    meta = json.loads((tmp_path / "art" / META_FILE).read_text())
    assert "items" not in meta and "user_ids" not in meta  # nothing per item in the json
    back = HybridModel.load(tmp_path / "art")

    def mapped(a) -> bool:
        while a is not None:
            if isinstance(a, np.memmap):
                return True
            a = a.base
        return False

    snap = back.snapshot
    assert mapped(snap.fused) and all(mapped(v) for v in snap.per_modality.values())
    assert mapped(back.items.type_codes.view()) and mapped(back.items.strings["title"].blob.view())


def test_format_1_artifacts_ask_for_a_retrain(tmp_path, model):
    old = tmp_path / "old"
    old.mkdir()
    (old / META_FILE).write_text(json.dumps({"format_version": 1, "kind": "mixrec-hybrid", "items": []}))
    np.savez(old / "arrays.npz", fused=np.zeros((1, 2), np.float32))
    with pytest.raises(ArtifactError, match="v1 is not supported.*retrain"):
        HybridModel.load(old)
    model.save(tmp_path / "new")
    (tmp_path / "new" / ARRAYS_DIR / "item_type.npy").unlink()
    with pytest.raises(KeyError):
        HybridModel.load(tmp_path / "new")


def test_snapshot_meta_extends_like_a_full_build(model, catalog):
    first = SnapshotMeta.build(model.snapshot)
    items, emb = new_items(catalog, "jazz", 3, seed=3, prefix="m")
    items[0] = items[0].model_copy(update={"tags": ["jazz", "brand-new-tag"], "type": "audio"})
    items[1] = items[1].model_copy(update={"type": "podcast"})  # a label the snapshot's meta has no rows list for
    model.add_items(items, emb)
    grown = SnapshotMeta.build(model.snapshot, previous=first)
    full = SnapshotMeta.build(model.snapshot)
    assert grown.ids == full.ids and grown.type_names == full.type_names == (*first.type_names, "podcast")
    assert len(grown.rows_by_type) == len(full.rows_by_type) == len(first.rows_by_type) + 1
    for a, b in zip(grown.rows_by_type, full.rows_by_type):
        np.testing.assert_array_equal(a, b)
    assert grown.tag_rows.keys() == full.tag_rows.keys()
    for t in full.tag_rows:
        np.testing.assert_array_equal(grown.tag_rows[t], full.tag_rows[t])
    assert grown.items[len(grown.ids) - 3].tags == ["jazz", "brand-new-tag"]


def _by_id(model, who) -> dict[str, float]:
    """Scores of the live items, keyed by id (rows differ between a tombstoned and a compacted model)."""
    scores, snap = model.score_all(who), model.snapshot
    return {iid: float(scores[r]) for iid, r in snap.item_index.items()}


def test_removing_items_nobody_liked_tombstones_them_and_reads_like_a_compacted_model(model, catalog):
    """Deleting items nobody liked marks their rows dead (no catalogue copy, no representation or
    user-side work); every reader skips them, and the live items score exactly as after compaction."""
    from fusion.query import Query
    from fusion.snapshot import UnknownItemError

    items, emb = new_items(catalog, "jazz", 5, seed=6, prefix="unliked")
    model.add_items(items, emb)
    unliked = ["unliked0", "unliked2", "unliked4"]
    before, cat = model.snapshot, model.items
    model.remove_items(unliked)
    after = model.snapshot
    assert model.items is cat and after.item_repr is before.item_repr and after.user_repr is before.user_repr
    assert after.user_interest is before.user_interest and after.seen is before.seen
    assert sorted(after.item_ids[r] for r in np.flatnonzero(~after.alive)) == sorted(unliked)
    assert not set(unliked) & set(after.item_index) and len(after.item_index) == len(after.item_ids) - 3
    assert before.item_index.get("unliked0") is not None  # a snapshot published before still has it
    with pytest.raises(UnknownItemError):
        model.similar_items("unliked2")
    user = catalog.interactions[0].user_id
    query = Query(text_vec=emb.vectors["text"][0], liked_item_ids=(catalog.items[2].item_id,))  # unliked0's own text
    read = {"user": [r.item_id for r in model.recommend(user, 20)],
            "query": [r.item_id for r in model.recommend_for_query(query, 20)],
            "similar": [r.item_id for r in model.similar_items("unliked1", 20)],
            "user scores": _by_id(model, user), "query scores": _by_id(model, query)}
    for name in ("user", "query", "similar"):
        assert not set(unliked) & set(read[name]), name
    model.export_state()  # compacts: the dead rows go for good
    compacted = model.snapshot
    assert compacted.alive is None and len(compacted.item_ids) == len(after.item_ids) - 3
    assert [r.item_id for r in model.recommend(user, 20)] == read["user"]
    assert [r.item_id for r in model.recommend_for_query(query, 20)] == read["query"]
    assert [r.item_id for r in model.similar_items("unliked1", 20)] == read["similar"]
    for name, who in (("user scores", user), ("query scores", query)):
        got = _by_id(model, who)
        assert got.keys() == read[name].keys()
        np.testing.assert_allclose([got[i] for i in got], [read[name][i] for i in got], rtol=1e-6, atol=1e-9,
                                   err_msg=name)
    # A deleted id can come back as a new item; removing an item someone liked is a tombstone too.
    again, again_emb = new_items(catalog, "jazz", 1, seed=6, prefix="unliked")
    model.add_items(again, again_emb)
    assert model.snapshot.item_index["unliked0"] == len(model.snapshot.item_ids) - 1
    model.remove_items([catalog.interactions[0].item_id])
    assert (~model.snapshot.alive).sum() == 1 and catalog.interactions[0].item_id not in model.snapshot.item_index
    assert_same_scores(model, HybridModel.from_state(model.export_state()), catalog)


def test_deletes_compact_once_dead_rows_pass_their_share(catalog):
    from fusion.hybrid import MAX_DEAD_SHARE

    model = HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=2))
    items, emb = new_items(catalog, "jazz", 30, seed=9, prefix="gone")
    model.add_items(items, emb)
    n = len(model.items)
    per_batch = 3
    deleted = []
    for b in range(10):
        batch = [it.item_id for it in items[b * per_batch:(b + 1) * per_batch]]
        model.remove_items(batch)
        deleted += batch
        dead = model.items.n_dead
        assert dead <= MAX_DEAD_SHARE * len(model.items)
        assert len(model.snapshot.item_index) == n - len(deleted)
        assert not set(deleted) & set(model.snapshot.item_index)
    assert len(model.items) < n  # at least one compaction happened along the way
    model.fit_partial(epochs=1)  # training compacts too
    assert model.items.n_dead == 0 and len(model.snapshot.item_ids) == n - len(deleted)


def test_a_load_reuses_the_saved_feature_rows(tmp_path, model, catalog):
    model.fit_partial(epochs=1)
    model.save(tmp_path / "art")
    back = HybridModel.load(tmp_path / "art")
    assert back._item_rows is not None and (back._item_rows.features != model._item_rows.features).nnz == 0
    assert isinstance(back.snapshot.item_repr.base, np.memmap) or isinstance(back.snapshot.item_repr, np.memmap)
    np.testing.assert_array_equal(back._item_rows.tokens.clusters, model._item_rows.tokens.clusters)
    assert_same_scores(model, back, catalog)
    # A loaded model keeps writing on top of the mapped rows.
    items, emb = new_items(catalog, "jazz", 2, seed=8, prefix="late")
    back.add_items(items, emb)
    model.add_items(items, emb)
    assert_same_scores(model, back, catalog)


def test_growable_views_are_prefixes_that_later_appends_never_change():
    from fusion.growable import Growable

    g = Growable(np.arange(3, dtype=np.int64))
    first = g.view()
    with pytest.raises(ValueError):
        first[0] = 9  # read-only
    for k in range(10):
        g.append(np.full(5, k))
    assert list(first) == [0, 1, 2] and len(g.view()) == 53 and list(g.view()[:3]) == [0, 1, 2]
    stale = g.view()[:10]
    g._view = stale  # a view cached by a reader that raced an append: never handed out
    assert len(g.view()) == 53


def test_a_state_exported_before_a_delete_still_saves(tmp_path, catalog):
    """Checkpoints export under the lock and write after it: a tombstone in between must not stop
    the write (the exported rows were all live), and the saved rows are the exported ones."""
    from fusion import artifacts

    model = HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config(epochs=2))
    items, emb = new_items(catalog, "jazz", 2, seed=11, prefix="late-gone")
    model.add_items(items, emb)
    st = model.export_state()
    model.remove_items(["late-gone0"])  # tombstoned after the export
    assert model.items.n_dead == 1
    artifacts.save_state(st, tmp_path / "ckpt")
    back = HybridModel.load(tmp_path / "ckpt")
    assert "late-gone0" in back.snapshot.item_index and len(back.snapshot.item_ids) == len(st.items)
