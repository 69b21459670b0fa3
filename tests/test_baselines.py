"""Baseline models, the protocol runner, the report writers and ``mixrec evaluate`` on tiny synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from mixrec.catalog import Interaction, Item, write_interactions, write_items
from tools.evaluation.baselines import LightFMGenres, LightFMIds, LightFMParams, Popularity, tag_features
from tools.evaluation.metrics import evaluate_scores
from tools.evaluation.protocol import EvalData, UserQuery
from tools.evaluation.protocols import build_models, run_protocols
from tools.evaluation.report import markdown_table, write_report
from tools.evaluation.splits import InteractionLog, cold_item_split, cold_user_split, random_warm_split

pytest.importorskip("lightfm")

N_USERS, N_ITEMS = 60, 40
PARAMS = LightFMParams(no_components=8, epochs=15, num_threads=1, seed=0, learning_rate=0.05)


def two_taste_world(seed: int = 0) -> tuple[EvalData, InteractionLog]:
    """Users of taste 0 like even items (tag "calm"), users of taste 1 odd items (tag "loud")."""
    rng = np.random.default_rng(seed)
    taste = np.arange(N_USERS) % 2
    likes = rng.random((N_USERS, N_ITEMS)) < np.where(taste[:, None] == np.arange(N_ITEMS)[None, :] % 2, 0.5, 0.03)
    users, items = np.nonzero(likes)
    items_meta = [Item(item_id=f"i{i}", type="product", title=f"item {i}", tags=["calm" if i % 2 == 0 else "loud"])
                  for i in range(N_ITEMS)]
    data = EvalData([f"u{u}" for u in range(N_USERS)], [f"i{i}" for i in range(N_ITEMS)], items_meta)
    log = InteractionLog(users, items, rng.random(len(users)), N_USERS, N_ITEMS)
    data.extra["interactions"] = log
    return data, log


def mean_auc(model, split, candidates=None) -> float:
    users = np.flatnonzero(split.test.getnnz(axis=1) > 0)
    res = evaluate_scores(model.score_users(users), split.test[users], 5, split.train[users], candidates)
    return float(np.nanmean(res.auc))


def test_popularity_ranks_by_train_counts() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], dtype=np.float32))
    model = Popularity()
    model.fit(EvalData(["a", "b", "c"], ["x", "y", "z"], []), train)
    assert model.score_users(np.array([0, 2])).tolist() == [[2, 0, 3], [2, 0, 3]]
    assert model.score_queries([UserQuery(np.array([0]))]).shape == (1, 3)


def test_lightfm_ids_learns_warm_tastes_and_folds_in_cold_users() -> None:
    data, log = two_taste_world()
    split = random_warm_split(log, 0.3, seed=0)
    model = LightFMIds(PARAMS)
    model.fit(data, split.train)
    assert model.fit_seconds > 0
    # Ceiling ~0.83 here (unliked same-taste items tie with liked ones); popularity is ~0.47.
    assert mean_auc(model, split) > 0.7
    # Fold-in: a user who liked even items should rank even items above odd ones.
    scores = model.score_queries([UserQuery(np.array([0, 2, 4, 6])), UserQuery(np.array([], dtype=np.int64))])
    assert scores.shape == (2, N_ITEMS)
    assert scores[0, 8::2].mean() > scores[0, 9::2].mean()
    # The fold-in user vector is the mean of the liked items' embeddings.
    bias, item_vecs = model.model.get_item_representations()
    np.testing.assert_allclose(scores[0], item_vecs[[0, 2, 4, 6]].mean(axis=0) @ item_vecs.T + bias, rtol=1e-5)


def test_lightfm_genres_scores_cold_items_from_tags() -> None:
    data, log = two_taste_world()
    split = cold_item_split(log, 0.25, seed=0)
    ids, genres = LightFMIds(PARAMS), LightFMGenres(PARAMS)
    ids.fit(data, split.train)
    genres.fit(data, split.train)
    assert genres.tag_names == ["calm", "loud"]
    cold_auc_genres = mean_auc(genres, split, split.candidates)
    cold_auc_ids = mean_auc(ids, split, split.candidates)
    assert cold_auc_genres > 0.7  # tags carry the taste (ceiling ~0.8, as in the warm case)
    assert cold_auc_genres > cold_auc_ids + 0.1  # untrained id embeddings carry nothing
    # A cold item's representation uses its tag only: two cold items with the same tag score the same.
    cold_even = [i for i in split.cold_items if i % 2 == 0][:2]
    assert len(cold_even) == 2
    s = genres.score_users(np.arange(3))
    np.testing.assert_allclose(s[:, cold_even[0]], s[:, cold_even[1]], rtol=1e-5)


def test_tag_features_are_binary_and_aligned() -> None:
    data, _ = two_taste_world()
    m, names = tag_features(data)
    assert names == ["calm", "loud"]
    assert m.shape == (N_ITEMS, 2) and m[0, 0] == 1 and m[1, 1] == 1 and m.sum() == N_ITEMS


class Broken:
    name = "broken"

    def fit(self, data, train):
        raise RuntimeError("boom")


def test_run_protocols_end_to_end_and_reports(tmp_path) -> None:
    data, log = two_taste_world()
    models, skipped = build_models(["popularity", "lightfm", "lightfm-tags"], PARAMS)
    assert not skipped
    results = run_protocols(models + [Broken()], data, random_warm_split(log, 0.3), cold_item_split(log, 0.25),
                            cold_user_split(log, 0.2, 3), k=5, progress=False, fail_fast=False)
    assert list(results) == ["warm", "cold_items", "cold_items_all", "cold_users"]
    for protocol, by_model in results.items():
        assert list(by_model) == ["popularity", "lightfm", "lightfm-tags", "broken"]
        assert by_model["broken"] == {"error": "RuntimeError: boom"}
        for name in ("popularity", "lightfm", "lightfm-tags"):
            m = by_model[name]
            assert set(m) >= {"precision_at_5", "recall_at_5", "ndcg_at_5", "auc", "coverage", "novelty",
                              "fit_seconds", "users"}
            assert 0 <= m["precision_at_5"] <= 1 and 0 <= m["auc"] <= 1 and 0 < m["coverage"] <= 1
    assert results["warm"]["lightfm"]["auc"] > results["warm"]["popularity"]["auc"]
    assert results["cold_items"]["lightfm-tags"]["auc"] > 0.7
    assert results["cold_items"]["popularity"]["auc"] == pytest.approx(0.5)  # no signal on cold items

    md = markdown_table(results, k=5)
    assert "| warm | lightfm |" in md and "error: RuntimeError: boom" in md
    paths = write_report(results, tmp_path, "evaluation", k=5, meta={"k": 5})
    payload = json.loads(paths["json"].read_text())
    assert payload["results"]["warm"]["lightfm"]["users"] == results["warm"]["lightfm"]["users"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| cold_users |" in paths["md"].read_text()

    with pytest.raises(RuntimeError, match="boom"):
        run_protocols([Broken()], data, random_warm_split(log, 0.3), progress=False)


def test_unknown_model_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_models(["nope"])


def test_evaluate_cli_on_a_catalog_directory(tmp_path) -> None:
    from typer.testing import CliRunner

    from tools.cli import app

    data, log = two_taste_world()
    write_items(tmp_path / "cat", data.items)
    write_interactions(tmp_path / "cat", [Interaction(data.user_ids[u], data.item_ids[i], "like", 1.0, float(t))
                                          for u, i, t in zip(log.users, log.items, log.timestamps)])
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["evaluate", "--dataset", "demo", "--catalog-dir", str(tmp_path / "cat"),
                                   "--models", "popularity,lightfm-tags", "--epochs", "5", "--components", "8",
                                   "--threads", "1", "--known", "3", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    payload = json.loads((out / "evaluation.json").read_text())
    assert set(payload["results"]) == {"warm", "cold_items", "cold_items_all", "cold_users"}
    assert set(payload["results"]["warm"]) == {"popularity", "lightfm-tags"}
    assert (out / "evaluation.png").stat().st_size > 0 and (out / "evaluation.md").exists()
