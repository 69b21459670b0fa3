"""HybridModel behaviour on a synthetic catalogue with known tastes (fast: tiny LightFM)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fusion.hybrid import HybridModel, UnknownItemError, UnknownUserError
from fusion.query import Query
from fusion.synthetic import CATEGORIES, make_catalog
from mixrec.catalog import Interaction, Item
from mixrec.config import MixrecConfig, load_config
from mixrec.embeddings import ItemEmbeddings


def small_config(**model) -> MixrecConfig:
    cfg = load_config("configs/offline.yaml", environ={})
    return cfg.model_copy(update={
        "fusion": cfg.fusion.model_copy(update={"shared_dim": 16, "codebook_size": 12}),
        "model": cfg.model.model_copy(update={"no_components": 16, "epochs": 10, "num_threads": 1, **model})})


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(n_items=240, n_users=150, seed=0)


@pytest.fixture(scope="module")
def trained(catalog):
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config())


@pytest.fixture
def model(catalog):
    """A fresh model for tests that change it."""
    return HybridModel.train(catalog.items, catalog.embeddings, catalog.interactions, small_config())


def category_of(model: HybridModel, item_id: str) -> str:
    return model.items[model.item_index()[item_id]].category


def single_taste_users(catalog, category: str) -> list[str]:
    return [u for u, t in catalog.user_tastes.items() if t == (category,)]


def new_items(catalog, category: str, n: int, seed: int, prefix: str = "new") -> tuple[list[Item], ItemEmbeddings]:
    """Items of ``category`` nobody has interacted with, encoded like the catalogue's."""
    rng = np.random.default_rng(seed)
    c = CATEGORIES.index(category)
    z = catalog.centroids[c] + 0.6 * rng.standard_normal((n, catalog.centroids.shape[1]))
    items = [Item(item_id=f"{prefix}{i}", type="product", title=f"fresh {category} {i}", tags=[category],
                  category=category) for i in range(n)]
    vectors = {m: catalog.encode(m, z, rng) for m in ("text", "image")}
    vectors["audio"] = np.zeros((n, catalog.embeddings.vectors["audio"].shape[1]), np.float32)
    masks = {"text": np.ones(n, bool), "image": np.ones(n, bool), "audio": np.zeros(n, bool)}
    return items, ItemEmbeddings([it.item_id for it in items], vectors, masks, catalog.embeddings.encoders)


def test_known_users_get_items_of_their_tastes(trained, catalog):
    hits = []
    for user in list(catalog.user_tastes)[:30]:
        recs = trained.recommend(user, k=10)
        assert len(recs) == 10
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
        seen = set(trained.snapshot.item_ids[j] for j in trained.snapshot.seen[trained.snapshot.user_index[user]].indices)
        assert not seen & {r.item_id for r in recs}
        hits += [category_of(trained, r.item_id) in catalog.user_tastes[user] for r in recs]
    assert np.mean(hits) > 0.8


def test_explanations_reference_real_clusters_and_liked_items(trained, catalog):
    user = list(catalog.user_tastes)[0]
    snap = trained.snapshot
    liked = {snap.item_ids[j] for j in snap.seen[snap.user_index[user]].indices}
    for rec in trained.recommend(user, k=5):
        e = rec.explanation
        assert e["interests"], e
        for it in e["interests"]:
            assert 0 <= it["cluster"] < trained.codebook.size
            assert it["label"] == trained.codebook.labels[it["cluster"]]
        assert e["because_you_liked"] and {b["item_id"] for b in e["because_you_liked"]} <= liked
        j = trained.item_index()[rec.item_id]
        assert e["modality"] in [m for m in snap.masks if snap.masks[m][j]]
        assert abs(sum(e["modality_shares"].values()) - 1.0) < 1e-3
    # Labels are built from the items' own tags.
    assert all(any(c in label for c in CATEGORIES) for label in trained.codebook.labels)


