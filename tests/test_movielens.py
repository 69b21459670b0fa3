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
    results = {
        "warm": {"lightfm": {"precision_at_10": 0.25, "auc": 0.94, "fit_seconds": 2.0},
                 "mixrec": {"precision_at_10": 0.26, "auc": 0.95, "fit_seconds": 7.0}},
        "cold_items": {"mixrec": {"auc": 0.83}},
        "cold_users": {"popularity": {"ndcg_at_10": 0.46}, "mixrec": {"ndcg_at_10": 0.48}},
    }
    met = {t["target"]: t["met"] for t in bench.evaluate_targets(results)}
    assert met == {
        "warm P@10 >= 1.03 x plain LightFM": True,   # 0.26 >= 0.2575
        "warm AUC >= plain LightFM": True,
        "cold items AUC >= 0.82": True,
        "cold users NDCG@10 >= popularity": True,
        "cold users NDCG@10 >= 1.10 x popularity (stretch)": False,  # 0.48 < 0.506
        "fit time <= 3 x plain LightFM": False,  # 7 > 6
    }
    del results["warm"]["mixrec"]
    assert bench.evaluate_targets(results)[0]["met"] is None  # not measured, never "met"
    assert np.isclose(bench.evaluate_targets(results)[0]["threshold"], 0.2575)
