"""MovieLens 100K loader (skips when the data is absent) and the benchmark's BENCHMARKS.md handling."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from tools.datasets.movielens import (
    DEFAULT_DATA_DIR, ENV_DATA_DIR, MovieLensNotFound, load_movielens, load_official_split, resolve_data_dir,
)

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR)
needs_data = pytest.mark.skipif(not (DATA_DIR / "u.data").is_file(), reason=f"ml-100k not found in {DATA_DIR}")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_movielens", REPO / "bench" / "movielens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_missing_data_dir_names_the_way_out(tmp_path) -> None:
    with pytest.raises(MovieLensNotFound, match=ENV_DATA_DIR):
        resolve_data_dir(tmp_path)


@needs_data
def test_load_movielens_and_one_epoch_model(tmp_path) -> None:
    pytest.importorskip("lightfm")
    from tools.evaluation.baselines import LightFMGenres, LightFMParams
    from tools.evaluation.protocols import run_protocols

    data = load_movielens(DATA_DIR, posters_dir=tmp_path)  # empty posters dir: no images
    assert (data.n_users, data.n_items) == (943, 1682)
    toy = data.items[0]
    assert toy.title == "Toy Story (1995)" and toy.type == "video" and toy.image is None
    assert toy.tags == ["Animation", "Children's", "Comedy"] and toy.category == "Animation"
    assert toy.description == "An animation, children's, comedy movie from 1995"
    assert data.items[1632].title.startswith("Á köldum klaka")  # latin-1 decoded
    assert data.extra["genres"].shape == (1682, 19)
    log = data.extra["interactions"]
    assert len(log) == 100_000 and log.timestamps.min() > 0  # every rating is a positive

    split = load_official_split(data, "ua")
    assert split.train.nnz == 90_570 and split.test.nnz == 9_430
    assert (split.test.getnnz(axis=1) == 10).all()

    params = LightFMParams(no_components=16, epochs=1, num_threads=2)
    results = run_protocols([LightFMGenres(params)], data, split, progress=False)
    warm = results["warm"]["lightfm-genres"]
    assert warm["users"] == 943 and warm["auc"] > 0.8 and warm["precision_at_10"] > 0.05


@needs_data
def test_posters_become_absolute_image_paths() -> None:
    from tools.datasets.movielens import resolve_posters_dir

    posters = resolve_posters_dir()
    if posters is None:
        pytest.skip("ml-100k posters not present")
    data = load_movielens(DATA_DIR, posters)
    with_image = [it for it in data.items if it.image]
    assert with_image and all(Path(it.image).is_absolute() and Path(it.image).is_file() for it in with_image)


def test_benchmarks_section_replaced_in_place(tmp_path) -> None:
    bench = load_bench()
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n<!-- encoders:start -->\nenc\n<!-- encoders:end -->\n")
    bench.write_section(md, "first")
    bench.write_section(md, "second")
    text = md.read_text()
    assert "<!-- encoders:start -->\nenc\n<!-- encoders:end -->" in text
    assert text.count(bench.SECTION_START) == 1 and "second" in text and "first" not in text
    empty = tmp_path / "new.md"
    bench.write_section(empty, "body")
    assert empty.read_text().startswith("# Benchmarks")


def test_targets_are_computed_from_the_figures() -> None:
    bench = load_bench()
    results = {"warm": {"lightfm": {"fit_seconds": 2.0}, "mixrec": {"fit_seconds": 9.0}}}
    row = lambda base, bv, v: {"baseline": base, "baseline_value": bv, "value": v, "ratio": v / bv,  # noqa: E731
                               "diff": v - bv, "ci_low": v - bv - 0.01, "ci_high": v - bv + 0.01}
    comparison = {
        "warm": {"ndcg_at_10": row("lightfm", 0.28, 0.29), "auc": row("lightfm-genres", 0.94, 0.93)},
        "cold_items": {"ndcg_at_10": row("lightfm-genres", 0.20, 0.32), "auc": row("lightfm-genres", 0.7, 0.8)},
        "cold_users": {"ndcg_at_10": row("lightfm-genres", 0.49, 0.50), "auc": row("popularity", 0.86, 0.87)},
    }
    met = {t["target"]: t["met"] for t in bench.evaluate_targets(results, comparison, "ua")}
    assert met == {
        "ua: warm NDCG@10 >= best baseline (lightfm)": True,
        "ua: warm AUC >= best baseline (lightfm-genres)": False,  # 0.93 < 0.94
        "ua: cold_items NDCG@10 >= best baseline (lightfm-genres)": True,
        "ua: cold_items AUC >= best baseline (lightfm-genres)": True,
        "ua: cold_users NDCG@10 >= best baseline (lightfm-genres)": True,
        "ua: cold_users AUC >= best baseline (popularity)": True,
        "ua: cold_items NDCG@10 >= 1.5 x best baseline (lightfm-genres)": True,  # 0.32 >= 0.30
        "ua: cold_users NDCG@10 >= 1.05 x best baseline (lightfm-genres)": False,  # 0.50 < 0.5145
        "ua: calibrated fit (validation runs + refit) <= 5 x one plain LightFM fit": True,  # 9 <= 10
    }
    del results["warm"]["mixrec"]
    assert bench.evaluate_targets(results, {}, "ua")[-1]["met"] is None  # not measured, never "met"