def test_cold_items_are_scored_from_content_at_once(model, catalog):
    items, emb = new_items(catalog, "jazz", 5, seed=3)
    model.add_items(items, emb)
    ids = model.item_ids()
    new_rows = [ids.index(it.item_id) for it in items]
    assert not any(model.item_has_identity[r] for r in new_rows)  # content only, no retraining
    fans, others = single_taste_users(catalog, "jazz"), single_taste_users(catalog, "kitchen")
    assert fans and others

    def mean_percentile(users):
        out = []
        for u in users:
            s = model.score_all(u)
            ranks = (-s).argsort().argsort()
            out.append(np.mean(ranks[new_rows]) / len(s))
        return float(np.mean(out))

    fans_pct, others_pct = mean_percentile(fans), mean_percentile(others)
    assert fans_pct < 0.2, fans_pct  # in the top fifth of the whole catalogue for jazz fans
    assert others_pct > fans_pct + 0.2, (fans_pct, others_pct)
    recs = model.recommend(fans[0], k=20)
    assert {r.item_id for r in recs} & {it.item_id for it in items}
    # A description of exactly one new item finds it, though nobody has interacted with it.
    described = model.recommend_for_query(Query(text_vec=emb.vectors["text"][2]), k=3)
    assert "new2" in {r.item_id for r in described}


def test_fit_partial_learns_from_new_interactions(model, catalog):
    user = single_taste_users(catalog, "rock")[0]
    targets = [it.item_id for it in catalog.items if it.category == "travel"][:8]
    before = model.score_all(user).copy()
    model.add_interactions([Interaction(user, t, "like", 1.0) for t in targets])
    model.fit_partial(epochs=3)
    after = model.score_all(user)
    assert not np.allclose(before, after)
    travel = [model.item_index()[it.item_id] for it in catalog.items if it.category == "travel" and it.item_id not in targets]
    assert after[travel].mean() - after.mean() > before[travel].mean() - before.mean()
    assert {r.item_id for r in model.recommend(user, k=50)}.isdisjoint(targets)  # now seen


def test_new_user_and_new_item_get_identity_after_training(model, catalog):
    items, emb = new_items(catalog, "travel", 2, seed=4, prefix="trip")
    model.add_items(items, emb)
    model.add_interactions([Interaction("newbie", "trip0", "like", 1.0), Interaction("newbie", catalog.items[0].item_id)])
    assert "newbie" in model.known_users()
    model.fit_partial(epochs=1)
    assert model.item_has_identity[model.item_index()["trip0"]]
    assert not model.item_has_identity[model.item_index()["trip1"]]
    assert len(model.recommend("newbie", k=5)) == 5


def mass_on(model: HybridModel, dist, category: str) -> float:
    return sum(p for c, label, p in dist if label.split(" / ")[0] == category)


def test_interests_shift_towards_feedback(model, catalog):
    user = single_taste_users(catalog, "kitchen")[0]
    before = model.user_interests(user)
    assert abs(sum(p for _, _, p in before) - 1.0) < 1e-4
    assert mass_on(model, before, "kitchen") > 0.5
    running = [it.item_id for it in catalog.items if it.category == "running"][:15]
    model.add_interactions([Interaction(user, i, "like", 1.0) for i in running])
    after = model.user_interests(user)
    assert mass_on(model, after, "running") > mass_on(model, before, "running") + 0.2
    assert mass_on(model, after, "kitchen") < mass_on(model, before, "kitchen")


def test_query_users_get_relevant_items(trained, catalog):
    rng = np.random.default_rng(7)
    for category in ("rock", "cooking"):
        z = catalog.centroids[CATEGORIES.index(category)][None, :]
        text_q = Query(text_vec=catalog.encode("text", z, rng)[0])
        recs = trained.recommend_for_query(text_q, k=10)
        assert np.mean([category_of(trained, r.item_id) == category for r in recs]) >= 0.7
        audio_q = Query(audio_vec=catalog.encode("audio", z, rng)[0])
        assert np.mean([category_of(trained, r.item_id) == category
                        for r in trained.recommend_for_query(audio_q, k=10)]) >= 0.7
        liked = tuple(it.item_id for it in catalog.items if it.category == category)[:3]
        recs = trained.recommend_for_query(Query(liked_item_ids=liked), k=10)
        assert not {r.item_id for r in recs} & set(liked)
        assert np.mean([category_of(trained, r.item_id) == category for r in recs]) >= 0.7
        e = recs[0].explanation
        assert {b["item_id"] for b in e["because_you_liked"]} <= set(liked)
        # The components are the blend's weighted terms (issue 16): those it used, adding up to the score.
        assert {"neighbours", "content"} <= set(e["components"])
        assert abs(sum(e["components"].values()) - recs[0].score) < 1e-3
        interests = trained.user_interests(Query(liked_item_ids=liked), top=2)
        assert interests[0][1].split(" / ")[0] == category


