"""Evaluation of calibrated mixrec: cold items through add_items, paired bootstrap, every protocol listed."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from fusion.hybrid import HybridModel
from fusion.synthetic import make_catalog
from mixrec.config import load_config
from tools.evaluation.bootstrap import compare_to_best, comparison_markdown, paired_bootstrap
from tools.evaluation.protocol import EvalData
from tools.evaluation.protocols import PER_USER, build_models, run_protocols
from tools.evaluation.report import scalars, write_json
from tools.evaluation.splits import InteractionLog, cold_item_split, cold_user_split, random_warm_split


def small_config():
    cfg = load_config("configs/offline.yaml", environ={})
    return cfg.model_copy(update={
        "fusion": cfg.fusion.model_copy(update={"shared_dim": 16, "codebook_size": 12}),
        "model": cfg.model.model_copy(update={"no_components": 8, "epochs": 4, "num_threads": 1})})


@pytest.fixture(scope="module")
def data():
    cat = make_catalog(n_items=160, n_users=100, per_user=12, seed=2)
    item_ids = [it.item_id for it in cat.items]
    user_ids = sorted({r.user_id for r in cat.interactions})
    iidx, uidx = {i: n for n, i in enumerate(item_ids)}, {u: n for n, u in enumerate(user_ids)}
    log = InteractionLog(np.array([uidx[r.user_id] for r in cat.interactions]),
                         np.array([iidx[r.item_id] for r in cat.interactions]),
                         np.array([r.timestamp for r in cat.interactions], np.float64), len(user_ids), len(item_ids))
    return EvalData(user_ids, item_ids, cat.items, cat.embeddings, {"interactions": log})


def test_cold_items_are_trained_without_and_added_through_add_items(data, monkeypatch):
    """Regression: the evaluation kept cold items in the training catalogue (no interactions) instead of
    adding them afterwards, as the service does."""
    added = []
    real = HybridModel.add_items

    def spy(self, items, emb):
        added.append([it.item_id for it in items])
        return real(self, items, emb)

    monkeypatch.setattr(HybridModel, "add_items", spy)
    split = cold_item_split(data.extra["interactions"], share=0.2, seed=0)
    (model,), _ = build_models(["mixrec-defaults"], mixrec_config=small_config())
    model.fit(data, split.train)
    cold = {data.item_ids[i] for i in split.cold_items}
    assert added and set(added[-1]) == cold
    assert not cold & {it.item_id for it in model.model.items[:len(data.item_ids) - len(cold)]}
    # scores come back in the evaluation's item order, whatever the model's row order
    scores = model.score_users(np.arange(3))
    snap = model.model.snapshot
    col = data.item_ids.index(next(iter(cold)))
    row = model._rows[0]
    np.testing.assert_allclose(scores[0, col],
                               (snap.user_repr[row] @ snap.item_repr[snap.item_index[data.item_ids[col]]]
                                + snap.item_bias[snap.item_index[data.item_ids[col]]]), rtol=1e-4, atol=1e-5)


def test_calibrated_and_default_mixrec_run_side_by_side_with_intervals(data, tmp_path):
    log = data.extra["interactions"]
    models, skipped = build_models(["popularity", "lightfm", "lightfm-tags", "mixrec-defaults", "mixrec"],
                                   params=small_config().model, mixrec_config=small_config())
    assert not skipped
    results = run_protocols(models, data, random_warm_split(log, seed=0), cold_item_split(log, seed=0),
                            cold_user_split(log, seed=0), progress=False)
    assert set(results) == {"warm", "cold_items", "cold_items_all", "cold_users"}
    mix = next(m for m in models if m.name == "mixrec")
    assert mix.report is not None and mix.report.mode == "fast"
    comparison = compare_to_best(results, "mixrec")
    assert set(comparison) == set(results)
    for protocol, rows in comparison.items():
        for metric, c in rows.items():
            assert c["baseline"] in ("popularity", "lightfm", "lightfm-tags")
            best = max(results[protocol][b][metric] for b in ("popularity", "lightfm", "lightfm-tags"))
            assert c["baseline_value"] == pytest.approx(best)
            assert c["ci_low"] <= c["diff"] <= c["ci_high"]
            assert c["diff"] == pytest.approx(results[protocol]["mixrec"][metric] - best, abs=1e-9) or metric == "auc"
    assert "95% CI" in comparison_markdown(comparison)
    # per-user arrays stay out of the JSON
    path = write_json(results, tmp_path / "r.json")
    assert PER_USER not in path.read_text()
    assert PER_USER not in scalars(results)["warm"]["mixrec"]


def test_paired_bootstrap_interval():
    rng = np.random.default_rng(0)
    a = rng.normal(0.5, 0.1, 2000)
    diff, lo, hi = paired_bootstrap(a + 0.05, a)
    assert diff == pytest.approx(0.05) and lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
    b = rng.normal(0.5, 0.1, 2000)
    diff, lo, hi = paired_bootstrap(a, b)
    assert lo < diff < hi and lo < 0 < hi  # same distribution: the interval holds 0
    nan = np.r_[a[:10], np.nan]
    assert np.isfinite(paired_bootstrap(nan, np.r_[b[:10], 0.3])[0])  # NaN users are left out
    with pytest.raises(ValueError):
        paired_bootstrap(a, b[:5])


def test_evaluate_help_lists_every_protocol_and_model():
    from tools.cli import app

    out = CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=240).output
    for name in ("warm", "cold_items", "cold_items_all", "cold_users", "mixrec-defaults", "--calibrate", "--split"):
        assert name in out


def report_of(artifacts):
    from fusion.calibration import CalibrationReport

    return CalibrationReport.load(artifacts)


def test_train_writes_the_calibration_report_and_info_shows_it(tmp_path, monkeypatch):
    import encoders.fingerprint
    from mixrec.config import DEFAULT_CONFIG
    from tools.cli import app

    # synthetic embeddings carry no real encoder's fingerprint: the check is not what this test is about
    monkeypatch.setattr(encoders.fingerprint, "check_same", lambda *a, **k: None)
    monkeypatch.setenv("COLUMNS", "300")  # rich wraps the table title at 80 columns otherwise

    cat = make_catalog(n_items=120, n_users=80, per_user=12, seed=3)
    from mixrec.catalog import write_interactions, write_items

    write_items(tmp_path, cat.items)
    write_interactions(tmp_path, cat.interactions)
    cat.embeddings.save(tmp_path / "emb.npz")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"extends: {DEFAULT_CONFIG}\n"
                   "fusion: {shared_dim: 16, codebook_size: 12}\nmodel: {no_components: 8, epochs: 4, num_threads: 1}\n")
    res = CliRunner().invoke(app, ["train", "--config", str(cfg), "--catalog-dir", str(tmp_path), "--embeddings",
                                   str(tmp_path / "emb.npz"), "--out", str(tmp_path / "art"), "--no-progress"],
                             terminal_width=240)
    assert res.exit_code == 0, res.output
    assert "calibration (fast)" in res.output and "ids + tags" in res.output
    assert f"why: {report_of(tmp_path / 'art')['selection']}" in res.output  # why the chosen setting won
    assert (tmp_path / "art" / "calibration.json").is_file()
    info = CliRunner().invoke(app, ["info", str(tmp_path / "art")], terminal_width=240)
    assert info.exit_code == 0 and "ids + tags" in info.output and "cold_map_weight" in info.output
