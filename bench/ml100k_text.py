"""ml-100k with its text embeddings at the LightFM budget the calibration benches share (64
components, 20 epochs): the config and the encoded dataset, for ``bench/calibration_choice.py`` and
``bench/cold_user_foldin.py``. (``bench/calibration_cost.py`` keeps its own copy: its ``--repo``
imports mixrec from another checkout.)"""
from __future__ import annotations


def movielens_with_text(data_dir: str | None):
    """(config, dataset with ``embeddings``): ``data_dir`` as ``load_movielens`` takes it."""
    from mixrec.config import load_config
    from tools.datasets.embed import encode_items
    from tools.datasets.movielens import load_movielens

    cfg = load_config(None)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"no_components": 64, "epochs": 20})})
    data = load_movielens(data_dir)
    data.embeddings = encode_items(data, cfg, progress=False)
    return cfg, data