def test_query_errors(trained):
    with pytest.raises(ValueError, match="empty query"):
        trained.score_all(Query())
    with pytest.raises(UnknownItemError):
        trained.score_all(Query(liked_item_ids=("nope",)))
    with pytest.raises(UnknownUserError):
        trained.recommend("nobody")


def test_similar_items_and_type_filter(trained, catalog):
    item = catalog.items[0]
    sims = trained.similar_items(item.item_id, k=10)
    assert item.item_id not in {r.item_id for r in sims}
    assert np.mean([category_of(trained, r.item_id) == item.category for r in sims]) >= 0.8
    audio_only = trained.similar_items(item.item_id, k=10, types=["audio"])
    assert audio_only and all(r.type == "audio" for r in audio_only)


def test_candidates_restrict_results(trained, catalog):
    user = list(catalog.user_tastes)[0]
    cand = np.arange(0, 40)
    recs = trained.recommend(user, k=10, candidates=cand)
    assert all(trained.item_index()[r.item_id] < 40 for r in recs)


def test_remove_items_and_forget_user(model, catalog):
    gone = [catalog.items[0].item_id, catalog.items[1].item_id]
    n = len(model.item_ids())
    model.remove_items(gone)
    assert len(model.item_index()) == n - 2 and not set(gone) & set(model.item_index())
    user = list(catalog.user_tastes)[1]
    col = model.user_fidx.col(f"u:{user}")
    model.forget_user(user)
    assert user not in model.known_users()
    assert not model.lfm.user_embeddings[col].any()
    with pytest.raises(UnknownUserError):
        model.recommend(user)


def test_scoring_while_fit_partial_runs(model, catalog):
    user = list(catalog.user_tastes)[0]
    n = len(model.item_ids())
    errors = []

    def score_loop(stop):
        while not stop.is_set():
            try:
                assert model.score_all(user).shape == (n,)
                model.recommend_for_query(Query(liked_item_ids=(catalog.items[3].item_id,)), k=5)
            except Exception as e:  # noqa: BLE001 - surfaced below
                errors.append(e)
                return

    stop = threading.Event()
    t = threading.Thread(target=score_loop, args=(stop,))
    t.start()
    for _ in range(3):
        model.fit_partial(epochs=1)
    stop.set()
    t.join()
    assert not errors


USER_FIELDS = ("user_repr", "user_bias", "user_feature_emb", "user_feature_bias", "user_cluster_cols", "counts",
               "user_interest", "user_trained")


def assert_same_user_side(a, b):
    assert a.user_ids == b.user_ids and a.user_index == b.user_index
    for name in USER_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and np.array_equal(x, y), name
    assert a.seen.shape == b.seen.shape and (a.seen != b.seen).nnz == 0


