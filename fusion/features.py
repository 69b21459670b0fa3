"""LightFM feature matrices: identity + semantic codebook tokens + metadata tags, row-normalised.

Every feature is a named column (``i:<item>``, ``u:<user>``, ``c:<cluster>``,
``t:<tag>``, ``g:<category>``, ``type:<type>``). Rows are sparse with a handful
of non-zeros so LightFM stays fast (its cost per sample grows with the
non-zeros of a row); each *group* of features gets a fixed share of the row's
L1 mass so an item with many tags does not drown its identity, and rows sum
to (at most) 1: unnormalised rows can blow up the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mixrec.catalog import Item
from fusion.codebook import SoftAssignment


@dataclass(frozen=True)
class FeatureWeights:
    """Share of a row's mass per feature group (renormalised over the groups a row has)."""

    # None: chosen from the data at training time (``auto_identity_weight``).
    identity: float | None = None
    clusters: float = 0.5
    tags: float = 0.5
    category: float = 0.25
    item_type: float = 0.1
    # On user rows: the user's top interest clusters. Off by default: on MovieLens they cost warm
    # P@10 (0.259 -> 0.255 at 0.2) and the query path folds users in through liked items instead.
    user_interests: float = 0.0
    # Cold items keep the identity share empty instead of re-normalising their content to sum 1:
    # their content weights then match what training saw on warm items.
    cold_keeps_scale: bool = True
    # Codebook tokens per item row in LightFM (the top clusters, soft weights). LightFM's cost
    # grows with non-zeros per row: on MovieLens (single-threaded fit) 1 token costs 2.5x plain
    # LightFM and 2 tokens 2.8-3.1x, at equal quality (warm P@10 0.260 vs 0.259, cold-item AUC
    # 0.80 both). Interest distributions and explanations always use the full soft assignment.
    item_tokens: int = 1
    # How a row's unit L1 mass is split. False: each group gets its weight's share, whatever its
    # size. True: each feature counts as one unit scaled by its group's weight, L1 over the whole
    # row -- LightFM's usual normalisation, under which an item with many tags leans on them more
    # than on its id. Plain "LightFM ids + tags" is identity=1, tags=1 with this on; with it off the
    # id keeps half the row, and on ml-100k ua new users' mean-of-liked fold-in scored NDCG@10 0.41
    # against 0.49 (bench/cold_user_foldin.py; BENCHMARKS.md, "Second session").
    per_feature: bool = False


def auto_identity_weight(interactions_per_item: float) -> float:
    """Identity weight from the evidence behind an item's id: log10(mean interactions per warm
    item), clipped to [1, 2]. An id embedding learned from ~10 interactions is noisy, so content
    carries as much as it; from ~100, the id knows better. Measured warm P@10: demo catalogue
    (~9 per item, 4 seeds) 0.098 at 1 vs 0.095 at 2; MovieLens ua (~53 per item, auto = 1.72)
    0.260 at auto and at 2 vs ~0.254 at 1 (plain LightFM 0.247)."""
    return float(np.clip(np.log10(max(interactions_per_item, 1.0)), 1.0, 2.0))


class FeatureIndex:
    """Append-only map from feature name to column; columns never move, so trained rows stay valid."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or [])
        self._col = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._col

    def col(self, name: str) -> int | None:
        return self._col.get(name)

    def add(self, name: str) -> int:
        c = self._col.get(name)
        if c is None:
            c = len(self.names)
            self.names.append(name)
            self._col[name] = c
        return c


def _norm_tag(t: str) -> str:
    return t.strip().lower()


def item_feature_groups(item: Item, identity: bool, clusters: np.ndarray, cluster_w: np.ndarray,
                        constant_groups: set[str]) -> dict[str, dict[str, float]]:
    """Named features of one item, grouped; constant groups (same value for all items) are dropped,
    and so is a category already among the tags (same information, one more non-zero to train)."""
    groups: dict[str, dict[str, float]] = {}
    if identity:
        groups["identity"] = {f"i:{item.item_id}": 1.0}
    toks = {f"c:{int(c)}": float(w) for c, w in zip(clusters, cluster_w) if w > 0}
    if toks:
        groups["clusters"] = toks
    tags = sorted({_norm_tag(t) for t in item.tags if t.strip()})
    if tags:
        groups["tags"] = {f"t:{t}": 1.0 / len(tags) for t in tags}
    if item.category and "category" not in constant_groups and _norm_tag(item.category) not in tags:
        groups["category"] = {f"g:{_norm_tag(item.category)}": 1.0}
    if "item_type" not in constant_groups:
        groups["item_type"] = {f"type:{item.type}": 1.0}
    return groups


def constant_groups(items: list[Item]) -> set[str]:
    """Feature groups carrying no information in this catalog (e.g. one item type only)."""
    out = set()
    if len({it.type for it in items}) <= 1:
        out.add("item_type")
    cats = {it.category for it in items}
    if len(cats) <= 1:
        out.add("category")
    return out


def combine(groups: dict[str, dict[str, float]], weights: FeatureWeights,
            reserve: tuple[str, ...] = ()) -> dict[str, float]:
    """One row from feature groups: each group gets its weight's share of the row's unit L1 mass
    (``weights.per_feature``: its weight times its number of features).

    ``reserve`` names absent groups whose share stays counted (and empty, as one feature), so that
    a cold item's content features keep exactly the weights they were trained with on warm items.
    """
    def mass(g: str, size: int) -> float:
        return getattr(weights, g) * (size if weights.per_feature else 1)

    total = sum(mass(g, len(f)) for g, f in groups.items()) + sum(mass(g, 1) for g in set(reserve) - set(groups))
    row: dict[str, float] = {}
    for g, feats in groups.items():
        share = mass(g, len(feats)) / total if total > 0 else 0.0
        for name, w in feats.items():
            row[name] = row.get(name, 0.0) + share * w
    return row


def rows_to_csr(rows: list[dict[str, float]], index: FeatureIndex, grow: bool = True) -> sp.csr_matrix:
    """Feature-name rows (already weighted by ``combine``) -> csr (n_rows, len(index)).

    Unknown names are added (grow) or dropped."""
    indptr, cols, vals = [0], [], []
    for row in rows:
        for name, w in row.items():
            if w == 0:  # a zero-weight group must not create (untrained) feature columns
                continue
            c = index.add(name) if grow else index.col(name)
            if c is not None:
                cols.append(c)
                vals.append(w)
        indptr.append(len(cols))
    return sp.csr_matrix((np.asarray(vals, np.float32), np.asarray(cols, np.int32), np.asarray(indptr, np.int64)),
                         shape=(len(rows), len(index)))


def user_feature_row(user_id: str | None, interests: SoftAssignment | None, weights: FeatureWeights,
                     row: int = 0) -> dict[str, float]:
    """A user row: identity (known users) + their top interest clusters (query users: clusters only)."""
    groups: dict[str, dict[str, float]] = {}
    if user_id is not None:
        groups["identity"] = {f"u:{user_id}": 1.0}
    if interests is not None:
        toks = {f"c:{int(c)}": float(w) for c, w in zip(interests.clusters[row], interests.weights[row]) if w > 0}
        if toks:
            groups["user_interests"] = toks
    return combine(groups, weights)
