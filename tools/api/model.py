"""``fit`` and ``MixrecModel``: train on in-memory data, score and rank many users at once, save, load.

Training is ``HybridModel.train`` (the one training path: ``mixrec train`` and evaluation use it too).
Reading is the model's published ``Snapshot`` with fusion/scoring.py's scores (no formula here) and
``mixrec.ranking.top_k``. Who is scored how, per user:

  * a user the model trained on         their LightFM vector (``scoring.user_scores``), the service's
                                        ``recommend``; with ``liked`` items too, those are folded in
                                        (``scoring.fold_in``, as the service folds in fresh feedback);
  * an unseen user with ``liked`` items  the liked-items query blend (``scoring.score_query``), the
                                        service's ``recommend_by_query`` with ``liked_item_ids``;
  * an unseen user with nothing         ``fallback="popularity"`` (default): most-interacted items
                                        (``scoring.popularity_scores``), the service's cold answer;
                                        ``fallback="error"`` raises ``UnknownUserError`` instead.

Every result names the path it took (``source``) and is keyed by item id, never by row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from fusion.artifacts import model_store_path
from fusion.calibration import MODES as CALIBRATION_MODES, CalibrationReport, train_model
from fusion.features import FeatureWeights
from fusion.hybrid import HybridModel
from fusion.query import Query
from fusion.scoring import FreshEvent, fold_in, popularity_scores, score_query, users_scores
from fusion.snapshot import Snapshot, UnknownUserError
from mixrec.catalog import Interaction
from mixrec.config import HYBRID_MODEL_NAME, MixrecConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.errors import InputError, shown
from mixrec.ranking import check_types, top_k
from tools.api.data import Catalog, DataError, interactions as validate_interactions
from tools.api.settings import resolve_config

Fallback = Literal["popularity", "error"]
Source = Literal["model", "model+liked", "liked_items", "popularity"]
# Users scored per matrix product: at most 1,024, and at most 2**25 scores (256 MB of float64) per block.
USER_BATCH, BLOCK_SCORES = 1024, 2 ** 25


@dataclass(frozen=True)
class Pick:
    """One recommended item."""

    item_id: str
    score: float
    type: str


@dataclass(frozen=True)
class UserTopK:
    user_id: str
    source: Source  # which scoring path served this user (module docstring)
    items: list[Pick]


@dataclass(frozen=True)
class ScoreTable:
    """Scores of ``user_ids`` (rows) over ``item_ids`` (columns): look up by id, not by position."""

    user_ids: list[str]
    item_ids: list[str]
    values: np.ndarray  # (len(user_ids), len(item_ids))
    sources: list[Source]

    @cached_property
    def _rows(self) -> dict[str, int]:
        return {u: r for r, u in enumerate(self.user_ids)}

    @cached_property
    def _cols(self) -> dict[str, int]:
        return {i: c for c, i in enumerate(self.item_ids)}

    def score(self, user_id: str | int, item_id: str | int) -> float:
        return float(self.values[self._rows[str(user_id)], self._cols[str(item_id)]])

    def for_user(self, user_id: str | int) -> dict[str, float]:
        """``{item_id: score}`` of one user."""
        return dict(zip(self.item_ids, self.values[self._rows[str(user_id)]].tolist()))


def fit(catalog: Catalog, embeddings: ItemEmbeddings, interactions: Any,
        config: MixrecConfig | str | os.PathLike | None = None, *, calibrate: str = "fast",
        progress: bool = False, feature_weights: FeatureWeights | None = None,
        **overrides: Any) -> "MixrecModel":
    """Train mixrec on ``catalog`` + ``embeddings`` (``encode_items``) + ``interactions``.

    ``interactions``: a list of ``Interaction`` or rows that ``tools.api.interactions`` accepts
    (validated against the catalog and the config's event types). ``overrides`` are config fields as
    keywords (``no_components=64, epochs=10, codebook_size=32``; ``resolve_config``), validated by the
    config's pydantic models; no environment variable applies. ``feature_weights``: LightFM feature
    group weights (default: fusion.features.FeatureWeights, identity weight chosen from the data).
    ``calibrate``: ``fast`` (default) / ``full`` choose the fusion settings on a validation split of
    these interactions and refit on all of them (fusion/calibration.py, as ``mixrec train``);
    ``off`` trains the configured settings as given. What was chosen: ``MixrecModel.calibration``."""
    if calibrate not in CALIBRATION_MODES:
        raise DataError(f"calibrate must be one of {', '.join(CALIBRATION_MODES)}, got {shown(calibrate)}")
    if feature_weights is not None and calibrate != "off":
        raise DataError("feature_weights fixes what calibration chooses: pass calibrate='off' with it")
    cfg = resolve_config(config, **overrides)
    rows = (list(interactions) if _all_records(interactions)
            else validate_interactions(interactions, catalog, events=cfg.events))
    missing = set(catalog.item_ids) - set(embeddings.item_ids)
    if missing:
        raise DataError(f"embeddings lack {len(missing)} catalog item(s), e.g. {shown(sorted(missing)[0])}: "
                        "encode the same catalog (encode_items)")
    items, emb = list(catalog.items), embeddings.subset(catalog.item_ids)
    if feature_weights is not None:
        model = HybridModel.train(items, emb, rows, cfg, progress=progress, weights=feature_weights)
        return MixrecModel(model, cfg)
    model, report = train_model(items, emb, rows, cfg, calibrate=calibrate, progress=progress)
    return MixrecModel(model, cfg, report.as_dict())


def _all_records(rows: Any) -> bool:
    return isinstance(rows, (list, tuple)) and bool(rows) and all(isinstance(r, Interaction) for r in rows)


class MixrecModel:
    """A trained model (``fit``, ``load``): batch scoring and top-k, saving, the BentoML model store."""

    def __init__(self, hybrid: HybridModel, config: MixrecConfig | None = None,
                 calibration: dict | None = None) -> None:
        self.hybrid = hybrid
        self.config = config
        # What calibration chose and its validation figures (CalibrationReport.as_dict), None if off.
        self.calibration = calibration

    # ------------------------------------------------------------------ reading
    @property
    def users(self) -> list[str]:
        """Users the model holds a vector for."""
        return self.hybrid.known_users()

    @property
    def item_ids(self) -> list[str]:
        """The catalogue's items (deleted ones, not yet compacted away, left out)."""
        snap = self.hybrid.snapshot
        ids = snap.item_ids
        return list(ids) if snap.alive is None else [ids[r] for r in np.flatnonzero(snap.alive).tolist()]

    def scores(self, users: Iterable[str | int], *, liked: Mapping[str, Sequence[str]] | None = None,
               fallback: Fallback = "popularity") -> ScoreTable:
        """Every item's score for each user (higher is better); paths as in the module docstring."""
        snap = self.hybrid.snapshot
        ids = [str(u) for u in users]
        values = np.empty((len(ids), len(snap.item_ids)), np.float64)
        sources: list[Source] = []
        step = _block(snap)
        for start in range(0, len(ids), step):
            block, src = self._score_block(snap, ids[start:start + step], _liked(liked), fallback)
            values[start:start + len(block)] = block
            sources += src
        if snap.alive is not None:  # deleted items' rows (tombstones) are no columns of the table
            live = np.flatnonzero(snap.alive)
            return ScoreTable(ids, [snap.item_ids[r] for r in live.tolist()], values[:, live], sources)
        return ScoreTable(ids, list(snap.item_ids), values, sources)

    def top_k(self, users: Iterable[str | int], k: int = 10, *, exclude_seen: bool = True,
              types: Sequence[str] | None = None, liked: Mapping[str, Sequence[str]] | None = None,
              fallback: Fallback = "popularity") -> dict[str, UserTopK]:
        """The ``k`` best items per user, keyed by user id. ``exclude_seen`` leaves out items the user
        interacted with in training (and the ``liked`` ones); ``types`` keeps only those item types."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {shown(k)}")
        snap = self.hybrid.snapshot
        barred = self._type_barred(snap, types)
        if snap.alive is not None:
            barred = barred | ~snap.alive
        ids = [str(u) for u in users]
        liked = _liked(liked)
        out: dict[str, UserTopK] = {}
        step = _block(snap)
        for start in range(0, len(ids), step):
            part = ids[start:start + step]
            block, src = self._score_block(snap, part, liked, fallback)
            # Rows a user may not get score -inf, which top_k never picks (cheaper than a row list per user).
            block[:, barred] = -np.inf
            if exclude_seen:
                for r, uid in enumerate(part):
                    block[r, _seen(snap, uid)] = -np.inf
                    if uid in liked:
                        block[r, [snap.item_index[i] for i in liked[uid]]] = -np.inf
            for r, uid in enumerate(part):
                top = top_k(block[r], k)
                out[uid] = UserTopK(uid, src[r], [Pick(snap.item_ids[j], float(block[r, j]), str(snap.item_types[j]))
                                                  for j in top])
        return out

    def _type_barred(self, snap: Snapshot, types: Sequence[str] | None) -> np.ndarray:
        """Bool mask of the rows whose type is not in ``types`` (none barred without ``types``)."""
        if not types:
            return np.zeros(len(snap.item_ids), bool)
        check_types(types, "types", snap.type_names)
        return ~np.isin(snap.item_types, list(types))

    def _score_block(self, snap: Snapshot, users: list[str], liked: Mapping[str, Sequence[str]],
                     fallback: Fallback) -> tuple[np.ndarray, list[Source]]:
        """(len(users), N) scores over one snapshot, and the path each user took."""
        out = np.empty((len(users), len(snap.item_ids)), np.float64)  # popularity ties need float64
        sources: list[Source] = []
        known = [(r, snap.user_index[u]) for r, u in enumerate(users) if u in snap.user_index and u not in liked]
        if known:
            rows, urows = map(list, zip(*known))
            out[rows] = users_scores(snap, snap.user_repr[urows])
        h = self.hybrid
        for r, uid in enumerate(users):
            if uid in liked:
                items = liked[uid]
                _check_items(snap, uid, items)
                if uid in snap.user_index:
                    event = _positive_event(h.event_rules)
                    vec = fold_in(snap, uid, [FreshEvent(i, event) for i in items], h.event_rules,
                                  h.recency_half_life_days, h.item_title, prior=1.0).vector
                    out[r], src = users_scores(snap, vec[None, :])[0], "model+liked"
                else:
                    query = Query(liked_item_ids=tuple(items))
                    out[r], src = score_query(snap, h.codebook, h.space, h.blend_weights, query).scores, "liked_items"
            elif uid in snap.user_index:
                src = "model"
            elif fallback == "popularity":
                out[r], src = popularity_scores(snap), "popularity"
            else:
                raise UnknownUserError(f"unknown user {shown(uid)}: the model has no interactions of theirs; "
                                       "pass liked={user: [item ids]} or fallback='popularity'")
            sources.append(src)
        return out, sources

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> None:
        """The artifacts directory ``mixrec train --out`` writes (``serving.artifacts: <dir>``), with
        ``calibration.json`` as ``mixrec info`` reads it."""
        self.hybrid.save(directory)
        if self.calibration is not None:
            CalibrationReport(**self.calibration).save(directory)

    def save_to_model_store(self, name: str = HYBRID_MODEL_NAME, labels: dict | None = None) -> str:
        """Save into the BentoML model store; returns the exact tag (``mixrec-hybrid:<version>``) that
        ``serving.artifacts: bentoml:<tag>`` and ``build_bento`` name. The entry carries
        ``calibration.json`` too, as ``mixrec train --model-store`` writes it."""
        tag = self.hybrid.save_to_model_store(name, labels)
        if self.calibration is not None:
            CalibrationReport(**self.calibration).save(model_store_path(tag))
        return tag

    @classmethod
    def load(cls, artifacts: str | os.PathLike) -> "MixrecModel":
        """From a directory or ``bentoml:<tag>``, through the service's own loader."""
        from services.replica import load_trained_model

        where = str(artifacts)
        report_dir = model_store_path(where.removeprefix("bentoml:")) if where.startswith("bentoml:") else where
        return cls(load_trained_model(where), calibration=CalibrationReport.load(report_dir))



def _seen(snap: Snapshot, user_id: str) -> np.ndarray:
    """Item rows of the user's training positives (read off the CSR arrays: scipy row indexing costs
    ~0.5 ms a call, more than scoring the user)."""
    u = snap.user_index.get(user_id)
    if u is None:
        return np.zeros(0, np.int64)
    return snap.seen.indices[snap.seen.indptr[u]:snap.seen.indptr[u + 1]]


def _block(snap: Snapshot) -> int:
    return max(1, min(USER_BATCH, BLOCK_SCORES // max(len(snap.item_ids), 1)))


def _liked(liked: Mapping[Any, Sequence[Any]] | None) -> dict[str, list[str]]:
    """``liked`` with string ids (integer ids are accepted as elsewhere)."""
    out = {}
    for user, ids in (liked or {}).items():
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
            raise DataError(f"liked items of user {shown(user)}: expected a list of item ids, got {type(ids).__name__}")
        out[str(user)] = [str(i) for i in ids]
    return out


def _check_items(snap: Snapshot, user: str, items: Sequence[str]) -> None:
    unknown = [i for i in items if i not in snap.item_index]
    if unknown:
        raise DataError(f"liked items of user {shown(user)}: unknown item(s) {shown(unknown[0])}"
                        + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""))


def _positive_event(rules: Mapping[str, Any]) -> str:
    """The event type a liked item is folded in as: ``like`` when it is positive, else the first positive."""
    positive = [name for name, rule in rules.items() if rule.role == "positive"]
    return "like" if "like" in positive else positive[0]