def test_recorded_feedback_patches_the_users_it_touched_and_equals_a_full_refresh(model, catalog, monkeypatch):
    """Recording feedback recomputes only the touched users' rows (no pass over every user and
    event), and the published user side equals the one a full refresh builds, batch after batch,
    across new users, dislikes that drop a positive, events that change nothing, new user features,
    and item writes in between."""
    model.recency_half_life_days = 2.0
    users = list(catalog.user_tastes)
    ids = [it.item_id for it in catalog.items]
    rng = np.random.default_rng(3)
    liked_by_0 = next(iter(model.positives[users[0]]))
    batches = [
        [Interaction(users[0], ids[5], "like", 1.0, 1e9), Interaction(users[1], ids[7], "like", 2.0, 1e9 + 5)],
        [Interaction("new-a", ids[9], "like", 1.0, 1e9 + 9), Interaction("new-b", ids[9], "like", 1.0, 1e9 + 9)],
        [Interaction(users[0], liked_by_0, "dislike", 5.0, 1e9 + 20)],  # net negative: the positive goes
        [Interaction(users[2], ids[11], "view", 0.0, 1e9 + 30)],  # nothing to learn
        [Interaction(users[int(u)], ids[int(i)], "like", 1.0, 1e9 + 40 + j)
         for j, (u, i) in enumerate(zip(rng.integers(0, len(users), 20), rng.integers(0, len(ids), 20)))],
        [Interaction("new-a", ids[3], "like", 1.0, 1e9 + 400 * 86400)],  # a year later: older pairs decay
    ]

    def no_full_refresh(*a, **k):
        raise AssertionError("a feedback write rebuilt every user")

    for half, writes in enumerate((batches[:3], batches[3:])):
        with monkeypatch.context() as m:
            m.setattr(model, "_fit", no_full_refresh)
            for batch in writes:
                model.add_interactions(batch)
            if half:  # item writes in between keep the user side
                items, emb = new_items(catalog, "travel", 2, seed=9, prefix="mid")
                model.add_items(items, emb)
                model.remove_items(["mid1"])
                model.add_interactions([Interaction("new-c", "mid0", "like", 1.0, 1e9 + 50)])
        patched = model.snapshot
        assert "new-a" in patched.user_index and liked_by_0 not in model.positives[users[0]]
        recs = {u: [r.item_id for r in model.recommend(u, k=10)] for u in ("new-a", users[0], users[1])}
        model._refresh()
        assert_same_user_side(patched, model.snapshot)
        assert recs == {u: [r.item_id for r in model.recommend(u, k=10)] for u in recs}
    assert "new-c" in model.snapshot.user_index and "mid1" not in model.item_index()


def test_removing_liked_items_tombstones_them_and_recomputes_only_their_fans(model, catalog, monkeypatch):
    """A delete of items someone liked is a tombstone too (no item copy): the users who liked one
    lose it and get their rows recomputed; everyone else's rows stay; a full refresh agrees."""
    users = list(catalog.user_tastes)
    liked = [next(iter(model.positives[u])) for u in users[:3]]
    fans = {u for u, row in model.positives.items() if set(liked) & row.keys()}
    before = model.snapshot
    with monkeypatch.context() as m:
        m.setattr(model, "_fit", lambda *a, **k: pytest.fail("a delete rebuilt every user"))
        model.remove_items(liked)
    patched = model.snapshot
    assert patched.item_repr is before.item_repr and (~patched.alive).sum() == len(liked)
    assert not set(liked) & set(patched.item_index) and len(patched.item_index) == len(before.item_index) - len(liked)
    assert all(not set(liked) & model.positives[u].keys() for u in fans)
    dead = np.flatnonzero(~patched.alive)
    assert patched.seen[:, dead].nnz == 0 and not patched.counts[dead].any()
    assert not {r.item_id for u in fans for r in model.recommend(u, k=30)} & set(liked)
    others = [before.user_index[u] for u in users if u not in fans]
    assert np.array_equal(patched.user_repr[others], before.user_repr[others])
    model._refresh()
    assert_same_user_side(patched, model.snapshot)
    model.fit_partial(epochs=1)  # training compacts: the dead rows go for good
    assert model.snapshot.alive is None and len(model.snapshot.item_ids) == len(before.item_ids) - len(liked)


def test_a_feedback_batch_naming_an_unknown_item_changes_nothing(model, catalog):
    user = list(catalog.user_tastes)[0]
    before = {u: dict(r) for u, r in model.positives.items()}
    snap = model.snapshot
    with pytest.raises(UnknownItemError):
        model.add_interactions([Interaction(user, catalog.items[7].item_id, "like", 1.0),
                                Interaction("someone-new", catalog.items[8].item_id, "like", 1.0),
                                Interaction(user, "no-such-item", "like", 1.0)])
    assert model.positives == before and "someone-new" not in model.user_ids
    assert model.snapshot is snap
