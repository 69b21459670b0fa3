"""End to end on the generated demo catalog: encode -> `mixrec train` -> evaluate -> `mixrec recommend`.

Small sizes, real encoders (offline MiniLM + tiny untrained CLIP/CLAP), real CLI.
The claim under test: on items nobody has interacted with, the fused content
model ranks far better than ids-only LightFM.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from encoders.registry import build_encoder
from tools.evaluation.adapter import MixrecEvalModel
from fusion.hybrid import HybridModel
from fusion.query import Query
from mixrec.catalog import read_interactions
from tools.cli import app
from mixrec.config import load_config
from tools.evaluation.baselines import LightFMIds, LightFMParams
from tools.evaluation.protocols import run_protocols
from tools.evaluation.splits import cold_item_split

pytestmark = pytest.mark.slow

N_ITEMS, N_USERS, EPOCHS = 48, 120, 10


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from tools.datasets.catalog_dir import load_catalog_dir
    from tools.demo.catalog import generate_demo_catalog
    from encoders.encode_catalog import encode_catalog

    root = tmp_path_factory.mktemp("fusion-demo")
    generate_demo_catalog(root, seed=0, n_items=N_ITEMS, n_users=N_USERS)
    cfg = load_config("configs/offline.yaml", environ={})
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"epochs": EPOCHS, "no_components": 32}),
                                 "fusion": cfg.fusion.model_copy(update={"shared_dim": 32, "codebook_size": 16})})
    emb, _ = encode_catalog(cfg, root)
    emb.save(root / "embeddings.npz")
    return root, cfg, load_catalog_dir(root)


def test_train_evaluate_recommend(demo, tmp_path, monkeypatch):
    root, cfg, data = demo
    runner = CliRunner()
    monkeypatch.setenv("MIXREC__MODEL__EPOCHS", str(EPOCHS))
    monkeypatch.setenv("MIXREC__FUSION__CODEBOOK_SIZE", "16")
    result = runner.invoke(app, ["train", "--catalog-dir", str(root), "--embeddings", str(root / "embeddings.npz"),
                                 "--out", str(tmp_path / "art"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "interest clusters" in result.output

    # Evaluate: cold items, fused content vs ids only, same LightFM budget.
    split = cold_item_split(data.extra["interactions"], share=0.25, seed=0)
    params = LightFMParams(no_components=32, epochs=EPOCHS, num_threads=1)
    res = run_protocols([LightFMIds(params), MixrecEvalModel(cfg)], data, cold_item_split=split, progress=False)
    mixrec_auc, ids_auc = res["cold_items"]["mixrec"]["auc"], res["cold_items"]["lightfm"]["auc"]
    print(f"cold-item AUC: mixrec {mixrec_auc:.3f}, ids-only LightFM {ids_auc:.3f}")
    assert mixrec_auc > 0.7 and mixrec_auc > ids_auc + 0.15, res["cold_items"]

    # Recommend from the trained artifacts, for a known user and for a query.
    model = HybridModel.load(tmp_path / "art", expected_encoders=data.embeddings.encoders)
    user = data.user_ids[0]
    recs = model.recommend(user, k=5)
    assert len(recs) == 5 and all(r.explanation["interests"] for r in recs)
    result = runner.invoke(app, ["recommend", "--artifacts", str(tmp_path / "art"), "--user", user, "-k", "5"])
    assert result.exit_code == 0, result.output
    assert recs[0].item_id[:6] in result.output and "interest distribution" in result.output
    liked = ",".join(data.item_ids[:2])
    result = runner.invoke(app, ["recommend", "--artifacts", str(tmp_path / "art"), "--query", "smooth jazz saxophone",
                                 "--liked", liked, "-k", "5"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recommend", "--artifacts", str(tmp_path / "art"), "--user", "nobody"])
    assert result.exit_code == 2 and "unknown user" in result.output


def test_query_text_reaches_matching_items(demo):
    """A text query, encoded with the real MiniLM, lands on items of its category."""
    root, cfg, data = demo
    model = HybridModel.train(data.items, data.embeddings, read_interactions(root), cfg)
    enc = build_encoder(cfg.encoders.text, cfg.limits)
    cats = {it.item_id: it.category for it in data.items}
    target = data.items[0].category
    vec = enc.encode([f"{target} " + " ".join(data.items[0].tags)])[0]
    recs = model.recommend_for_query(Query(text_vec=vec), k=5)
    assert np.mean([cats[r.item_id] == target for r in recs]) >= 0.6, [(r.item_id, cats[r.item_id]) for r in recs]
