"""CandidateIndex: exact below the threshold, faiss HNSW above, filters, incremental add/remove, recall."""

from __future__ import annotations

import numpy as np
import pytest

from mixrec.ann import CandidateIndex

N, DIM = 20_000, 64


def clustered(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around 50 centres (like item embeddings), plus those centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim))
    x = centres[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


def brute_force(vectors: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    scores = vectors @ q
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    top = np.argpartition(-scores, k - 1)[:k] if scores.size > k else np.arange(scores.size)
    return top[np.argsort(-scores[top], kind="stable")]


@pytest.fixture(scope="module")
def data():
    return clustered(N, DIM)


@pytest.fixture(scope="module")
def hnsw(data):
    index = CandidateIndex(DIM, ann_threshold=10_000)
    index.add(np.arange(N), data[0])
    return index


def recall_at_10(index, vectors, queries, allowed=None) -> float:
    hits = [len(set(index.search(q, 10, allowed)[0].tolist()) & set(brute_force(vectors, q, 10, allowed).tolist()))
            for q in queries]
    return float(np.mean(hits)) / 10


def test_exact_below_threshold_matches_brute_force():
    vectors, _ = clustered(500, 16, seed=1)
    index = CandidateIndex(16, ann_threshold=1_000)
    index.add(np.arange(500) * 3, vectors)  # ids need not be dense
    assert not index.uses_ann and len(index) == 500
    q = np.random.default_rng(2).normal(size=16)
    ids, scores = index.search(q, 10)
    expected = brute_force(vectors, q.astype(np.float32), 10)
    assert ids.tolist() == (expected * 3).tolist()
    assert np.allclose(scores, vectors[expected] @ q.astype(np.float32), atol=1e-5)
    assert np.all(np.diff(scores) <= 0)


def test_recall_at_10_against_exact_on_20k(hnsw, data, record_property):
    vectors, centres = data
    assert hnsw.uses_ann and hnsw.describe()["mode"] == "hnsw"
    rng = np.random.default_rng(7)
    # "User-like" queries sit near the item clusters; isotropic ones are the hard case for inner-product HNSW.
    user_like = (centres[rng.integers(0, 50, 200)] + 0.8 * rng.normal(size=(200, DIM))).astype(np.float32)
    isotropic = rng.normal(size=(200, DIM)).astype(np.float32)
    r_user, r_iso = recall_at_10(hnsw, vectors, user_like), recall_at_10(hnsw, vectors, isotropic)
    allowed = rng.random(N) < 0.3
    r_filtered = recall_at_10(hnsw, vectors, user_like[:100], allowed)
    record_property("recall_at_10", {"user_like": r_user, "isotropic": r_iso, "filtered_30pct": r_filtered})
    print(f"\nHNSW recall@10 vs exact on {N}x{DIM}: user-like {r_user:.3f}, isotropic {r_iso:.3f}, "
          f"30% filter {r_filtered:.3f}")
    assert r_user >= 0.95 and r_filtered >= 0.95 and r_iso >= 0.7


def test_filtered_search_only_returns_allowed_ids(hnsw, data):
    vectors, centres = data
    rng = np.random.default_rng(3)
    q = centres[0].astype(np.float32)
    allowed = rng.random(N) < 0.5
    ids, _ = hnsw.search(q, 50, allowed)
    assert len(ids) == 50 and allowed[ids].all()
    tight = np.zeros(N, dtype=bool)
    tight[rng.choice(N, 40, replace=False)] = True  # far below exact_below: answered exactly
    ids, _ = hnsw.search(q, 10, tight)
    assert ids.tolist() == brute_force(vectors, q, 10, tight).tolist()
    ids, _ = hnsw.search(q, 100, tight)
    assert sorted(ids.tolist()) == np.flatnonzero(tight).tolist()  # fewer pass than k: all of them
    short = np.zeros(5, dtype=bool)  # a mask shorter than the id range: ids beyond it are not allowed
    short[[1, 3]] = True
    assert sorted(hnsw.search(q, 10, short)[0].tolist()) == [1, 3]
    assert hnsw.search(q, 10, np.zeros(N, dtype=bool))[0].size == 0


def test_incremental_add_remove_and_mode_switches():
    vectors, centres = clustered(700, 32, seed=4)
    index = CandidateIndex(32, ann_threshold=600, exact_below=10)
    index.add(np.arange(500), vectors[:500])
    assert not index.uses_ann
    index.add(np.arange(500, 700), vectors[500:])  # crosses the threshold: HNSW is built
    assert index.uses_ann and len(index) == 700
    q = centres[1].astype(np.float32)
    top = index.search(q, 5)[0]
    index.remove(top[:2].tolist() + [99_999])  # unknown ids are ignored
    after = index.search(q, 5)[0]
    assert not set(top[:2].tolist()) & set(after.tolist()) and len(after) == 5
    index.add([int(top[2])], [q / np.linalg.norm(q)])  # new vector for an existing id: now the best match
    assert index.search(q, 1)[0].tolist() == [int(top[2])] and len(index) == 698
    index.add([5000], [q / np.linalg.norm(q) * 2])  # incremental add into the live HNSW
    assert index.search(q, 1)[0].tolist() == [5000]
    index.remove(np.arange(0, 200))  # compaction and a drop back under the threshold
    assert not index.uses_ann and index.describe()["tombstones"] <= 0.2 * 699
    alive = sorted(set(range(200, 700)) - set(top[:2].tolist()) | {5000})
    assert len(index) == len(alive)
    ids, _ = index.search(q, 1000)
    assert sorted(ids.tolist()) == alive


def test_bad_input():
    index = CandidateIndex(4)
    with pytest.raises(ValueError, match="shape"):
        index.add([1, 2], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="unique"):
        index.add([1, 1], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        index.add([1], np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match=">= 0"):
        index.add([-1], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="4 values"):
        index.search(np.zeros(3), 1)
    assert index.search(np.zeros(4), 3)[0].size == 0


def test_short_hnsw_answers_widen_instead_of_silently_scanning_everything(monkeypatch):
    """Regression (issue 12): when the graph walk came back with fewer than k results, main ran an exact
    scan of the whole index without telling anyone (~100x a normal search at 1M items: the p99). A
    filter letting ~12% through starves the first walk; the wider beams must find k good results
    without any exact scan, and the counters must say what happened."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 16))
    x = centres[rng.integers(0, 50, 20_000)] + 0.5 * rng.normal(size=(20_000, 16))
    vectors = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    index = CandidateIndex(16, ann_threshold=1, hnsw_m=16, ef_construction=80, ef_search=16, ef_max=4096)
    index.add(np.arange(20_000), vectors)

    def no_exact(*a, **kw):
        raise AssertionError("the exact scan ran")

    monkeypatch.setattr(index, "_search_exact", no_exact)
    hits = []
    for t in range(20):
        q = (centres[t % 50] + 0.8 * rng.normal(size=16)).astype(np.float32)
        allowed = rng.random(20_000) < 0.12  # ~2400 items, above exact_below
        ids, _ = index.search(q, 100, allowed)
        assert len(ids) == 100 and allowed[ids].all()
        hits.append(len(set(ids.tolist()) & set(brute_force(vectors, q, 100, allowed).tolist())) / 100)
    c = index.counters.as_dict()
    assert c["searches"] == 20 and c["widenings"] >= 10 and c["exact_fallbacks"] == 0
    assert np.mean(hits) >= 0.9


def test_still_short_at_ef_max_falls_back_exactly_and_is_counted():
    vectors, centres = clustered(5000, 16, seed=2)
    index = CandidateIndex(16, ann_threshold=1, ef_search=16, ef_max=16, exact_below=10)
    index.add(np.arange(5000), vectors)
    far = np.zeros(5000, bool)
    far[np.argsort(vectors @ centres[0])[:300]] = True  # the items least like the query
    ids, _ = index.search(centres[0], 250, far)  # k above ef_max: the walk cannot return k
    assert ids.tolist() == brute_force(vectors, centres[0].astype(np.float32), 250, far).tolist()
    c = index.counters.as_dict()
    assert c["exact_fallbacks"] == 1 and c["widenings"] == 0


def _island(index, size: int, cut_everything_else: bool) -> list[int]:
    """Cut the level-0 graph so the walk, started at the entry point (upper levels dropped), can reach
    only ``size`` nodes; the other nodes keep their links unless ``cut_everything_else``."""
    import faiss

    hnsw = faiss.downcast_index(index.faiss_index()).hnsw
    hnsw.max_level = 0  # the walk starts at the entry point, on level 0
    offsets = faiss.vector_to_array(hnsw.offsets)
    links = faiss.vector_to_array(hnsw.neighbors).astype(np.int32)
    if cut_everything_else:
        links[:] = -1
    island = [hnsw.entry_point] + [i for i in range(size) if i != hnsw.entry_point][:size - 1]
    width = hnsw.nb_neighbors(0)
    for node in island:  # level 0 (the first slots of a node's range): links to the island only
        others = [o for o in island if o != node][:width]
        links[offsets[node]:offsets[node] + width] = -1
        links[offsets[node]:offsets[node] + len(others)] = others
    faiss.copy_array_to_vector(links, hnsw.neighbors)
    return island


def test_an_unfiltered_dead_end_is_walked_again_from_the_pivots_not_scanned(monkeypatch):
    """Regression (issue 12, 1M items): ~7% of unfiltered per-type walks came back short at every
    beam: the inner-product graph's directed edges left the walk in a small island it had exhausted,
    and each such search fell back to an exact scan of the type (~6 ms against ~0.1 ms). Here the
    walk starts in a 10-node island of an otherwise intact graph: the answer must come complete from
    a second walk started at the pivots nearest the query, with no widening and no exact scan."""
    vectors, centres = clustered(3000, 16, seed=3)
    index = CandidateIndex(16, ann_threshold=1, hnsw_m=4, ef_search=32, ef_max=2048, exact_below=10)
    index.add(np.arange(3000), vectors)
    island = _island(index, 10, cut_everything_else=False)
    monkeypatch.setattr(index, "_search_exact", lambda *a, **k: pytest.fail("the exact scan ran"))
    q = centres[0].astype(np.float32)
    ids, scores = index.search(q, 20)  # 20 > the 10 nodes the first walk can reach
    assert len(set(ids.tolist())) == 20 and not set(ids.tolist()) <= set(island)
    assert np.all(np.diff(scores) <= 1e-6)  # best first
    assert len(set(ids.tolist()) & set(brute_force(vectors, q, 20).tolist())) >= 16
    c = index.counters.as_dict()
    assert c["searches"] == 1 and c["reentries"] == 1 and c["widenings"] == 0 and c["exact_fallbacks"] == 0


def test_a_dead_end_the_pivots_cannot_complete_goes_exact_without_widening():
    vectors, centres = clustered(3000, 16, seed=3)
    index = CandidateIndex(16, ann_threshold=1, hnsw_m=4, ef_search=32, ef_max=2048, exact_below=10)
    index.add(np.arange(3000), vectors)
    _island(index, 10, cut_everything_else=True)  # no node but the island's has a link
    ids, _ = index.search(centres[0], 50)  # > the island plus the re-entry points, each a dead end
    assert ids.tolist() == brute_force(vectors, centres[0].astype(np.float32), 50).tolist()
    c = index.counters.as_dict()
    assert c["searches"] == 1 and c["reentries"] == 1 and c["widenings"] == 0 and c["exact_fallbacks"] == 1


def test_one_copy_of_the_vectors_and_array_id_maps():
    """The faiss index holds the vectors; the wrapper keeps only small id arrays (main kept a second
    float copy and a dict per id: ~0.48 GB at 1M items)."""
    vectors, centres = clustered(30_000, 32, seed=5)
    index = CandidateIndex(32, ann_threshold=10_000)
    index.add(np.arange(30_000) + 7, vectors)
    assert index.uses_ann
    held = [v for v in vars(index).values() if isinstance(v, (np.ndarray, dict))]
    assert all(isinstance(v, np.ndarray) for v in held)
    assert sum(v.nbytes for v in held) < vectors.nbytes / 4
    assert np.array_equal(index.vectors(), vectors) and np.array_equal(index.ids(), np.arange(30_000) + 7)
    q = centres[3].astype(np.float32)
    assert index.search_exact(q, 10)[0].tolist() == (brute_force(vectors, q, 10) + 7).tolist()
