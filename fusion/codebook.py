"""Semantic codebook over the shared space: interest clusters, soft tokens and readable labels.

A spherical k-means over the items' fused vectors. Each item becomes a few
weighted tokens (its top-m clusters, softmax weights) — sparse features that
LightFM trains fast on, unlike dense vectors (cost grows with non-zeros per row).
The same clusters are the "interests" that explanations and user interest
distributions talk about, so each cluster carries a label built from the tags,
categories and titles of its items.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

from mixrec.catalog import Item
from fusion.shared_space import unit_rows


@dataclass
class SoftAssignment:
    clusters: np.ndarray  # (n, m) int cluster ids, best first
    weights: np.ndarray  # (n, m) float32, rows sum to 1 (all zero for rows with no content)

    def dense(self, k: int, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, k) memberships of every item, or of ``rows`` only (O(len(rows)), not O(catalogue))."""
        rows = np.arange(self.clusters.shape[0]) if rows is None else np.asarray(rows, np.int64)
        return self.summed(k, rows, np.arange(rows.size), rows.size)

    def summed(self, k: int, rows: np.ndarray, into: np.ndarray, n_out: int,
               scale: np.ndarray | None = None) -> np.ndarray:
        """(n_out, k): the memberships of items ``rows`` (times ``scale``) added up into output row
        ``into`` of each; O(len(rows)), whatever the catalogue's size."""
        m = self.clusters.shape[1]
        weights = self.weights[rows] if scale is None else self.weights[rows] * scale[:, None]
        flat = np.repeat(np.asarray(into, np.int64) * k, m) + self.clusters[rows].ravel()
        return np.bincount(flat, weights.ravel(), minlength=n_out * k).astype(np.float32).reshape(n_out, k)


@dataclass
class Codebook:
    centroids: np.ndarray  # (K, D) unit rows
    labels: list[str]
    top_items: list[list[str]]  # a few representative item ids per cluster (closest to centroid)
    temperature: float
    top: int

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(cls, vectors: np.ndarray, size: int, top: int, temperature: float, seed: int = 0) -> "Codebook":
        """``vectors``: (n, D) unit rows of the items that have content."""
        n = vectors.shape[0]
        k = int(max(1, min(size, n)))
        # Unit rows + Euclidean k-means == spherical k-means up to centroid renormalisation.
        km = KMeans(n_clusters=k, n_init=3, random_state=seed, max_iter=100).fit(vectors)
        return cls(unit_rows(km.cluster_centers_), [f"cluster {c}" for c in range(k)],
                   [[] for _ in range(k)], float(temperature), int(min(top, k)))

    def similarities(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float32) @ self.centroids.T

    def assign(self, vectors: np.ndarray, top: int | None = None) -> SoftAssignment:
        """Top-m clusters per row with softmax(cos / temperature) weights over those m."""
        vectors = np.atleast_2d(vectors)
        m = self.top if top is None else int(min(top, self.size))
        sims = self.similarities(vectors)
        idx = np.argsort(-sims, axis=1)[:, :m]
        top_s = np.take_along_axis(sims, idx, axis=1)
        w = np.exp((top_s - top_s[:, :1]) / self.temperature)
        w /= w.sum(axis=1, keepdims=True)
        has = np.linalg.norm(vectors, axis=1) > 0
        w[~has] = 0.0
        return SoftAssignment(idx.astype(np.int64), w.astype(np.float32))

    def distribution(self, vectors: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(K,) probability distribution of a set of items over clusters (soft, weighted)."""
        dense = self.assign(vectors).dense(self.size)
        w = np.ones(len(dense), np.float32) if weights is None else np.asarray(weights, np.float32)
        p = (dense * w[:, None]).sum(axis=0)
        s = p.sum()
        return p / s if s > 0 else p

    def build_labels(self, items: list[Item], vectors: np.ndarray, n_terms: int = 3, n_examples: int = 3) -> None:
        """Label each cluster with its most distinctive tags/categories (tf-idf over clusters)."""
        hard = np.argmax(self.similarities(vectors), axis=1)
        has = np.linalg.norm(vectors, axis=1) > 0
        per_cluster: list[Counter] = [Counter() for _ in range(self.size)]
        doc_freq: Counter = Counter()
        for i, item in enumerate(items):
            if not has[i]:
                continue
            terms = set(_terms(item))
            per_cluster[hard[i]].update(terms)
        for counts in per_cluster:
            doc_freq.update(counts.keys())
        sims = self.similarities(vectors)
        labels, tops = [], []
        for c in range(self.size):
            scored = sorted(per_cluster[c].items(),
                            key=lambda kv: (-kv[1] * np.log(1 + self.size / doc_freq[kv[0]]), kv[0]))
            members = np.flatnonzero((hard == c) & has)
            order = members[np.argsort(-sims[members, c])][:n_examples]
            examples = [items[i].item_id for i in order]
            terms = [t for t, _ in scored[:n_terms]]
            if not terms and len(order):
                terms = [items[order[0]].title]
            labels.append(" / ".join(terms) if terms else f"cluster {c}")
            tops.append(examples)
        self.labels, self.top_items = labels, tops


def _terms(item: Item) -> list[str]:
    out = [t.strip().lower() for t in item.tags if t.strip()]
    if item.category:
        out.append(item.category.strip().lower())
    if not out:  # no metadata: fall back to title words
        out = [w for w in re.findall(r"[a-z]{4,}", item.title.lower())]
    return out
