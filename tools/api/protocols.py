"""``evaluate``: the caller's own items and interactions through ``mixrec evaluate``'s protocols.

Same splits (tools/evaluation/splits.py), same models and baselines (popularity, LightFM ids, LightFM
ids + tags, mixrec, trained with one LightFM budget: the config's ``model`` section), same runner and
the same report files (a rich table, ``evaluation.json`` / ``.md`` / ``.png``,
tools/evaluation/report.py). The warm protocol uses the caller's own held-out set when ``test`` is
given (as ``mixrec evaluate --dataset movielens`` uses the official ``ua`` split), else a random
per-user 20%; cold items and cold users are drawn from all interactions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mixrec.catalog import Interaction
from mixrec.config import MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.events import signed_weight
from tools.api.data import Catalog, DataError, interactions as validate_interactions
from tools.api.settings import resolve_config
from tools.evaluation.protocol import EvalData
from tools.evaluation.protocols import build_models, run_protocols
from tools.evaluation.report import report_console, rich_table, write_report
from tools.evaluation.splits import InteractionLog, protocol_splits, warm_split

PROTOCOLS = ("warm", "cold_items", "cold_users")
MODELS = ("popularity", "lightfm", "lightfm-tags", "mixrec")


@dataclass
class Evaluation:
    """``results[protocol][model] -> {precision_at_k, recall_at_k, ndcg_at_k, auc, coverage, novelty,
    fit_seconds, users}`` (as ``run_protocols``); ``files``: the report files written (json, md, png)."""

    results: dict[str, dict[str, dict[str, float]]]
    k: int
    files: dict[str, Path] = field(default_factory=dict)

    def metric(self, protocol: str, model: str, name: str) -> float:
        return float(self.results[protocol][model][name])


def evaluate(catalog: Catalog, embeddings: ItemEmbeddings, interactions: Any,
             config: MixrecConfig | str | os.PathLike | None = None, *, test: Any = None,
             protocols: Sequence[str] = PROTOCOLS, models: Sequence[str] = MODELS, k: int = 10,
             out: str | os.PathLike | None = None, seed: int = 0, cold_item_share: float = 0.2,
             cold_user_share: float = 0.2, known: int = 5,
             text_encoder: Callable[[list[str]], np.ndarray] | None = None, progress: bool = True,
             **overrides: Any) -> Evaluation:
    """Compare mixrec with the baselines on ``protocols``; write the report to ``out`` when given.

    ``interactions`` (and ``test``, the caller's warm hold-out) are rows ``tools.api.interactions``
    accepts; only positive events count (the config's ``events``). ``text_encoder`` (texts -> vectors in
    the text space of ``embeddings``) lets mixrec read the cold users' query text. ``overrides``:
    config fields as in ``fit`` (they set mixrec's and the baselines' LightFM budget alike)."""
    cfg = resolve_config(config, **overrides)
    train = _positives(_records(interactions, catalog, cfg), cfg)
    held = _positives(_records(test, catalog, cfg), cfg) if test is not None else []
    data, log = _eval_data(catalog, embeddings, train + held)
    warm = None
    if test is not None and "warm" in protocols:
        shape = (data.n_users, data.n_items)
        warm = warm_split(_matrix(data, train, shape), _matrix(data, held, shape))
    splits = protocol_splits(data, log, warm=warm, protocols=tuple(protocols), cold_item_share=cold_item_share,
                             cold_user_share=cold_user_share, n_known=known, seed=seed)
    built, skipped = build_models(list(models), cfg.model, cfg, text_encoder)
    if skipped:
        raise DataError(f"cannot build model(s): {skipped}")
    results = run_protocols(built, data, splits.warm, splits.cold_items, splits.cold_users, k=k,
                            progress=progress)
    title = f"{data.n_users} users x {data.n_items} items"
    if progress:
        report_console().print(rich_table(results, k, title=title))
    files = {}
    if out is not None:
        meta = {"dataset": "python-api", "k": k, "lightfm": cfg.model.model_dump(), "seed": seed,
                "test_given": test is not None, "cold_item_share": cold_item_share,
                "cold_user_share": cold_user_share, "known_items": known}
        files = write_report(results, Path(out), "evaluation", k=k, title=title, meta=meta)
    return Evaluation(results, k, files)


def _records(rows: Any, catalog: Catalog, cfg: MixrecConfig) -> list[Interaction]:
    if isinstance(rows, (list, tuple)) and rows and all(isinstance(r, Interaction) for r in rows):
        return list(rows)
    return validate_interactions(rows, catalog, events=cfg.events)


def _positives(rows: list[Interaction], cfg: MixrecConfig) -> list[Interaction]:
    return [r for r in rows if signed_weight(cfg.events, r.event, r.weight) > 0]


def _eval_data(catalog: Catalog, embeddings: ItemEmbeddings, rows: list[Interaction]) -> tuple[EvalData, InteractionLog]:
    """Users: those with a positive interaction (sorted ids); items in the catalog's order."""
    if not rows:
        raise DataError("interactions: no positive interaction to evaluate on")
    item_ids = catalog.item_ids
    item_index = {iid: i for i, iid in enumerate(item_ids)}
    user_ids = sorted({r.user_id for r in rows})
    user_index = {u: i for i, u in enumerate(user_ids)}
    log = InteractionLog(np.array([user_index[r.user_id] for r in rows], np.int64),
                         np.array([item_index[r.item_id] for r in rows], np.int64),
                         np.array([r.timestamp for r in rows], np.float64), len(user_ids), len(item_ids))
    data = EvalData(user_ids=user_ids, item_ids=item_ids, items=list(catalog.items),
                    embeddings=embeddings.subset(item_ids), extra={"interactions": log})
    return data, log


def _matrix(data: EvalData, rows: list[Interaction], shape: tuple[int, int]):
    users = {u: i for i, u in enumerate(data.user_ids)}
    items = {iid: i for i, iid in enumerate(data.item_ids)}
    return InteractionLog(np.array([users[r.user_id] for r in rows], np.int64),
                          np.array([items[r.item_id] for r in rows], np.int64),
                          np.zeros(len(rows)), *shape).matrix()
