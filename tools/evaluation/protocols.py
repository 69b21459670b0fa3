"""Runs models through the warm, cold-item and cold-user protocols and collects metrics.

Each model is fitted once per protocol on that protocol's ``train`` (``fit`` must
start from scratch every call) and scored in user batches, so memory stays at
``batch_size x n_items`` whatever the number of users.

Protocols and what they rank:
  warm            known users, all items minus their train items
  cold_items      users with interactions on held-out items, ranked over the held-out items only
                  (models train without the held-out items; mixrec adds them afterwards through
                  HybridModel.add_items, as the service does)
  cold_items_all  the same users and test set, ranked over the whole catalog (train items excluded)
  cold_users      held-out users from their known items (+ query text), all items minus the known ones

Top-k ties are broken by a fixed seeded item permutation (``tie_seed=0``), so a
model that scores many items equally (popularity on cold items) gets a fair,
reproducible draw instead of the id order, which on MovieLens tracks popularity.
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import scipy.sparse as sp
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from tools.evaluation.metrics import catalog_coverage, evaluate_scores, item_popularity, novelty
from tools.evaluation.protocol import EvalData, EvalModel
from tools.evaluation.splits import ColdItemSplit, ColdUserSplit, WarmSplit

if TYPE_CHECKING:
    from mixrec.config import MixrecConfig
    from tools.evaluation.baselines import LightFMParams

__all__ = ["run_protocols", "build_models", "with_lightfm_budget", "MODEL_CHOICES", "BASELINES",
           "PROTOCOL_TITLES", "PER_USER"]

log = logging.getLogger(__name__)

PER_USER = "per_user"
PROTOCOL_TITLES = {
    "warm": "warm (known users, all items)",
    "cold_items": "cold items (ranked among held-out items)",
    "cold_items_all": "cold items (ranked over the whole catalog)",
    "cold_users": "cold users (earliest items known)",
}


@dataclass
class _Accumulator:
    """Per-user metric arrays and top-k lists gathered over score batches."""

    k: int
    tie_seed: int | None = 0
    parts: list = field(default_factory=list)

    def add(self, scores: np.ndarray, test: sp.csr_matrix, exclude: sp.csr_matrix | None,
            candidates: np.ndarray | None) -> None:
        if test.nnz:
            self.parts.append(evaluate_scores(scores, test, self.k, exclude, candidates, self.tie_seed))

    def summary(self, candidates: np.ndarray, popularity: np.ndarray) -> dict[str, float]:
        if not self.parts:
            return {}
        cat = lambda attr: np.concatenate([getattr(p, attr) for p in self.parts])  # noqa: E731
        top = np.vstack([p.top.items for p in self.parts])
        aucs = cat("auc")
        k = self.k
        return {
            f"precision_at_{k}": float(cat("precision").mean()),
            f"recall_at_{k}": float(cat("recall").mean()),
            f"ndcg_at_{k}": float(cat("ndcg").mean()),
            "auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
            "coverage": catalog_coverage(top, candidates),
            "novelty": novelty(top, popularity),
            "users": int(len(top)),
            # Per-user values (same users, same order, for every model on a protocol): the paired
            # bootstrap of tools/evaluation/bootstrap.py reads them; write_json leaves them out.
            PER_USER: {f"precision_at_{k}": cat("precision"), f"ndcg_at_{k}": cat("ndcg"), "auc": aucs},
        }


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _check_scores(model: EvalModel, scores: np.ndarray, rows: int, n_items: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != (rows, n_items):
        raise ValueError(f"model {model.name!r} returned scores of shape {scores.shape}, expected {(rows, n_items)}")
    return scores


class _Runner:
    def __init__(self, data: EvalData, k: int, batch_size: int, progress: Progress | None) -> None:
        self.data, self.k, self.batch_size, self.progress = data, k, batch_size, progress

    def _task(self, description: str, total: int):
        if self.progress is None:
            return None
        return self.progress.add_task(description, total=total)

    def _advance(self, task) -> None:
        if self.progress is not None and task is not None:
            self.progress.advance(task)

    def _fit(self, model: EvalModel, train: sp.csr_matrix) -> float:
        start = time.perf_counter()
        model.fit(self.data, train)
        return time.perf_counter() - start

    def known_users(self, model: EvalModel, protocol: str, train: sp.csr_matrix, test: sp.csr_matrix,
                    variants: dict[str, np.ndarray | None]) -> dict[str, dict[str, float]]:
        """Fit once, then score the users with a test set under each candidate mask in ``variants``."""
        users = np.flatnonzero(test.getnnz(axis=1) > 0)
        batches = _batches(len(users), self.batch_size)
        task = self._task(f"{protocol}: {model.name}", total=1 + len(batches))
        fit_seconds = self._fit(model, train)
        self._advance(task)
        accs = {name: _Accumulator(self.k) for name in variants}
        for sl in batches:
            u = users[sl]
            scores = _check_scores(model, model.score_users(u), len(u), self.data.n_items)
            for name, cand in variants.items():
                accs[name].add(scores, test[u], train[u], cand)
            self._advance(task)
        popularity = item_popularity(train)
        all_items = np.ones(self.data.n_items, dtype=bool)
        return {name: {**acc.summary(variants[name] if variants[name] is not None else all_items, popularity),
                       "fit_seconds": fit_seconds}
                for name, acc in accs.items()}

    def cold_users(self, model: EvalModel, split: ColdUserSplit) -> dict[str, float]:
        batches = _batches(len(split.queries), self.batch_size)
        task = self._task(f"cold_users: {model.name}", total=1 + len(batches))
        fit_seconds = self._fit(model, split.train)
        self._advance(task)
        acc = _Accumulator(self.k)
        for sl in batches:
            queries = split.queries[sl]
            scores = _check_scores(model, model.score_queries(queries), len(queries), self.data.n_items)
            acc.add(scores, split.test[sl], split.known[sl], None)
            self._advance(task)
        summary = acc.summary(np.ones(self.data.n_items, dtype=bool), item_popularity(split.train))
        return {**summary, "fit_seconds": fit_seconds}


def _progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn())


def run_protocols(models: Sequence[EvalModel], data: EvalData, warm_split: WarmSplit | None = None,
                  cold_item_split: ColdItemSplit | None = None, cold_user_split: ColdUserSplit | None = None,
                  k: int = 10, progress: bool = True, batch_size: int = 1024,
                  fail_fast: bool = True) -> dict[str, dict[str, dict[str, float]]]:
    """``result[protocol][model.name] -> {precision_at_k, recall_at_k, ndcg_at_k, auc, coverage,
    novelty, fit_seconds, users}`` for every split given (None skips that protocol).

    With ``fail_fast=False`` a model that raises gets ``{"error": "..."}`` for that
    protocol and the run goes on with the others.
    """
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    results: dict[str, dict[str, dict[str, float]]] = {}

    def guarded(protocols: list[str], model: EvalModel, run: Callable[[], dict]) -> None:
        try:
            out = run()
        except Exception as exc:  # noqa: BLE001 - recorded per model when fail_fast is off
            if fail_fast:
                raise
            log.exception("model %s failed on %s", model.name, "/".join(protocols))
            out = {p: {"error": f"{type(exc).__name__}: {exc}"} for p in protocols}
        for p in protocols:
            results.setdefault(p, {})[model.name] = out[p]

    with _progress_bar(progress) as bar:
        runner = _Runner(data, k, batch_size, bar)
        for model in models:
            if warm_split is not None:
                guarded(["warm"], model, lambda m=model: runner.known_users(
                    m, "warm", warm_split.train, warm_split.test, {"warm": None}))
            if cold_item_split is not None:
                guarded(["cold_items", "cold_items_all"], model, lambda m=model: runner.known_users(
                    m, "cold_items", cold_item_split.train, cold_item_split.test,
                    {"cold_items": cold_item_split.candidates, "cold_items_all": None}))
            if cold_user_split is not None:
                guarded(["cold_users"], model, lambda m=model: {"cold_users": runner.cold_users(m, cold_user_split)})
    # Protocols in a fixed order, whatever order the models ran in.
    return {p: results[p] for p in PROTOCOL_TITLES if p in results}


MODEL_CHOICES = ("popularity", "lightfm", "lightfm-tags", "lightfm-genres", "mixrec-defaults", "mixrec")
BASELINES = ("popularity", "lightfm", "lightfm-tags", "lightfm-genres")


def build_models(names: Sequence[str], params: "LightFMParams | None" = None,
                 mixrec_config: "MixrecConfig | None" = None,
                 text_encoder: Callable[[list[str]], np.ndarray] | None = None,
                 calibrate: str = "fast") -> tuple[list[EvalModel], dict[str, str]]:
    """Models by name (see ``MODEL_CHOICES``) and, for those that could not be built, why.

    ``lightfm-tags`` / ``lightfm-genres`` are the same hybrid baseline under two
    names (tags on a generic catalog, genres on MovieLens). ``mixrec`` is imported
    lazily from ``tools.evaluation.adapter`` and trained with the same LightFM budget
    (epochs, components, loss, threads, seed) as the baselines; ``text_encoder``
    (texts -> vectors in the space of ``EvalData.embeddings["text"]``) lets it use
    the cold users' query text.
    """
    from tools.evaluation.baselines import LightFMGenres, LightFMIds, LightFMParams, Popularity

    params = params or LightFMParams()
    models: list[EvalModel] = []
    skipped: dict[str, str] = {}
    for name in names:
        if name == "popularity":
            models.append(Popularity(name))
        elif name == "lightfm":
            models.append(LightFMIds(params, name))
        elif name in ("lightfm-tags", "lightfm-genres"):
            models.append(LightFMGenres(params, name))
        elif name in ("mixrec", "mixrec-defaults"):
            try:
                from tools.evaluation.adapter import MixrecEvalModel
            except ImportError as exc:
                skipped[name] = f"tools.evaluation.adapter is not importable ({exc})"
                continue
            if mixrec_config is None:
                from mixrec.config import load_config

                mixrec_config = load_config()
            kwargs = {"text_encoder": text_encoder} if text_encoder is not None else {}
            models.append(MixrecEvalModel(with_lightfm_budget(mixrec_config, params), name=name,
                                          calibrate=calibrate if name == "mixrec" else "off", **kwargs))
        else:
            raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_CHOICES)}")
    return models, skipped


def with_lightfm_budget(cfg: "MixrecConfig", params: "LightFMParams") -> "MixrecConfig":
    """``cfg`` with its LightFM settings replaced by the baselines' budget, for a like-for-like comparison."""
    model = cfg.model.model_copy(update={"no_components": params.no_components, "epochs": params.epochs,
                                         "loss": params.loss, "learning_rate": params.learning_rate,
                                         "max_sampled": params.max_sampled, "num_threads": params.num_threads,
                                         "seed": params.seed})
    return cfg.model_copy(update={"model": model})
