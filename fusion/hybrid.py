"""HybridModel: shared space + codebook tokens + LightFM, with cold start, explanations and updates.

Threading: every read (recommend, score_all, similar_items, user_interests, …)
takes one reference to an immutable ``_Snapshot`` and uses only it. Writers
(``add_items``, ``remove_items``, ``add_interactions``, ``fit_partial``,
``forget_user``) serialise on a lock, train on LightFM's own arrays, then
publish a new snapshot with one attribute assignment. So scoring can run while
a ``fit_partial`` is in progress; it sees the previous model until the swap.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Interaction, Item
from mixrec.config import FusionConfig, MixrecConfig, ModelConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.errors import NotFoundError, shown, shown_list
from mixrec.events import DEFAULT_RULES, signed_weight
from fusion import lightfm_state
from fusion.codebook import Codebook, SoftAssignment
from fusion.cold_items import ContentToCollab
from fusion.explain import explain
from fusion.interests import history_interests, labelled, query_interests, top_clusters
from fusion.features import (FeatureIndex, FeatureWeights, auto_identity_weight, combine, constant_groups, item_feature_groups,
                             rows_to_csr, user_feature_row)
from fusion.query import Query, QueryBlend, blend, cooccurrence_scores
from fusion.shared_space import SharedSpace, unit_rows


MAX_SAMPLE_WEIGHT = 5.0


class UnknownUserError(NotFoundError):
    """The model has no such user (404 when it reaches the service)."""


class UnknownItemError(NotFoundError):
    """The model has no such item (404 when it reaches the service)."""


@dataclass
class Recommendation:
    item_id: str
    score: float
    type: str
    explanation: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Snapshot:
    """Everything scoring needs, never mutated after publication."""

    item_ids: tuple[str, ...]
    item_types: np.ndarray  # (N,) str
    item_repr: np.ndarray  # (N, k) LightFM item representations
    item_bias: np.ndarray  # (N,)
    user_ids: tuple[str, ...]
    user_repr: np.ndarray  # (U, k)
    user_bias: np.ndarray  # (U,)
    user_feature_emb: np.ndarray  # (Fu, k) per-feature user embeddings, for query users
    user_feature_bias: np.ndarray  # (Fu,)
    user_cluster_cols: np.ndarray  # (K,) column of user feature c:<k>, -1 when absent
    seen: sp.csr_matrix  # (U, N) binary positives
    counts: np.ndarray  # (N,) positives per item
    fused: np.ndarray  # (N, D) shared-space vectors, zero rows for items with no content
    per_modality: dict  # modality -> (N, D) projections (zero where missing)
    masks: dict  # modality -> (N,) bool
    item_assign: SoftAssignment
    user_interest: np.ndarray  # (U, K) interest distribution from history
    item_index: dict  # item id -> row
    user_index: dict  # user id -> row
    user_trained: np.ndarray  # (U,) bool: the user's row was in the interaction matrix at the last training run


@dataclass(frozen=True)
class ScoredQuery:
    """One query scored over one snapshot (``HybridModel.score_query``)."""

    snapshot: _Snapshot
    scores: np.ndarray  # (N,) blended score per item row of ``snapshot``
    parts: dict  # component name -> (N,) scores (what the blend combined)
    liked: np.ndarray  # rows of the query's liked items
    interest: np.ndarray  # (K,) interest distribution of the query
    profile: np.ndarray | None  # unit shared-space taste vector, None without content


@dataclass(frozen=True)
class FreshEvent:
    """An event the model has not trained on yet (read from the database at request time)."""

    item_id: str
    event: str
    weight: float = 1.0
    timestamp: float = 0.0


@dataclass(frozen=True)
class FoldIn:
    """A user's trained vector combined with their fresh events (``HybridModel.fold_in``).

    ``vector`` is scored like any LightFM user vector (``HybridModel.user_scores``): exact or
    through the ANN indexes. ``base`` is the trained vector (None for a user the model never
    trained on); ``rows`` / ``weights`` / ``ages`` the fresh events the vector folded in (signed,
    recency-decayed weights summed per item; ``ages`` in seconds, of the newest event per item).
    """

    snapshot: "_Snapshot"
    user_id: str
    user_row: int | None
    vector: np.ndarray
    base: np.ndarray | None
    rows: np.ndarray
    weights: np.ndarray
    ages: np.ndarray
    events: tuple[str, ...]  # the newest event type per row
    titles: tuple[str, ...]

    @property
    def personalised(self) -> bool:
        """Whether anything about this user moved the vector (a trained row or a fresh event with weight)."""
        return self.base is not None or bool(np.any(self.weights != 0))


@dataclass(frozen=True)
class _ItemColumns:
    items: list  # the HybridModel.items list these were built from
    ids: tuple[str, ...]
    types: np.ndarray  # (N,) str, read-only
    index: dict  # item id -> row


class HybridModel:
    """Use ``HybridModel.train`` or ``HybridModel.load``; the constructor is internal."""

    def __init__(self, model_cfg: ModelConfig, fusion_cfg: FusionConfig, space: SharedSpace, codebook: Codebook,
                 weights: FeatureWeights, blend_weights: QueryBlend | None = None) -> None:
        self.model_cfg = model_cfg
        self.fusion_cfg = fusion_cfg
        self.space = space
        self.codebook = codebook
        self.weights = weights
        self.blend_weights = blend_weights or QueryBlend()
        self.items: list[Item] = []
        self.item_has_identity: list[bool] = []
        self.per_modality: dict[str, np.ndarray] = {m: np.zeros((0, space.dim), np.float32) for m in space.modalities}
        self.masks: dict[str, np.ndarray] = {m: np.zeros(0, bool) for m in space.modalities}
        self.fused = np.zeros((0, space.dim), np.float32)
        self.item_fidx = FeatureIndex()
        self.user_fidx = FeatureIndex()
        self.user_ids: list[str] = []
        self.positives: dict[str, dict[str, float]] = {}  # user -> item -> summed weight (> 0 only)
        self.pair_time: dict[str, dict[str, float]] = {}  # user -> item -> newest event timestamp (positives)
        self.trained_users: set[str] = set()  # users whose rows the last training runs saw
        # Recency (model.recency_half_life_days): an event this many days older than the user's
        # newest one trains at half weight; None = no decay. The serving config may override it.
        self.recency_half_life_days: float | None = model_cfg.recency_half_life_days
        self.event_rules = DEFAULT_RULES  # what each event type means (config ``events``); see mixrec/events.py
        self.constant_groups: set[str] = set()
        self.lfm = lightfm_state.new_lightfm(model_cfg)
        self.fit_seconds = 0.0
        self.cold_map: ContentToCollab | None = None
        self.cold_map_weight = 1.0  # 1: cold items use the predicted representation; 0: content features only
        self._item_cache: tuple | None = None
        self._columns_cache: _ItemColumns | None = None
        self._repr_cache: tuple | None = None  # (item_x, trained_version, cold_map, weight, item_repr, item_bias)
        self._trained_version = 0  # bumped whenever LightFM's item parameters may have changed
        self._lock = threading.RLock()
        self._snap: _Snapshot | None = None

    # ================================================================== training
    @classmethod
    def train(cls, items: list[Item], emb: ItemEmbeddings, interactions: list[Interaction], cfg: MixrecConfig,
              progress: bool = False, weights: FeatureWeights | None = None,
              epochs: int | None = None) -> "HybridModel":
        emb = _align(items, emb)
        space = SharedSpace.fit(emb, cfg.fusion)
        per = space.project_items(emb)
        masks = {m: (emb.masks[m].copy() if m in emb.masks else np.zeros(len(emb), bool)) for m in per}
        fused = space.fuse_projected(per, masks)
        has = np.linalg.norm(fused, axis=1) > 0
        codebook = Codebook.fit(fused[has], cfg.fusion.codebook_size, cfg.fusion.soft_top, cfg.fusion.temperature,
                                cfg.fusion.seed)
        codebook.build_labels(items, fused)
        model = cls(cfg.model, cfg.fusion, space, codebook, weights or FeatureWeights())
        model.event_rules = cfg.events
        model.constant_groups = constant_groups(items)
        model._append_items(items, per, masks, fused)
        model._ingest(interactions)
        if model.weights.identity is None:
            per_item = sum(len(r) for r in model.positives.values()) / max(
                len({i for r in model.positives.values() for i in r}), 1)
            model.weights = replace(model.weights, identity=auto_identity_weight(per_item))
        model._fit(epochs or cfg.model.epochs, progress)
        return model

    def _append_items(self, items: list[Item], per: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                      fused: np.ndarray) -> None:
        known = set(self._live_item_index())
        dup = [it.item_id for it in items if it.item_id in known]
        if dup or len({it.item_id for it in items}) != len(items):
            raise ValueError(f"duplicate item ids: {dup[:5] or 'within the batch'}")
        # New lists rather than in-place growth: callers may be iterating over the old ones.
        n_old = len(self.items)
        self.items = self.items + list(items)
        self.item_has_identity = self.item_has_identity + [False] * len(items)
        for m in self.per_modality:
            self.per_modality[m] = np.concatenate([self.per_modality[m], per[m]])
            self.masks[m] = np.concatenate([self.masks[m], masks[m]])
        self.fused = np.concatenate([self.fused, fused])
        self._extend_columns(n_old)
        self._extend_item_state(n_old)

    def _ingest(self, interactions: Iterable[Interaction]) -> set[str]:
        index = self._live_item_index()
        touched = set()
        for r in interactions:
            if r.item_id not in index:
                raise UnknownItemError(f"interaction for unknown item {shown(r.item_id)}")
            signed = signed_weight(self.event_rules, r.event, r.weight)
            if signed == 0:  # a "seen" event, an unknown type or zero weight: nothing to learn
                continue
            if r.user_id not in self.positives:
                self.positives[r.user_id] = {}
                self.user_ids.append(r.user_id)
            row = self.positives[r.user_id]
            times = self.pair_time.setdefault(r.user_id, {})
            w = row.get(r.item_id, 0.0) + signed
            if w > 0:
                row[r.item_id] = w
                times[r.item_id] = max(times.get(r.item_id, 0.0), float(r.timestamp))
            else:  # net-negative feedback (a dislike) removes the positive: it never counts as a like
                row.pop(r.item_id, None)
                times.pop(r.item_id, None)
            touched.add(r.user_id)
        return touched

    def _interaction_matrix(self) -> sp.coo_matrix:
        index = self._live_item_index()
        rows, cols, vals = [], [], []
        half_life = self.recency_half_life_days
        for u, uid in enumerate(self.user_ids):
            pos = self.positives[uid]
            if half_life and pos:
                times = self.pair_time.get(uid, {})
                newest = max(times.values(), default=0.0)
                decay = {iid: recency_decay(newest - times.get(iid, newest), half_life) for iid in pos}
            else:
                decay = None
            for iid, w in pos.items():
                rows.append(u)
                cols.append(index[iid])
                vals.append(w * decay[iid] if decay is not None else w)
        return sp.coo_matrix((np.asarray(vals, np.float32), (np.asarray(rows, np.int32), np.asarray(cols, np.int32))),
                             shape=(len(self.user_ids), len(self.items)))

    def _item_features(self, assign: SoftAssignment, identity: Sequence[bool] | None = None,
                       rows: Sequence[int] | None = None) -> sp.csr_matrix:
        """Feature rows of items ``rows`` (default all; ``assign`` holds one row per entry of ``rows``);
        ``identity`` overrides which items get their id feature (content-only rows)."""
        identity = self.item_has_identity if identity is None else identity
        rows = range(len(self.items)) if rows is None else rows
        reserve_cold = ("identity",) if self.weights.cold_keeps_scale else ()
        feats = [combine(item_feature_groups(self.items[i], identity[i], assign.clusters[n], assign.weights[n],
                                             self.constant_groups), self.weights,
                         reserve=() if identity[i] else reserve_cold)
                 for n, i in enumerate(rows)]
        return rows_to_csr(feats, self.item_fidx)

    # Item rows depend only on the item itself (and the fixed codebook, weights and constant groups),
    # so writers patch the cached state instead of rebuilding a million rows in Python.
    def _extend_item_state(self, n_old: int) -> None:
        """Append the state of items ``n_old:`` (just added) to the cache."""
        if self._item_cache is None:
            return
        assign, tokens, item_x = self._item_cache
        new = self.fused[n_old:]
        a_new, t_new = self.codebook.assign(new), self.codebook.assign(new, top=tokens.clusters.shape[1])
        x_new = self._item_features(t_new, rows=range(n_old, len(self.items)))
        grown = sp.vstack([_widen(item_x, x_new.shape[1]), x_new], format="csr")
        self._item_cache = (_concat_assign(assign, a_new), _concat_assign(tokens, t_new), grown)
        cached = self._repr_cache
        if cached is not None and cached[0] is item_x:  # old rows unchanged: represent only the new ones
            first_new = cached[6] if len(cached) == 7 else n_old
            self._repr_cache = (grown, *cached[1:6], first_new)


    def _keep_item_state(self, keep: np.ndarray) -> None:
        """Keep only rows ``keep`` (bool mask) of the cached state (items removed)."""
        if self._item_cache is None:
            return
        assign, tokens, item_x = self._item_cache
        self._item_cache = (SoftAssignment(assign.clusters[keep], assign.weights[keep]),
                            SoftAssignment(tokens.clusters[keep], tokens.weights[keep]), item_x[keep])

    def _rebuild_item_rows(self, changed: Sequence[int]) -> None:
        """Recompute the feature rows of items ``changed`` (their identity flag flipped)."""
        if self._item_cache is None:
            return
        assign, tokens, item_x = self._item_cache
        changed = np.asarray(changed, np.int64)
        sub = SoftAssignment(tokens.clusters[changed], tokens.weights[changed])
        x_new = self._item_features(sub, rows=changed)
        # Row gather over [old rows; new rows] keeps each row's column order (a full rebuild's),
        # so scores match a rebuilt (e.g. reloaded) model bit for bit.
        n = item_x.shape[0]
        order = np.arange(n)
        order[changed] = n + np.arange(len(changed))
        item_x = sp.vstack([_widen(item_x, x_new.shape[1]), x_new], format="csr")[order]
        self._item_cache = (assign, tokens, item_x)

    def _item_state(self) -> tuple[SoftAssignment, SoftAssignment, sp.csr_matrix]:
        """(full soft assignment, LightFM tokens, item feature matrix), built once and then patched
        by writers (``_extend_item_state`` / ``_keep_item_state`` / ``_rebuild_item_rows``)."""
        if self._item_cache is None:
            assign = self.codebook.assign(self.fused)
            # LightFM sees at most item_tokens clusters per item (its cost grows with non-zeros);
            # interests and explanations use the full soft assignment.
            tokens = self.codebook.assign(self.fused, top=min(self.codebook.top, self.weights.item_tokens))
            self._item_cache = (assign, tokens, self._item_features(tokens))
        return self._item_cache

    def _fit_cold_map(self, content_x: sp.csr_matrix, item_x: sp.csr_matrix, counts: np.ndarray) -> None:
        """Learn content -> full LightFM representation on warm items (see fusion.cold_items)."""
        warm = np.asarray(self.item_has_identity, bool) & (counts > 0)
        if not lightfm_state.is_initialised(self.lfm):
            return
        lfm = self.lfm
        x = ContentToCollab.inputs(self.fused, content_x @ lfm.item_embeddings, content_x @ lfm.item_biases)
        target = np.hstack([item_x @ lfm.item_embeddings, (item_x @ lfm.item_biases)[:, None]])
        self.cold_map = ContentToCollab.fit(x[warm], target[warm], counts[warm])

    def _user_features(self, interest: np.ndarray) -> sp.csr_matrix:
        top = top_clusters(interest, self.codebook.top)
        rows = [user_feature_row(uid, top, self.weights, row=u) for u, uid in enumerate(self.user_ids)]
        return rows_to_csr(rows, self.user_fidx)

    def _fit(self, epochs: int, progress: bool) -> None:
        with self._lock:
            inter = self._interaction_matrix().tocsr()
            if epochs > 0:
                # Items with feedback get (and keep) an identity feature when training can learn it;
                # until then a new item is scored from content alone, at full content weight.
                counts = np.asarray((inter > 0).sum(axis=0)).ravel()
                fresh = [i for i in np.flatnonzero(counts > 0) if not self.item_has_identity[i]]
                if fresh:
                    flags = list(self.item_has_identity)
                    for i in fresh:
                        flags[i] = True
                    self.item_has_identity = flags
                    self._rebuild_item_rows(fresh)
            assign, tokens, item_x = self._item_state()
            interest = history_interests(inter, assign, self.codebook.size)
            user_x = self._user_features(interest)
            lightfm_state.grow(self.lfm, item_x.shape[1], user_x.shape[1])
            coo = inter.tocoo()
            ones = sp.coo_matrix((np.ones_like(coo.data), (coo.row, coo.col)), shape=coo.shape)
            # Event weights (summed per pair) scale LightFM's updates; capped so a burst of repeated
            # events on one pair cannot blow up a step.
            weights = sp.coo_matrix((np.minimum(coo.data, MAX_SAMPLE_WEIGHT), (coo.row, coo.col)), shape=coo.shape)
            t0 = time.perf_counter()
            if epochs > 0 and coo.nnz:
                self._trained_version += 1
                self._run_epochs(ones, weights, user_x, item_x, epochs, progress)
                self.trained_users = self.trained_users | {self.user_ids[u] for u in np.unique(coo.row)}
                content_x = self._item_features(tokens, identity=[False] * len(self.items))
                content_x.resize(item_x.shape)  # same columns: content rows never add a feature
                self._fit_cold_map(content_x, item_x, np.asarray(inter.getnnz(axis=0)))
            self.fit_seconds += time.perf_counter() - t0
            self._publish(inter, assign, item_x, user_x, interest)

    def _run_epochs(self, ones, weights, user_x, item_x, epochs: int, progress: bool) -> None:
        threads = self.model_cfg.num_threads
        if not progress:
            self.lfm.fit_partial(ones, user_features=user_x, item_features=item_x, sample_weight=weights,
                                 epochs=epochs, num_threads=threads)
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("training LightFM", total=epochs)
            for _ in range(epochs):
                self.lfm.fit_partial(ones, user_features=user_x, item_features=item_x, sample_weight=weights,
                                     epochs=1, num_threads=threads)
                bar.advance(task)

    def _publish(self, inter: sp.csr_matrix, assign: SoftAssignment, item_x: sp.csr_matrix, user_x: sp.csr_matrix,
                 interest: np.ndarray) -> None:
        lfm = self.lfm
        k = self.model_cfg.no_components
        if lightfm_state.is_initialised(lfm):
            # LightFM's arrays are trained in place: copy what readers need.
            user_emb, user_b = lfm.user_embeddings.copy(), lfm.user_biases.copy()
            item_repr, item_bias = self._item_representations(item_x)
            user_repr, user_bias = user_x @ user_emb, user_x @ user_b
        else:  # never trained (no interactions): content/popularity paths still work
            item_repr, item_bias = np.zeros((item_x.shape[0], k), np.float32), np.zeros(item_x.shape[0], np.float32)
            user_repr, user_bias = np.zeros((user_x.shape[0], k), np.float32), np.zeros(user_x.shape[0], np.float32)
            user_emb, user_b = np.zeros((user_x.shape[1], k), np.float32), np.zeros(user_x.shape[1], np.float32)
        seen = inter.copy().tocsr()
        seen.data = np.ones_like(seen.data, dtype=np.float32)
        cluster_cols = np.array([self.user_fidx.col(f"c:{c}") if f"c:{c}" in self.user_fidx else -1
                                 for c in range(self.codebook.size)], np.int64)
        cols = self._columns()
        # Item content arrays are shared with the model, not copied: writers replace them (never
        # write in place), and read-only flags turn any accidental in-place write into an error.
        for arr in (self.fused, *self.per_modality.values(), *self.masks.values()):
            arr.flags.writeable = False
        self._snap = _Snapshot(
            item_ids=cols.ids, item_types=cols.types,
            item_repr=item_repr, item_bias=item_bias,
            user_ids=tuple(self.user_ids), user_repr=np.asarray(user_repr, np.float32),
            user_bias=np.asarray(user_bias, np.float32), user_feature_emb=np.asarray(user_emb, np.float32),
            user_feature_bias=np.asarray(user_b, np.float32), user_cluster_cols=cluster_cols, seen=seen,
            counts=np.asarray(seen.sum(axis=0)).ravel().astype(np.float32), fused=self.fused,
            per_modality=dict(self.per_modality), masks=dict(self.masks), item_assign=assign, user_interest=interest,
            item_index=cols.index, user_index={uid: u for u, uid in enumerate(self.user_ids)},
            user_trained=np.array([uid in self.trained_users for uid in self.user_ids], bool))
        self._item_x, self._user_x = item_x, user_x

    def _item_representations(self, item_x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """LightFM item representations and biases (cold items mapped from content), read-only;
        reused while the item rows, LightFM's item parameters and the cold map are unchanged
        (recording feedback changes none of them)."""
        key = (item_x, self._trained_version, self.cold_map, self.cold_map_weight)
        cached = self._repr_cache
        start = 0
        if cached is not None and cached[0] is item_x and cached[1] == key[1] and cached[2] is key[2] \
                and cached[3] == key[3]:
            if len(cached) == 6:
                return cached[4], cached[5]
            start = cached[6]  # items appended since: rows start: onwards are new
        lfm = self.lfm
        rows = item_x[start:] if start else item_x
        item_repr = np.asarray(rows @ lfm.item_embeddings, np.float32)
        item_bias = np.asarray(rows @ lfm.item_biases, np.float32)
        cold = ~np.asarray(self.item_has_identity[start:], bool)
        if self.cold_map is not None and cold.any() and self.cold_map_weight > 0:
            # Items never trained on: move them to where warm items with similar content live.
            x = ContentToCollab.inputs(self.fused[start:][cold], item_repr[cold], item_bias[cold])
            pred_repr, pred_bias = self.cold_map.predict(x)
            a = self.cold_map_weight
            item_repr[cold] = a * pred_repr + (1 - a) * item_repr[cold]
            item_bias[cold] = a * pred_bias + (1 - a) * item_bias[cold]
        if start:
            item_repr = np.concatenate([cached[4], item_repr])
            item_bias = np.concatenate([cached[5], item_bias])
        item_repr.flags.writeable = False
        item_bias.flags.writeable = False
        self._repr_cache = (*key, item_repr, item_bias)
        return item_repr, item_bias

    # ================================================================== updates
    def add_items(self, items: list[Item], emb: ItemEmbeddings) -> None:
        """New items, content only: scorable at once (their feature rows hold no identity)."""
        if not items:
            return
        emb = _align(items, emb)
        per = self.space.project_items(emb)
        masks = {m: (emb.masks[m].copy() if m in emb.masks else np.zeros(len(emb), bool)) for m in per}
        with self._lock:
            self._append_items(items, per, masks, self.space.fuse_projected(per, masks))
            self._refresh()

    def remove_items(self, item_ids: Sequence[str]) -> None:
        with self._lock:
            drop = set(item_ids)
            unknown = drop - set(self._live_item_index())
            if unknown:
                raise UnknownItemError(f"unknown item ids: {shown_list(sorted(unknown))}")
            keep = np.array([it.item_id not in drop for it in self.items])
            self.items = [it for it, k in zip(self.items, keep) if k]
            self.item_has_identity = [h for h, k in zip(self.item_has_identity, keep) if k]
            self.per_modality = {m: v[keep] for m, v in self.per_modality.items()}
            self.masks = {m: v[keep] for m, v in self.masks.items()}
            self.fused = self.fused[keep]
            self._keep_item_state(keep)
            for table in (self.positives, self.pair_time):
                for row in table.values():
                    for iid in drop & row.keys():
                        del row[iid]
            self._refresh()

    def add_interactions(self, interactions: Iterable[Interaction]) -> None:
        """Record feedback. Seen-items and interest tokens update at once; embeddings at ``fit_partial``."""
        with self._lock:
            self._ingest(list(interactions))
            self._refresh()

    def fit_partial(self, epochs: int = 1, progress: bool = False) -> None:
        self._fit(epochs, progress)

    def forget_user(self, user_id: str) -> None:
        """Drop a user's interactions and erase what the model learned for their identity."""
        with self._lock:
            if user_id not in self.positives:
                raise UnknownUserError(f"unknown user {shown(user_id)}")
            del self.positives[user_id]
            self.pair_time.pop(user_id, None)
            self.trained_users = self.trained_users - {user_id}
            self.user_ids.remove(user_id)
            col = self.user_fidx.col(f"u:{user_id}")
            if col is not None:
                lightfm_state.clear_rows(self.lfm, "user", [col])
            self._refresh()

    def _refresh(self) -> None:
        self._fit(0, False)

    # ================================================================== reading
    @property
    def snapshot(self) -> _Snapshot:
        return self._snap

    def item_ids(self) -> list[str]:
        return list(self._snap.item_ids)

    def item_index(self) -> dict[str, int]:
        """Item id -> row of ``score_all`` (the published snapshot's; do not mutate)."""
        return self._snap.item_index

    def _live_item_index(self) -> dict[str, int]:
        return self._columns().index

    def _extend_columns(self, n_old: int) -> None:
        """Columns of ``self.items`` from the previous list's (C-speed copies, no per-item Python)."""
        old = self._columns_cache
        if old is None or len(old.ids) != n_old:
            return
        added = self.items[n_old:]
        ids = old.ids + tuple(it.item_id for it in added)
        types = np.concatenate([old.types, np.array([it.type for it in added])])
        types.flags.writeable = False
        index = dict(old.index)
        index.update((iid, n_old + i) for i, iid in enumerate(ids[n_old:]))
        self._columns_cache = _ItemColumns(self.items, ids, types, index)

    def _columns(self) -> "_ItemColumns":
        """Ids, types and id -> row of ``self.items``, built once per items list (writers replace
        the list, never mutate it), so feedback and snapshots do not rebuild them per call."""
        cols = self._columns_cache
        if cols is None or cols.items is not self.items:
            ids = tuple(it.item_id for it in self.items)
            types = np.array([it.type for it in self.items])
            types.flags.writeable = False
            cols = self._columns_cache = _ItemColumns(self.items, ids, types, {iid: i for i, iid in enumerate(ids)})
        return cols

    def known_users(self) -> list[str]:
        return list(self._snap.user_ids)

    def item_vectors(self, space: str = "lightfm") -> tuple[list[str], np.ndarray]:
        """Item vectors for ANN: ``lightfm`` -> [repr, bias] so a dot with [user, 1] is the score;
        ``shared`` -> unit shared-space vectors."""
        snap = self._snap
        if space == "shared":
            return list(snap.item_ids), snap.fused.copy()
        return list(snap.item_ids), np.hstack([snap.item_repr, snap.item_bias[:, None]])

    def _user_row(self, snap: _Snapshot, user_id: str) -> int:
        row = snap.user_index.get(user_id)
        if row is None:
            raise UnknownUserError(f"unknown user {shown(user_id)}")
        return row

    def score_all(self, who: str | Query) -> np.ndarray:
        """Scores over ``item_ids()`` (higher is better) for a known user id or a query."""
        snap = self._snap
        if isinstance(who, Query):
            return self._query_scores(snap, who)[0]
        u = self._user_row(snap, who)
        return user_scores(snap, snap.user_repr[u])

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True,
                  candidates: np.ndarray | None = None) -> list[Recommendation]:
        snap = self._snap
        u = self._user_row(snap, user_id)
        scores = user_scores(snap, snap.user_repr[u])
        exclude = snap.seen[u].indices if exclude_seen else np.zeros(0, np.int64)
        top = _top_k(scores, k, exclude, candidates)
        return self._recommendations(snap, top, scores[top], self.explain_rows(user_id, top, scores[top], snapshot=snap))

    def recommend_for_query(self, query: Query, k: int = 10, exclude_liked: bool = True,
                            candidates: np.ndarray | None = None) -> list[Recommendation]:
        scored = self.score_query(query)
        exclude = scored.liked if exclude_liked else np.zeros(0, np.int64)
        top = _top_k(scored.scores, k, exclude, candidates)
        return self._recommendations(scored.snapshot, top, scored.scores[top], self.explain_rows(scored, top))

    @staticmethod
    def _recommendations(snap: _Snapshot, rows: np.ndarray, scores: np.ndarray,
                         explanations: list[dict]) -> list[Recommendation]:
        return [Recommendation(snap.item_ids[j], float(s), str(snap.item_types[j]), e)
                for j, s, e in zip(rows, scores, explanations)]

    def score_query(self, query: Query) -> "ScoredQuery":
        """Score a query once over the current snapshot; rank on ``.scores`` and pass the result to
        ``explain_rows`` to explain the chosen rows without scoring again."""
        snap = self._snap
        scores, parts, liked, interest, profile = self._query_scores(snap, query)
        return ScoredQuery(snap, scores, parts, liked, interest, profile)

    def explain_rows(self, who: "str | Query | ScoredQuery", rows: np.ndarray, scores: np.ndarray | None = None, *,
                     snapshot: _Snapshot | None = None) -> list[dict]:
        """Explanation dicts (as in ``recommend``) for item ``rows`` of ``snapshot`` (default: the current one).

        ``who`` is a known user id, a query (scored here), or a ``score_query`` result (not scored
        again; its snapshot is used). ``scores``: the user's scores at ``rows`` when already computed
        (only for a user id; query explanations carry every score component)."""
        rows = np.asarray(rows, np.int64)
        if isinstance(who, Query):
            who = self.score_query(who)
        if isinstance(who, ScoredQuery):
            snap = who.snapshot
            parts = {n: np.asarray(v)[rows] for n, v in who.parts.items()}
            return [explain(snap, self.codebook, self.space, int(j), who.interest, who.profile, who.liked,
                            {n: float(v[i]) for n, v in parts.items()}) for i, j in enumerate(rows)]
        if isinstance(who, FoldIn):
            return self._explain_fold_in(who, rows, scores)
        snap = snapshot or self._snap
        u = self._user_row(snap, who)
        if scores is None:
            scores = user_scores(snap, snap.user_repr[u], rows)
        liked = snap.seen[u].indices
        profile = _profile(snap, liked, None)
        interest = snap.user_interest[u]
        return [explain(snap, self.codebook, self.space, int(j), interest, profile, liked, {"lightfm": float(s)})
                for j, s in zip(rows, scores)]

    def _explain_fold_in(self, fold: "FoldIn", rows: np.ndarray, scores: np.ndarray | None) -> list[dict]:
        """Explanations for a folded-in user: the trained history and the fresh events both count as
        liked items; a fresh event is named with its age, and ``components.fresh_events`` is how much
        the fresh events moved this item's score."""
        snap = fold.snapshot
        if scores is None:
            scores = user_scores(snap, fold.vector, rows)
        history = snap.seen[fold.user_row].indices if fold.user_row is not None else np.zeros(0, np.int32)
        pos = fold.weights > 0
        liked = np.unique(np.concatenate([np.asarray(history, np.int64), fold.rows[pos]]))
        fresh = {int(r): {"event": e, "seconds_ago": float(a), "title": t}
                 for r, w, a, e, t in zip(fold.rows, fold.weights, fold.ages, fold.events, fold.titles) if w > 0}
        trained = fold.base if fold.base is not None else np.zeros_like(fold.vector)
        moved = snap.item_repr[rows] @ (fold.vector - trained)
        if len(liked):
            interest = history_interests(sp.csr_matrix((np.ones(len(liked)), (np.zeros(len(liked), np.int64), liked)),
                                                       shape=(1, len(snap.item_ids))), snap.item_assign,
                                         self.codebook.size)[0]
        else:
            interest = snap.user_interest[fold.user_row] if fold.user_row is not None else np.zeros(self.codebook.size)
        profile = _profile(snap, liked, None)
        return [explain(snap, self.codebook, self.space, int(j), interest, profile, liked,
                        {"lightfm": float(s), "fresh_events": float(m)}, fresh=fresh)
                for j, s, m in zip(rows, scores, moved)]

    def fold_in(self, user_id: str, fresh: Sequence[FreshEvent], now: float | None = None,
                prior: float = 1.0) -> FoldIn:
        """The user's vector with ``fresh`` events (not trained on yet) folded in, over the current snapshot.

        Positive events pull the vector toward the neighbour fold-in of the items (the overlap-
        weighted mean of the vectors of users who liked them: ``recommend_by_query``'s path for
        liked items); the mix is ``a = W / (W + prior)`` with ``W`` the fresh positive weight, so
        ``prior`` is how many fresh likes weigh as much as the trained vector (a user with no
        trained vector is served from the fresh events alone). Negative events push the vector
        away from the disliked items' representations, which lowers those items and their close
        neighbours. Every weight is the event rule's signed weight times the recency decay
        (``recency_half_life_days``, age measured from ``now``).
        """
        snap = self._snap
        now = time.time() if now is None else float(now)
        u = snap.user_index.get(user_id)
        base = snap.user_repr[u] if u is not None and snap.user_trained[u] else None
        index = snap.item_index
        agg: dict[int, list] = {}  # row -> [signed weight, age of newest, newest event type, newest ts]
        for ev in fresh:
            j = index.get(ev.item_id)
            if j is None:
                continue
            age = max(now - float(ev.timestamp), 0.0)
            w = signed_weight(self.event_rules, ev.event, ev.weight) * recency_decay(age, self.recency_half_life_days)
            cur = agg.get(j)
            if cur is None:
                agg[j] = [w, age, ev.event, float(ev.timestamp)]
            else:
                cur[0] += w
                if float(ev.timestamp) >= cur[3]:
                    cur[1:] = [age, ev.event, float(ev.timestamp)]
        rows = np.fromiter(agg, np.int64, len(agg))
        weights = np.array([v[0] for v in agg.values()], np.float64)
        ages = np.array([v[1] for v in agg.values()], np.float64)
        events = tuple(v[2] for v in agg.values())
        cols = self._columns()
        titles = tuple(self.items[cols.index[snap.item_ids[j]]].title if snap.item_ids[j] in cols.index else
                       snap.item_ids[j] for j in rows)
        k = snap.item_repr.shape[1]
        vector = np.zeros(k, np.float32) if base is None else np.asarray(base, np.float32)
        pos = weights > 0
        if pos.any():
            pulled = _neighbour_vector(snap, rows[pos], weights[pos])
            if pulled is not None:
                total = float(weights[pos].sum())
                a = 1.0 if base is None else total / (total + max(prior, 1e-9))
                vector = (1.0 - a) * vector + a * pulled
        neg = weights < 0
        if neg.any():
            reps = snap.item_repr[rows[neg]]
            units = reps / np.maximum(np.linalg.norm(reps, axis=1, keepdims=True), 1e-12)
            scale = max(float(np.linalg.norm(vector)), float(np.mean(np.linalg.norm(reps, axis=1))), 1e-6)
            vector = vector - NEGATIVE_PUSH * scale * (-weights[neg]) @ units
        return FoldIn(snap, user_id, u, np.asarray(vector, np.float32), base, rows, weights, ages, events, titles)

    def query_components(self, query: Query) -> dict[str, np.ndarray]:
        return self._query_scores(self._snap, query)[1]

    def _liked_rows(self, snap: _Snapshot, ids: Sequence[str]) -> np.ndarray:
        index = snap.item_index
        missing = [i for i in ids if i not in index]
        if missing:
            raise UnknownItemError(f"unknown liked item ids: {shown_list(missing)}")
        return np.array([index[i] for i in ids], np.int64)

    def query_interest(self, snap: _Snapshot, query: Query) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(interest distribution, shared-space query vector or None, liked item rows)."""
        liked = self._liked_rows(snap, query.liked_item_ids)
        qvec = self.space.fuse_query(query.vectors()) if query.vectors() else None
        return query_interests(self.codebook, snap.item_assign, qvec, liked), qvec, liked

    def _query_scores(self, snap: _Snapshot, query: Query):
        if query.is_empty():
            raise ValueError("empty query: give at least one vector or liked item id")
        interest, qvec, liked = self.query_interest(snap, query)
        profile = _profile(snap, liked, qvec)
        seeds = _seed_weights(snap, liked, qvec)
        parts: dict[str, np.ndarray] = {"popularity": np.log1p(snap.counts)}
        top = top_clusters(interest[None, :], self.codebook.top)
        cols = snap.user_cluster_cols[top.clusters[0]]
        w = top.weights[0] * (cols >= 0)
        if w.sum() > 0:  # only when users carry interest-token features (FeatureWeights.user_interests)
            u = (w[:, None] * snap.user_feature_emb[np.maximum(cols, 0)]).sum(axis=0) / w.sum()
            parts["lightfm"] = user_scores(snap, u)
        if seeds is not None:
            idx, sw = seeds
            parts["liked"] = snap.item_repr @ (sw @ snap.item_repr[idx] / sw.sum())
            u = _neighbour_vector(snap, idx, sw)
            if u is not None:
                parts["neighbours"] = user_scores(snap, u)
            parts["cooccurrence"], parts["association"] = cooccurrence_scores(snap.seen, idx, snap.counts, sw)
        if profile is not None:
            # Sharpened cosine (softmax-like, at the codebook temperature): after standardising, a
            # near-exact match stands out from the rest of its category instead of tying with it.
            sims = snap.fused @ profile
            parts["content"] = np.exp((sims - sims.max()) / self.codebook.temperature)
        return blend(parts, self.blend_weights.for_query(len(liked) > 0)), parts, liked, interest, profile

    def similar_items(self, item_id: str, k: int = 10, types: Sequence[str] | None = None,
                      space: str = "blend") -> list[Recommendation]:
        """Nearest items by shared-space cosine, LightFM-representation cosine, or their mean (``blend``)."""
        snap = self._snap
        index = snap.item_index
        if item_id not in index:
            raise UnknownItemError(f"unknown item {shown(item_id)}")
        j = index[item_id]
        content = snap.fused @ snap.fused[j]
        reps = unit_rows(snap.item_repr)
        collab = reps @ reps[j]
        has_content = np.linalg.norm(snap.fused[j]) > 0
        if space == "shared" or (space == "blend" and np.linalg.norm(reps[j]) == 0):
            scores = content
        elif space == "lightfm" or not has_content:
            scores = collab
        else:
            scores = 0.5 * (content + collab)
        cand = None
        if types:
            cand = np.flatnonzero(np.isin(snap.item_types, list(types)))
        top = _top_k(scores, k, np.array([j]), cand)
        return [Recommendation(snap.item_ids[i], float(scores[i]), str(snap.item_types[i]),
                               {"similar_to": item_id, "content_similarity": float(content[i]),
                                "collaborative_similarity": float(collab[i])})
                for i in top]

    def user_interests(self, who: "str | Query | ScoredQuery", top: int | None = None) -> list[tuple[int, str, float]]:
        """(cluster id, label, probability) sorted by probability, from history or from a query."""
        snap = self._snap
        if isinstance(who, ScoredQuery):
            dist = who.interest
        elif isinstance(who, Query):
            dist = self.query_interest(snap, who)[0]
        else:
            dist = snap.user_interest[self._user_row(snap, who)]
        return labelled(dist, self.codebook.labels, top)

    # ================================================================== persistence
    def save(self, directory) -> None:
        from fusion.artifacts import save_model

        save_model(self, directory)

    @classmethod
    def load(cls, directory, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
        from fusion.artifacts import load_model

        return load_model(directory, expected_encoders)

    def save_to_model_store(self, name: str = "mixrec-hybrid", labels: dict | None = None) -> str:
        from fusion.artifacts import save_to_model_store

        return save_to_model_store(self, name, labels)

    @classmethod
    def load_from_model_store(cls, tag: str, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
        from fusion.artifacts import load_from_model_store

        return load_from_model_store(tag, expected_encoders)


# ====================================================================== helpers
def _concat_assign(a: SoftAssignment, b: SoftAssignment) -> SoftAssignment:
    return SoftAssignment(np.concatenate([a.clusters, b.clusters]), np.concatenate([a.weights, b.weights]))


def _widen(x: sp.csr_matrix, width: int) -> sp.csr_matrix:
    """``x`` with ``width`` columns (new feature columns are empty), sharing its arrays."""
    if x.shape[1] == width:
        return x
    return sp.csr_matrix((x.data, x.indices, x.indptr), shape=(x.shape[0], width))


def _align(items: list[Item], emb: ItemEmbeddings) -> ItemEmbeddings:
    """Embeddings reordered to ``items``; items absent from ``emb`` get all modalities masked."""
    index = emb.index()
    ids = [it.item_id for it in items]
    if all(i in index for i in ids):
        return emb.subset(ids)
    vectors, masks = {}, {}
    for m, v in emb.vectors.items():
        out = np.zeros((len(ids), v.shape[1]), np.float32)
        mk = np.zeros(len(ids), bool)
        for r, iid in enumerate(ids):
            if iid in index:
                out[r] = v[index[iid]]
                mk[r] = emb.masks[m][index[iid]]
        vectors[m], masks[m] = out, mk
    return ItemEmbeddings(ids, vectors, masks, dict(emb.encoders))


def _profile(snap: _Snapshot, liked: np.ndarray, qvec: np.ndarray | None) -> np.ndarray | None:
    """Shared-space taste vector: the query vector and the mean of liked items, equally weighted."""
    parts = []
    if qvec is not None:
        parts.append(qvec)
    if len(liked):
        v = snap.fused[liked].mean(axis=0)
        if np.linalg.norm(v) > 0:
            parts.append(v / np.linalg.norm(v))
    if not parts:
        return None
    v = np.mean(parts, axis=0)
    n = np.linalg.norm(v)
    return (v / n).astype(np.float32) if n > 0 else None


def user_scores(snap: _Snapshot, vector: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """LightFM scores of a user vector over the snapshot's items (``rows`` only when given): the one
    place ``item_repr @ user + item_bias`` is computed (the ANN indexes hold [repr, bias] for [user, 1])."""
    if rows is None:
        return snap.item_repr @ vector + snap.item_bias
    return snap.item_repr[rows] @ vector + snap.item_bias[rows]


def _neighbour_vector(snap: _Snapshot, rows: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """Fold-in through neighbours: the overlap-weighted mean of the LightFM vectors of known users
    who liked items ``rows`` (weights ``weights``); stays in the space LightFM trained users in.
    None when nobody else liked them."""
    overlap = (snap.seen[:, rows] @ np.asarray(weights, np.float64)) ** NEIGHBOUR_POWER
    total = overlap.sum()
    if total <= 0:
        return None
    return (overlap @ snap.user_repr / total).astype(np.float32)


MIN_DECAY = 0.01  # an old event still counts a little: weights never reach zero


def recency_decay(age, half_life: float | None):
    """``0.5 ** (age / half_life)`` (floored at MIN_DECAY); ``age`` in seconds, ``half_life`` in days;
    1 when ``half_life`` is None (no decay)."""
    if not half_life:
        return 1.0 if np.isscalar(age) else np.ones_like(np.asarray(age, np.float64))
    d = np.maximum(0.5 ** (np.asarray(age, np.float64) / (half_life * 86400.0)), MIN_DECAY)
    return float(d) if np.isscalar(age) else d


# How hard a negative event pushes the user vector away from the item's representation, in units
# of the vector's length per unit of event weight (not tuned: MovieLens has no negative events).
NEGATIVE_PUSH = 0.5

# Neighbour weight = overlap ** power: users sharing more of the liked items count more
# (MovieLens validation NDCG@10: 0.477 at power 1, 0.487 at 2, 0.486 at 3).
NEIGHBOUR_POWER = 2
PSEUDO_LIKED = 10  # items nearest to a query vector that stand in for liked items


def _seed_weights(snap: _Snapshot, liked: np.ndarray, qvec: np.ndarray | None):
    """(item rows, weights) the collaborative components start from: the liked items (weight 1
    each) plus, for a text/image/audio query, its nearest items in the shared space as
    pseudo-liked items carrying as much total weight as the liked set (at least 1)."""
    idx, w = [np.asarray(liked, np.int64)], [np.ones(len(liked))]
    if qvec is not None:
        sims = snap.fused @ qvec
        sims[liked] = -np.inf
        n = min(PSEUDO_LIKED, int(np.isfinite(sims).sum()))
        if n > 0:
            near = np.argpartition(-sims, n - 1)[:n]
            sw = np.exp((sims[near] - sims[near].max()) / 0.05)
            idx.append(near)
            w.append(sw / sw.sum() * max(len(liked), 1))
    idx, w = np.concatenate(idx), np.concatenate(w)
    return (idx, w) if len(idx) else None


def _top_k(scores: np.ndarray, k: int, exclude: np.ndarray, candidates: np.ndarray | None) -> np.ndarray:
    s = np.asarray(scores, np.float64).copy()
    if candidates is not None:
        mask = np.full(len(s), -np.inf)
        mask[np.asarray(candidates, np.int64)] = 0.0
        s += mask
    s[np.asarray(exclude, np.int64)] = -np.inf
    valid = np.flatnonzero(np.isfinite(s))
    if len(valid) == 0:
        return valid
    k = min(k, len(valid))
    top = valid[np.argpartition(-s[valid], k - 1)[:k]]
    return top[np.argsort(-s[top], kind="stable")]
