"""HybridModel, the writer: shared space + codebook tokens + LightFM, trained, updated and published.

Writers (``train``, ``add_items``, ``remove_items``, ``add_interactions``, ``fit_partial``,
``forget_user``) serialise on a lock, train on LightFM's own arrays, then publish a new immutable
``Snapshot`` (fusion/snapshot.py) with one attribute assignment. Readers take one snapshot and use
only it (the read API, fusion/reader.py, hands it to fusion/scoring.py), so scoring can run while a
``fit_partial`` is in progress; it sees the previous model until the swap. Persistence goes through
``export_state`` / ``from_state`` (fusion/artifacts.py saves and loads the ``ModelState``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import fields, replace
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Interaction, Item
from mixrec.config import HYBRID_MODEL_NAME, FusionConfig, MixrecConfig, ModelConfig
from mixrec.embeddings import ItemEmbeddings
from mixrec.errors import shown, shown_list
from mixrec.events import DEFAULT_RULES, signed_weight
from fusion import artifacts, lightfm_state
from fusion.codebook import Codebook, SoftAssignment
from fusion.cold_items import ContentToCollab
from fusion.features import (FeatureIndex, FeatureWeights, auto_identity_weight, combine, constant_groups, item_feature_groups,
                             rows_to_csr, user_feature_row)
from fusion.interests import history_interests, top_clusters
from fusion.growable import Growable
from fusion.item_catalog import CatalogView, ItemCatalog
from fusion.item_state import ItemReprs, ItemRows
from fusion.rows import with_dense_rows, with_rows
from fusion.user_state import UserRows
from fusion.model_state import CACHE_FIELDS, ModelState
from fusion.query import QueryBlend
from fusion.reader import SnapshotReader
from fusion.scoring import recency_decay
from fusion.shared_space import SharedSpace
from fusion.snapshot import Snapshot, UnknownItemError, UnknownUserError

__all__ = ["HybridModel", "UnknownItemError", "UnknownUserError"]

MAX_SAMPLE_WEIGHT = 5.0
# Deleted items' rows (tombstones) at most this share of the catalogue before a delete compacts:
# readers skip at most this much dead work, and compaction's O(catalogue) is paid once per as many deletes.
MAX_DEAD_SHARE = 0.1


class HybridModel(SnapshotReader):
    """Use ``HybridModel.train`` or ``HybridModel.load``; the constructor is internal."""

    def __init__(self, model_cfg: ModelConfig, fusion_cfg: FusionConfig, space: SharedSpace, codebook: Codebook,
                 weights: FeatureWeights, blend_weights: QueryBlend | None = None) -> None:
        self.model_cfg = model_cfg
        self.fusion_cfg = fusion_cfg
        self.space = space
        self.codebook = codebook
        self.weights = weights
        self.blend_weights = blend_weights or QueryBlend()
        self.items = ItemCatalog.of([])  # columns, append-only (fusion/item_catalog.py)
        self.item_has_identity = np.zeros(0, bool)
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
        self._item_rows: ItemRows | None = None
        self._growing: dict[str, Growable] = {}  # append-only buffers behind the per-item arrays
        self._reprs: ItemReprs | None = None
        self._user_rows: UserRows | None = None  # user feature rows of the published snapshot
        self._trained_version = 0  # bumped whenever LightFM's item parameters may have changed
        self._lock = threading.RLock()
        self._snap: Snapshot | None = None

    # ================================================================== training
    @classmethod
    def train(cls, items: list[Item], emb: ItemEmbeddings, interactions: list[Interaction], cfg: MixrecConfig,
              progress: bool = False, weights: FeatureWeights | None = None,
              epochs: int | None = None, content: tuple[SharedSpace, Codebook] | None = None) -> "HybridModel":
        """``content``: a shared space and codebook already fitted on (a superset of) these items'
        content, reused instead of refitted (fusion/calibration.py trains several models on one catalogue)."""
        emb = _align(items, emb)
        space, codebook = content or cls.fit_content(items, emb, cfg)
        per = space.project_items(emb)
        masks = {m: (emb.masks[m].copy() if m in emb.masks else np.zeros(len(emb), bool)) for m in per}
        fused = space.fuse_projected(per, masks)
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

    @staticmethod
    def fit_content(items: list[Item], emb: ItemEmbeddings, cfg: MixrecConfig) -> tuple[SharedSpace, Codebook]:
        """The shared space and the interest codebook of ``items``' content (no interaction involved)."""
        emb = _align(items, emb)
        space = SharedSpace.fit(emb, cfg.fusion)
        per = space.project_items(emb)
        masks = {m: (emb.masks[m].copy() if m in emb.masks else np.zeros(len(emb), bool)) for m in per}
        fused = space.fuse_projected(per, masks)
        has = np.linalg.norm(fused, axis=1) > 0
        codebook = Codebook.fit(fused[has], cfg.fusion.codebook_size, cfg.fusion.soft_top, cfg.fusion.temperature,
                                cfg.fusion.seed)
        codebook.build_labels(items, fused)
        return space, codebook

    def _append_items(self, items: list[Item], per: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                      fused: np.ndarray) -> None:
        known = self.items.index
        dup = [it.item_id for it in items if it.item_id in known]
        if dup or len({it.item_id for it in items}) != len(items):
            raise ValueError(f"duplicate item ids: {dup[:5] or 'within the batch'}")
        # Append-only growth: published snapshots hold prefixes of these columns, which appends
        # never touch, so adding B items costs O(B) (amortised), not a copy of the catalogue.
        n_old = len(self.items)
        self.items.append(items)
        self.item_has_identity = self._appended("identity", self.item_has_identity, np.zeros(len(items), bool))
        for m in self.per_modality:
            self.per_modality[m] = self._appended(f"proj:{m}", self.per_modality[m], per[m])
            self.masks[m] = self._appended(f"mask:{m}", self.masks[m], masks[m])
        self.fused = self._appended("fused", self.fused, fused)
        self._extend_item_state(n_old)

    def _appended(self, key: str, current: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``current`` + ``values`` as a read-only view of an append-only buffer (``current`` itself
        when it is that buffer's view: then only ``values`` are written)."""
        g = self._growing.get(key)
        if g is None or not g.is_view(current):
            g = self._growing[key] = Growable(current)  # copied on this first append, then doubled
        g.append(values)
        return g.view()

    def _ingest(self, interactions: Sequence[Interaction]) -> set[str]:
        """Apply ``interactions`` to the positives; returns the users whose positives changed. A batch
        naming an unknown item changes nothing (checked before any is applied)."""
        index = self.items.index
        for r in interactions:
            if r.item_id not in index:
                raise UnknownItemError(f"interaction for unknown item {shown(r.item_id)}")
        touched = set()
        for r in interactions:
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

    def _interaction_matrix(self, users: Sequence[str] | None = None) -> sp.coo_matrix:
        """Users x items summed positive weights (recency-decayed), one row per user of ``users``
        (default every user); a user's row depends on their own events only."""
        index = self.items.index
        users = self.user_ids if users is None else users
        pos = self.positives
        sizes = np.fromiter((len(pos[u]) for u in users), np.int64, len(users))
        total = int(sizes.sum())
        rows = np.repeat(np.arange(len(users), dtype=np.int32), sizes)
        cols = np.fromiter((index[i] for u in users for i in pos[u]), np.int32, total)
        vals = np.fromiter((w for u in users for w in pos[u].values()), np.float64, total)
        half_life = self.recency_half_life_days
        if half_life and total:
            empty: dict = {}
            newest = np.fromiter((max(self.pair_time.get(u, empty).values(), default=0.0) for u in users),
                                 np.float64, len(users))[rows]
            when = np.fromiter((self.pair_time.get(u, empty).get(i, np.nan) for u in users for i in pos[u]),
                               np.float64, total)
            vals = vals * recency_decay(newest - np.where(np.isnan(when), newest, when), half_life)
        return sp.coo_matrix((vals.astype(np.float32), (rows, cols)), shape=(len(users), len(self.items)))

    def _item_features(self, assign: SoftAssignment, identity: Sequence[bool] | None = None,
                       rows: Sequence[int] | None = None) -> sp.csr_matrix:
        """Feature rows of items ``rows`` (default all; ``assign`` holds one row per entry of ``rows``);
        ``identity`` overrides which items get their id feature (content-only rows)."""
        identity = self.item_has_identity if identity is None else identity
        rows = range(len(self.items)) if rows is None else rows
        reserve_cold = ("identity",) if self.weights.cold_keeps_scale else ()
        feats = [combine(item_feature_groups(self.items.keys(i), bool(identity[i]), assign.clusters[n], assign.weights[n],
                                             self.constant_groups), self.weights,
                         reserve=() if identity[i] else reserve_cold)
                 for n, i in enumerate(rows)]
        return rows_to_csr(feats, self.item_fidx)

    # Item rows depend only on the item itself (and the fixed codebook, weights and constant groups),
    # so writers patch the cached state (fusion/item_state.py) instead of rebuilding a million rows.
    def _extend_item_state(self, n_old: int) -> None:
        """Append the state of items ``n_old:`` (just added) to the cache."""
        cached = self._item_rows
        if cached is None:
            return
        new = self.fused[n_old:]
        a_new, t_new = self.codebook.assign(new), self.codebook.assign(new, top=cached.tokens.clusters.shape[1])
        self._item_rows = cached.appended(a_new, t_new, self._item_features(t_new, rows=range(n_old, len(self.items))))
        if self._reprs is not None and self._reprs.features is cached.features:
            # Old rows unchanged: the representations cover them; only the new rows get represented.
            self._reprs = replace(self._reprs, features=self._item_rows.features)

    def _keep_item_state(self, keep: np.ndarray) -> None:
        """Keep only rows ``keep`` (bool mask) of the cached state (items removed)."""
        cached = self._item_rows
        if cached is None:
            return
        self._item_rows = cached.kept(keep)
        reprs = self._reprs
        if reprs is not None and reprs.features is cached.features and len(reprs.repr) == len(keep):
            # A row's representation depends only on its own feature row and LightFM's parameters:
            # the kept rows keep theirs (no recomputation, same numbers as a rebuild).
            kept_repr, kept_bias = reprs.repr[keep], reprs.bias[keep]
            kept_repr.flags.writeable = kept_bias.flags.writeable = False
            self._reprs = replace(reprs, features=self._item_rows.features, repr=kept_repr, bias=kept_bias)

    def _rebuild_item_rows(self, changed: Sequence[int]) -> None:
        """Recompute the feature rows of items ``changed`` (their identity flag flipped)."""
        cached = self._item_rows
        if cached is None:
            return
        changed = np.asarray(changed, np.int64)
        sub = SoftAssignment(cached.tokens.clusters[changed], cached.tokens.weights[changed])
        self._item_rows = cached.with_rows(changed, self._item_features(sub, rows=changed))

    def _item_state(self) -> ItemRows:
        """Assignments and feature rows of every item, built once and then patched by writers
        (``_extend_item_state`` / ``_keep_item_state`` / ``_rebuild_item_rows``)."""
        if self._item_rows is None:
            assign = self.codebook.assign(self.fused)
            # LightFM sees at most item_tokens clusters per item (its cost grows with non-zeros);
            # interests and explanations use the full soft assignment.
            tokens = self.codebook.assign(self.fused, top=min(self.codebook.top, self.weights.item_tokens))
            self._item_rows = ItemRows(assign, tokens, self._item_features(tokens))
        return self._item_rows

    def _fit_cold_map(self, content_x: sp.csr_matrix, item_x: sp.csr_matrix, counts: np.ndarray) -> None:
        """Learn content -> full LightFM representation on warm items (see fusion.cold_items)."""
        warm = np.asarray(self.item_has_identity, bool) & (counts > 0)
        if not lightfm_state.is_initialised(self.lfm):
            return
        lfm = self.lfm
        x = ContentToCollab.inputs(self.fused, content_x @ lfm.item_embeddings, content_x @ lfm.item_biases)
        target = np.hstack([item_x @ lfm.item_embeddings, (item_x @ lfm.item_biases)[:, None]])
        self.cold_map = ContentToCollab.fit(x[warm], target[warm], counts[warm])

    def _user_features(self, interest: np.ndarray, users: Sequence[str] | None = None) -> sp.csr_matrix:
        """Feature rows of ``users`` (default every user; ``interest`` holds one row per user)."""
        top = top_clusters(interest, self.codebook.top)
        users = self.user_ids if users is None else users
        rows = [user_feature_row(uid, top, self.weights, row=u) for u, uid in enumerate(users)]
        return rows_to_csr(rows, self.user_fidx)

    def _fit(self, epochs: int, progress: bool) -> None:
        with self._lock:
            if epochs > 0:
                self._compact()  # training over dead rows would spend epochs on them
            inter = self._interaction_matrix().tocsr()
            if epochs > 0:
                # Items with feedback get (and keep) an identity feature when training can learn it;
                # until then a new item is scored from content alone, at full content weight.
                counts = np.asarray((inter > 0).sum(axis=0)).ravel()
                fresh = np.flatnonzero((counts > 0) & ~np.asarray(self.item_has_identity, bool))
                if fresh.size:
                    flags = np.array(self.item_has_identity, bool)
                    flags[fresh] = True
                    flags.flags.writeable = False
                    self.item_has_identity = flags
                    self._rebuild_item_rows(fresh)
            state = self._item_state()
            assign, tokens, item_x = state.assign, state.tokens, state.features
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
                # LightFM's Cython wants writable buffers; item_x shares the read-only append-only ones.
                self._run_epochs(ones, weights, user_x, item_x.copy(), epochs, progress)
                self.trained_users = self.trained_users | {self.user_ids[u] for u in np.unique(coo.row)}
                content_x = self._item_features(tokens, identity=np.zeros(len(self.items), bool))
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
        seen = _binary(inter)
        view = self.items.view()
        # Item content arrays are shared with the model, not copied: writers replace them (never
        # write in place), and read-only flags turn any accidental in-place write into an error.
        for arr in (self.fused, *self.per_modality.values(), *self.masks.values()):
            arr.flags.writeable = False
        self._snap = Snapshot(
            item_ids=view.ids, item_types=view.types,
            item_repr=item_repr, item_bias=item_bias,
            user_ids=tuple(self.user_ids), user_repr=np.asarray(user_repr, np.float32),
            user_bias=np.asarray(user_bias, np.float32), user_feature_emb=np.asarray(user_emb, np.float32),
            user_feature_bias=np.asarray(user_b, np.float32), user_cluster_cols=self._cluster_cols(), seen=seen,
            counts=np.asarray(seen.sum(axis=0)).ravel().astype(np.float32), fused=self.fused,
            per_modality=dict(self.per_modality), masks=dict(self.masks), item_assign=assign, user_interest=interest,
            item_index=view.index, user_index={uid: u for u, uid in enumerate(self.user_ids)},
            user_trained=np.array([uid in self.trained_users for uid in self.user_ids], bool), items=view)
        self._user_rows = UserRows(user_x, self._snap.user_repr, self._trained_version)

    def _cluster_cols(self) -> np.ndarray:
        return np.array([self.user_fidx.col(f"c:{c}") if f"c:{c}" in self.user_fidx else -1
                         for c in range(self.codebook.size)], np.int64)

    def _publish_users(self, touched: set[str]) -> bool:
        """Publish the current snapshot with the rows of users ``touched`` (their positives changed;
        new users were appended to ``user_ids``) recomputed: every other user's row depends on nothing
        that changed, so this equals a full ``_refresh`` at O(touched users' events) in Python.
        False (nothing published) when the snapshot's user side is not the cached one, LightFM was
        never trained, or the snapshot does not cover every item row."""
        snap, cache = self._snap, self._user_rows
        if (snap is None or cache is None or not cache.describes(snap.user_repr, self._trained_version)
                or self._item_rows is None or len(snap.item_ids) != len(self.items)
                or not lightfm_state.is_initialised(self.lfm)):
            return False
        n_old = len(snap.user_ids)
        if not touched:
            return True
        known = snap.user_index
        fresh = self.user_ids[n_old:]  # _ingest appends new users
        fresh_rows = {uid: n_old + j for j, uid in enumerate(fresh)}
        rows = np.array(sorted(known[u] if u in known else fresh_rows[u] for u in touched), np.int64)
        users = [self.user_ids[r] for r in rows]
        inter = self._interaction_matrix(users).tocsr()
        interest = history_interests(inter, self._item_state().assign, self.codebook.size)
        user_x_rows = self._user_features(interest, users)
        lfm = self.lfm
        lightfm_state.grow(lfm, lfm.item_embeddings.shape[0], len(self.user_fidx))
        user_emb, user_b = snap.user_feature_emb, snap.user_feature_bias
        if lfm.user_embeddings.shape[0] > user_emb.shape[0]:  # new user features: zero rows until trained
            user_emb = np.concatenate([user_emb, lfm.user_embeddings[user_emb.shape[0]:]])
            user_b = np.concatenate([user_b, lfm.user_biases[user_b.shape[0]:]])
        user_repr = with_dense_rows(snap.user_repr, rows, np.asarray(user_x_rows @ user_emb, np.float32))
        user_bias = with_dense_rows(snap.user_bias, rows, np.asarray(user_x_rows @ user_b, np.float32))
        seen_rows = _binary(inter)
        counts = snap.counts.copy()
        old = rows[rows < n_old]
        np.subtract.at(counts, snap.seen[old].indices, 1.0)
        np.add.at(counts, seen_rows.indices, 1.0)
        counts.flags.writeable = False
        changes = {}
        if fresh:
            user_index = dict(known)
            user_index.update(fresh_rows)
            changes = dict(user_ids=tuple(self.user_ids), user_index=user_index,
                           user_trained=np.concatenate([snap.user_trained, [uid in self.trained_users for uid in fresh]]))
        self._snap = replace(snap, user_repr=user_repr, user_bias=user_bias, user_feature_emb=user_emb,
                             user_feature_bias=user_b, user_cluster_cols=self._cluster_cols(),
                             seen=with_rows(snap.seen, rows, seen_rows, snap.seen.shape[1]), counts=counts,
                             user_interest=with_dense_rows(snap.user_interest, rows, interest), **changes)
        self._user_rows = UserRows(with_rows(cache.features, rows, user_x_rows, len(self.user_fidx)), user_repr,
                                   self._trained_version)
        return True

    def _publish_appended(self, n_old: int) -> bool:
        """Publish items ``n_old:`` (just appended) by extending the current snapshot's item fields:
        nothing user-side depends on an item without interactions, so this equals a full ``_refresh``
        at O(appended) cost. False (nothing published) when the snapshot is not this catalogue's
        ``n_old``-row prefix or the item rows are not cached."""
        snap = self._snap
        if (snap is None or self._item_rows is None or not isinstance(snap.items, CatalogView)
                or snap.items.catalog is not self.items or snap.items.n != n_old):
            return False
        state = self._item_state()
        item_x = state.features
        lfm = self.lfm
        if lightfm_state.is_initialised(lfm):
            lightfm_state.grow(lfm, item_x.shape[1], lfm.user_embeddings.shape[0])  # new tags: zero rows
            item_repr, item_bias = self._item_representations(item_x)
        else:
            k = self.model_cfg.no_components
            item_repr, item_bias = np.zeros((item_x.shape[0], k), np.float32), np.zeros(item_x.shape[0], np.float32)
        view = self.items.view()
        seen = sp.csr_matrix((snap.seen.data, snap.seen.indices, snap.seen.indptr), shape=(snap.seen.shape[0], view.n))
        counts = self._appended("counts", snap.counts, np.zeros(view.n - n_old, np.float32))
        for arr in (*self.per_modality.values(), *self.masks.values()):
            arr.flags.writeable = False
        self._snap = replace(snap, item_ids=view.ids, item_types=view.types, item_repr=item_repr, item_bias=item_bias,
                             seen=seen, counts=counts, fused=self.fused, per_modality=dict(self.per_modality),
                             masks=dict(self.masks), item_assign=state.assign, item_index=view.index, items=view)
        return True

    def _publish_kept(self, keep: np.ndarray) -> bool:
        """Publish the current snapshot minus the rows not in ``keep``: the user side of users who
        had no positive on a removed row does not depend on them, so this equals a full ``_refresh``
        for them (the users who had one are recomputed by ``_publish_users`` after it). False
        (nothing published) when the snapshot is not the one ``keep`` was taken over or the item
        rows are not cached."""
        snap = self._snap
        if snap is None or self._item_rows is None or len(snap.item_ids) != len(keep):
            return False
        state = self._item_state()
        item_repr, item_bias = self._item_representations(state.features)
        view = self.items.view()
        counts = snap.counts[keep]
        for arr in (self.fused, *self.per_modality.values(), *self.masks.values(), counts):
            arr.flags.writeable = False
        self._snap = replace(snap, item_ids=view.ids, item_types=view.types, item_repr=item_repr, item_bias=item_bias,
                             seen=snap.seen[:, keep].tocsr(), counts=counts, fused=self.fused,
                             per_modality=dict(self.per_modality), masks=dict(self.masks), item_assign=state.assign,
                             item_index=view.index, items=view)
        return True

    def _item_representations(self, item_x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """LightFM item representations and biases (cold items mapped from content), read-only;
        reused while the item rows, LightFM's item parameters and the cold map are unchanged
        (recording feedback changes none of them); rows appended since are represented alone."""
        cached = self._reprs
        start = 0 if cached is None else cached.reusable_rows(item_x, self._trained_version, self.cold_map,
                                                              self.cold_map_weight)
        if start and start == item_x.shape[0]:
            return cached.repr, cached.bias
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
        if start:  # appended rows only: extend the cached arrays' buffers
            item_repr = self._appended("repr", cached.repr, item_repr)
            item_bias = self._appended("bias", cached.bias, item_bias)
        item_repr.flags.writeable = False
        item_bias.flags.writeable = False
        self._reprs = ItemReprs(item_x, self._trained_version, self.cold_map, self.cold_map_weight,
                                item_repr, item_bias)
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
            n_old = len(self.items)
            self._append_items(items, per, masks, self.space.fuse_projected(per, masks))
            if not self._publish_appended(n_old):
                self._refresh()

    def remove_items(self, item_ids: Sequence[str]) -> None:
        """Removed items are tombstoned: their rows stay, marked dead, until a compaction (at the
        next training run, export, or once dead rows would pass ``MAX_DEAD_SHARE`` of the catalogue),
        so deleting B items costs O(B) plus a one-byte-per-row mask copy, and the rows of the users
        who liked one of them are recomputed (their positives lose it)."""
        with self._lock:
            drop = set(item_ids)
            index = self.items.index
            unknown = [i for i in drop if i not in index]
            if unknown:
                raise UnknownItemError(f"unknown item ids: {shown_list(sorted(unknown))}")
            rows = np.fromiter((index[i] for i in drop), np.int64, len(drop))
            snap = self._snap
            current = snap is not None and len(snap.counts) == len(self.items)
            # Positives per item are the snapshot's counts (every write that changes positives publishes).
            touched = set()
            if not current:
                touched = self._forget_items(drop, self.positives.keys())
            elif np.any(snap.counts[rows] > 0):
                # The snapshot's seen matrix holds every positive: its columns name the fans, in C.
                fans = np.unique(snap.seen[:, rows].tocoo().row)
                touched = self._forget_items(drop, [snap.user_ids[u] for u in fans])
            if current and self.items.n_dead + len(rows) <= MAX_DEAD_SHARE * len(self.items):
                self.items.tombstone(rows)
                view = self.items.view()
                self._snap = replace(snap, item_ids=view.ids, item_index=view.index, items=view)
                if not self._publish_users(touched):
                    self._refresh()
                return
            keep = np.array(self.items.alive.view())
            keep[rows] = False
            self._drop_rows(keep)
            if not (self._publish_kept(keep) and self._publish_users(touched)):
                self._refresh()

    def _forget_items(self, drop: set[str], users: Iterable[str]) -> set[str]:
        """Remove items ``drop`` from the positives of ``users``; returns the users who had one."""
        touched = set()
        for uid in users:
            for table in (self.positives, self.pair_time):
                row = table.get(uid)
                if row is None:
                    continue
                for iid in drop & row.keys():
                    del row[iid]
                    touched.add(uid)
        return touched

    def _drop_rows(self, keep: np.ndarray) -> None:
        """Keep only item rows ``keep`` (bool mask over every row, dead ones False) in the model's
        state: a new catalogue and new arrays (snapshots keep the old ones). Publishes nothing."""
        self.items = self.items.kept(keep)
        self._growing.clear()  # every item array is replaced below: drop the old buffers now
        self.item_has_identity = self.item_has_identity[keep]
        self.per_modality = {m: v[keep] for m, v in self.per_modality.items()}
        self.masks = {m: v[keep] for m, v in self.masks.items()}
        self.fused = self.fused[keep]
        self._keep_item_state(keep)

    def _compact(self) -> None:
        """Drop the tombstoned rows for good (and publish the same items without them)."""
        if not self.items.n_dead:
            return
        keep = np.array(self.items.alive.view())
        self._drop_rows(keep)
        if not self._publish_kept(keep):
            self._refresh()

    def add_interactions(self, interactions: Iterable[Interaction]) -> None:
        """Record feedback. Seen-items and interest tokens update at once; embeddings at ``fit_partial``."""
        with self._lock:
            touched = self._ingest(list(interactions))
            if not self._publish_users(touched):
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

    def set_scoring_knobs(self, blend: QueryBlend | None = None, cold_map_weight: float | None = None) -> None:
        """Scoring-time settings (chosen by fusion/calibration.py without refitting). The blend is
        read at query time and the cold-map weight moves only the item representations, so only
        those are republished: calibration sets these knobs seven times per ``fast`` fit, and a full
        ``_refresh`` (interaction matrix, interests, user features) each time was ~5% of its cost."""
        with self._lock:
            if blend is not None:
                self.blend_weights = blend
            if cold_map_weight is not None:
                self.cold_map_weight = float(cold_map_weight)
            if not self._publish_item_representations():
                self._refresh()

    def _publish_item_representations(self) -> bool:
        """Publish the current snapshot with the item representations recomputed (same rows, same
        LightFM parameters). False (nothing published) when there is no snapshot of these rows."""
        snap = self._snap
        if snap is None or self._item_rows is None or len(snap.item_ids) != len(self.items):
            return False
        item_repr, item_bias = self._item_representations(self._item_state().features)
        if item_repr is not snap.item_repr:
            self._snap = replace(snap, item_repr=item_repr, item_bias=item_bias)
        return True

    # ================================================================== item columns
    def _live_item_index(self) -> dict[str, int]:
        return self.items.index

    def item(self, item_id: str) -> Item | None:
        """The live catalogue's ``Item`` for ``item_id`` (built on demand), or None."""
        row = self.items.index.get(item_id)
        return None if row is None else self.items.item(row)

    def item_title(self, item_id: str) -> str:
        """The live catalogue's title of ``item_id`` (the id itself once the item is gone)."""
        row = self.items.index.get(item_id)
        return item_id if row is None else self.items.strings["title"].get(row)

    # ================================================================== persistence
    def export_state(self) -> ModelState:
        """A consistent copy of the model's state (no writer runs while it is taken), for saving."""
        with self._lock:
            self._compact()  # saved state has no dead rows
            st = ModelState(**{f.name: _copied(getattr(self, f.name)) for f in fields(ModelState)
                               if f.name not in CACHE_FIELDS})
            st.items = self.items.view()  # the rows of now: appends after this are not in it
            rows, reprs, n = self._item_rows, self._reprs, len(self.items)
            if rows is not None and rows.features.shape[0] == n:
                st.item_rows = rows
                if reprs is not None and reprs.reusable_rows(rows.features, self._trained_version, self.cold_map,
                                                             self.cold_map_weight) == n:
                    st.item_reprs = (reprs.repr, reprs.bias)
            return st

    @classmethod
    def from_state(cls, st: ModelState) -> "HybridModel":
        """A model made of ``st`` (e.g. loaded by fusion/artifacts.py), published and ready to serve."""
        model = cls(st.model_cfg, st.fusion_cfg, st.space, st.codebook, st.weights, st.blend_weights)
        for f in fields(ModelState):
            if f.name not in CACHE_FIELDS:
                setattr(model, f.name, getattr(st, f.name))
        if st.item_rows is not None and st.item_rows.features.shape[0] == len(st.items):
            model._item_rows = st.item_rows
            if st.item_reprs is not None and len(st.item_reprs[0]) == len(st.items):
                model._reprs = ItemReprs(st.item_rows.features, model._trained_version, model.cold_map,
                                         model.cold_map_weight, *st.item_reprs)
        if isinstance(model.items, CatalogView):  # another model's rows: a catalogue of our own
            model.items = model.items.catalog.kept(np.arange(len(model.items.catalog)) < model.items.n)
        model.item_has_identity = np.asarray(model.item_has_identity, bool)
        model._refresh()
        return model

    def save(self, directory) -> None:
        artifacts.save_state(self.export_state(), directory)

    @classmethod
    def load(cls, directory, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
        return cls.from_state(artifacts.load_state(directory, expected_encoders))

    def save_to_model_store(self, name: str = HYBRID_MODEL_NAME, labels: dict | None = None) -> str:
        return artifacts.save_state_to_model_store(self.export_state(), name, labels)

    @classmethod
    def load_from_model_store(cls, tag: str, expected_encoders: dict[str, dict] | None = None) -> "HybridModel":
        return cls.from_state(artifacts.load_state_from_model_store(tag, expected_encoders))


def _binary(inter: sp.spmatrix) -> sp.csr_matrix:
    """The positives' pattern as ones (``seen``)."""
    seen = inter.copy().tocsr()
    seen.data = np.ones_like(seen.data, dtype=np.float32)
    return seen


def _copied(value):
    """Containers copied one level deep (per-user dicts too), so a saved state cannot change under the saver."""
    if isinstance(value, dict):
        return {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()}
    if isinstance(value, (list, set)):
        return type(value)(value)
    return value


# ====================================================================== helpers
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
