"""Filters, type mix (quotas / proportions / interleave), shortfall and MMR diversity in mixrec.ranking."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mixrec.ranking import ItemTable, parse_mix, rank

TYPES = ["product"] * 20 + ["video"] * 12 + ["audio"] * 4  # audio is scarce on purpose
KNOWN = ("product", "video", "audio")


@pytest.fixture
def table() -> ItemTable:
    tags = [["red"] if i % 3 == 0 else ["blue", "big"] if i % 3 == 1 else [] for i in range(len(TYPES))]
    return ItemTable([f"i{i}" for i in range(len(TYPES))], TYPES, tags)


@pytest.fixture
def scores() -> np.ndarray:
    return np.random.default_rng(3).random(len(TYPES))


def types_of(table: ItemTable, ranking) -> list[str]:
    return [table.types[i] for i in ranking.indices]


def test_no_mix_is_plain_top_k(table, scores):
    r = rank(scores, table, 7)
    assert r.indices.tolist() == np.argsort(-scores)[:7].tolist()
    assert np.array_equal(r.scores, scores[r.indices])


def test_quotas_are_honoured_exactly_and_spread_through_the_list(table, scores):
    r = rank(scores, table, 10, mix={"product": 5, "video": 3, "audio": 2})
    got = types_of(table, r)
    assert Counter(got) == {"product": 5, "video": 3, "audio": 2}
    for t in ("product", "video", "audio"):  # each type's picks are its best items, in score order
        rows = [i for i in r.indices if table.types[i] == t]
        best = [i for i in np.argsort(-scores) if table.types[i] == t][:len(rows)]
        assert rows == best
    assert Counter(got[:4])["product"] == 2  # weighted interleave: no type bunches at the top


def test_proportions_become_counts_by_largest_remainder(table, scores):
    assert parse_mix({"product": 0.5, "video": 0.5}, 7, known=KNOWN).quotas == {"product": 4, "video": 3}
    assert parse_mix({"product": 0.2, "video": 0.3, "audio": 0.5}, 10, known=KNOWN).quotas == {"product": 2, "video": 3, "audio": 5}
    r = rank(scores, table, 6, mix={"product": 0.5, "video": 0.5})
    assert Counter(types_of(table, r)) == {"product": 3, "video": 3}


def test_zero_quota_and_unnamed_types_get_nothing(table, scores):
    r = rank(scores, table, 5, mix={"product": 0, "video": 5})
    assert set(types_of(table, r)) == {"video"}


def test_shortfall_fills_from_other_named_types_or_drops(table, scores):
    filled = rank(scores, table, 10, mix={"audio": 8, "video": 2})
    got = types_of(table, filled)
    assert len(got) == 10 and Counter(got) == {"audio": 4, "video": 6} and "product" not in got
    assert got[-4:] == ["video"] * 4  # the fill goes at the end
    dropped = rank(scores, table, 10, mix={"audio": 8, "video": 2}, shortfall="drop")
    assert Counter(types_of(table, dropped)) == {"audio": 4, "video": 2}


def test_interleave_round_robin_and_type_that_runs_out(table, scores):
    r = rank(scores, table, 12, mix="interleave")
    got = types_of(table, r)
    best_type = table.types[int(np.argmax(scores))]
    assert got[0] == best_type
    assert all(len(set(got[i:i + 3])) == 3 for i in range(0, 12, 3))  # one of each per round
    long = types_of(table, rank(scores, table, 20, mix="interleave"))
    assert long.count("audio") == 4 and len(long) == 20  # audio dropped out, the others carried on
    only_two = types_of(table, rank(scores, table, 6, mix="interleave", types=["video", "audio"]))
    assert set(only_two) == {"video", "audio"} and only_two.count("audio") == 3


def test_filters_and_exclusion_hold(table, scores):
    exclude = [f"i{i}" for i in np.argsort(-scores)[:5]] + ["not-in-catalog"]
    allowed = np.ones(len(table), dtype=bool)
    allowed[1] = False
    r = rank(scores, table, 30, types=["product", "video"], tags=["blue", "red"], exclude_ids=exclude,
             allowed=allowed, mix="interleave")
    rows = r.indices.tolist()
    assert rows and all(table.types[i] in ("product", "video") for i in rows)
    assert all(i % 3 in (0, 1) for i in rows)  # has red or blue
    assert not {int(e[1:]) for e in exclude[:5]} & set(rows) and 1 not in rows
    expected = table.mask(["product", "video"], ["blue", "red"], exclude) & allowed
    assert sorted(rows) == np.flatnonzero(expected).tolist()  # k larger than the pool: all of it, nothing else


def test_non_finite_scores_are_never_returned(table, scores):
    scores = scores.copy()
    scores[[0, 5]] = [np.nan, -np.inf]
    assert not {0, 5} & set(rank(scores, table, len(table)).indices.tolist())


@pytest.mark.parametrize("mix,k,types,message", [
    ({"podcast": 3}, 3, None, "unknown item type"),
    ({"product": -1, "video": 4}, 3, None, ">= 0"),
    ({"product": 2, "video": 2}, 5, None, "add up to 4 but k=5"),
    ({"product": 0.7, "video": 0.7}, 5, None, "add up to 1.4"),
    ({"audio": 3}, 3, ["product"], "types filter"),
    ({"product": "3"}, 3, None, "must be a number"),
    ({}, 3, None, "non-empty"),
    ("shuffle", 3, None, "unknown mix 'shuffle'"),
    (None, 0, None, "k must be a positive integer"),
    (None, 3, ["gadget"], "unknown item type"),
])
def test_bad_mix_specs_say_what_is_wrong(mix, k, types, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(mix, k, types, known=KNOWN)


def mean_pairwise_similarity(vectors: np.ndarray) -> float:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = v @ v.T
    n = len(v)
    return float((sim.sum() - n) / (n * (n - 1)))


def test_mmr_lambda_zero_is_pure_ranking_and_lambda_up_diversifies():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))
    cluster = np.repeat(np.arange(5), 40)
    vectors = centres[cluster] + 0.1 * rng.normal(size=(200, 16))
    scores = rng.random(200) * 0.5 + np.where(cluster == 0, 0.3, 0.0)  # cluster 0 leads the scores
    table = ItemTable([f"i{i}" for i in range(200)], ["product"] * 200)

    plain = rank(scores, table, 10)
    zero = rank(scores, table, 10, diversity=0.0, vectors=vectors)
    assert zero.indices.tolist() == plain.indices.tolist() == np.argsort(-scores)[:10].tolist()
    sims = [mean_pairwise_similarity(vectors[rank(scores, table, 10, diversity=lam, vectors=vectors).indices])
            for lam in (0.0, 0.5, 0.9)]
    assert sims[0] > sims[1] > sims[2]
    diverse = rank(scores, table, 10, diversity=0.7, vectors=vectors)
    assert len(set(cluster[diverse.indices])) >= 3 and diverse.indices[0] == plain.indices[0]


def test_mmr_respects_quotas(table, scores):
    vectors = np.random.default_rng(1).normal(size=(len(table), 8))
    r = rank(scores, table, 9, mix={"product": 4, "video": 3, "audio": 2}, diversity=0.5, vectors=vectors)
    assert Counter(types_of(table, r)) == {"product": 4, "video": 3, "audio": 2}


def test_bad_arguments(table, scores):
    with pytest.raises(ValueError, match="diversity"):
        rank(scores, table, 3, diversity=1.5, vectors=np.zeros((len(table), 2)))
    with pytest.raises(ValueError, match="needs one vector"):
        rank(scores, table, 3, diversity=0.5)
    with pytest.raises(ValueError, match="shape"):
        rank(scores[:-1], table, 3)
    with pytest.raises(ValueError, match="unique"):
        ItemTable(["a", "a"], ["product", "video"])
    with pytest.raises(ValueError, match="unknown item types"):
        ItemTable(["a"], ["podcast"], known=KNOWN)


def test_from_items_and_empty_results():
    from mixrec.catalog import Item

    table = ItemTable.from_items([Item(item_id="x", type="video", title="X", tags=["a"])])
    assert table.row("x") == 0 and table.row("y") is None
    r = rank(np.array([1.0]), table, 5, tags=["b"])
    assert len(r) == 0 and r.indices.dtype == np.int64


def test_a_count_too_large_for_a_float_is_an_input_error_not_an_overflow():
    from mixrec.errors import InputError

    with pytest.raises(InputError, match="<= k=3"):
        parse_mix({"product": 10 ** 400}, 3, known=KNOWN)  # OverflowError (a 500) before


def test_type_labels_are_the_catalogues_own_not_a_fixed_list():
    """A books-and-podcasts catalogue: its labels filter and mix; the demo's labels are unknown to it."""
    table = ItemTable([f"i{i}" for i in range(6)], ["book", "podcast"] * 3, known=("book", "podcast", "article"))
    scores = np.arange(6, dtype=float)
    r = rank(scores, table, 4, mix={"book": 3, "podcast": 1})
    assert Counter(table.types[i] for i in r.indices) == {"book": 3, "podcast": 1}
    assert set(table.types[i] for i in rank(scores, table, 3, types=["podcast"]).indices) == {"podcast"}
    assert parse_mix("interleave", 3, known=table.known).types == ("book", "podcast", "article")
    assert len(rank(scores, table, 2, types=["article"])) == 0  # a known type with no rows here: none, no error
    with pytest.raises(ValueError, match=r"unknown item type.*'product'.*this catalogue's types"):
        rank(scores, table, 3, types=["product"])
    with pytest.raises(ValueError, match="unknown item type"):
        parse_mix({"video": 3}, 3, known=table.known)
