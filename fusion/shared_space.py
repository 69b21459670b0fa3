"""Per-modality projections from each encoder's native space into one shared space.

Method (why this one): the text encoder is the only one that is reliably
pretrained and it covers (almost) every item, so the shared space is *anchored*
on it: a PCA of the anchor modality's vectors gives the shared axes (keeping
the dominant semantic directions, dropping noise), and every other modality is
mapped onto those axes with a ridge regression fitted on the items that have
both modalities. Compared with CCA this

* never lets a weak (or untrained) encoder pull the shared axes away from the
  text semantics: a weak modality just predicts the anchor badly,
* measures that directly: the leave-one-out R^2 of each ridge map becomes the
  modality's weight when the modalities of one item are fused, so an untrained
  image/audio tower contributes little and a good one contributes a lot,
* needs only a linear solve per modality (RidgeCV picks the penalty by
  efficient leave-one-out), so it refits in milliseconds on a catalog.

Missing modalities are masked: an item's fused vector is the weighted mean of
the projections of the modalities it *has*, weights renormalised over them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from encoders.errors import EncoderMismatchError
from encoders.fingerprint import check_same
from mixrec.config import MODALITIES, FusionConfig
from mixrec.embeddings import ItemEmbeddings

SHARED_SPACE_FORMAT = 1
_RIDGE_ALPHAS = np.logspace(-3, 4, 15)
_MIN_WEIGHT = 0.05  # a modality with no predictive power still breaks ties among items lacking text


class IncompatibleEmbeddingsError(EncoderMismatchError):
    """Vectors (or an artifact) come from encoders other than the ones the model was fitted with."""


def unit_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


@dataclass
class ModalityProjection:
    """x -> unit((x - mean) @ weight + bias) into the shared space."""

    mean: np.ndarray  # (d,)
    weight: np.ndarray  # (d, D)
    bias: np.ndarray  # (D,)
    quality: float  # anchor: 1.0; others: leave-one-out R^2 of predicting the anchor coordinates
    aligned: bool  # False when no item had both this modality and the anchor

    def apply(self, x: np.ndarray) -> np.ndarray:
        return unit_rows((np.asarray(x, np.float32) - self.mean) @ self.weight + self.bias)


@dataclass
class SharedSpace:
    dim: int
    anchor: str
    projections: dict[str, ModalityProjection]
    native_dims: dict[str, int]
    encoders: dict[str, dict] = field(default_factory=dict)  # describe() + fingerprint of each encoder
    requested_dim: int | None = None  # fusion.shared_dim as configured (dim may be smaller: see adjustments)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, emb: ItemEmbeddings, cfg: FusionConfig) -> "SharedSpace":
        present = [m for m in MODALITIES if m in emb.vectors and emb.masks[m].any()]
        if not present:
            raise ValueError("cannot fit a shared space: no item has any modality")
        # Anchor: the best-covered modality, text first on ties (the trained encoder offline).
        anchor = max(present, key=lambda m: (int(emb.masks[m].sum()), -MODALITIES.index(m)))
        xa = emb.vectors[anchor][emb.masks[anchor]].astype(np.float64)
        mean_a = xa.mean(axis=0)
        comps = _principal_axes(xa - mean_a, cfg.shared_dim)  # (d_anchor, D)
        dim = comps.shape[1]
        projections = {anchor: ModalityProjection(mean_a.astype(np.float32), comps.astype(np.float32),
                                                  np.zeros(dim, np.float32), 1.0, True)}
        # Anchor coordinates of every item that has the anchor (targets for the ridge maps).
        target = np.zeros((len(emb), dim))
        target[emb.masks[anchor]] = (xa - mean_a) @ comps
        for m in present:
            if m == anchor:
                continue
            both = emb.masks[m] & emb.masks[anchor]
            projections[m] = _fit_ridge(emb.vectors[m], emb.masks[m], both, target, dim, cfg.seed)
        return cls(dim, anchor, projections, {m: int(emb.vectors[m].shape[1]) for m in present},
                   {m: dict(emb.encoders.get(m, {})) for m in present}, int(cfg.shared_dim))

    def adjustments(self) -> list[dict]:
        """Config values the fit could not honour (reported by `mixrec train` and the service's ``info``)."""
        if self.requested_dim is None or self.requested_dim == self.dim:
            return []
        native = self.native_dims.get(self.anchor)
        why = (f"capped at the {self.anchor} (anchor) encoder's dimension {native}" if native == self.dim
               else "capped at the number of items with the anchor modality minus one")
        return [{"field": "fusion.shared_dim", "configured": self.requested_dim, "used": self.dim, "why": why}]

    # ------------------------------------------------------------------ using
    @property
    def modalities(self) -> list[str]:
        return list(self.projections)

    @property
    def dims(self) -> dict[str, int]:
        """Native dimension per fitted modality (what ``project`` accepts)."""
        return dict(self.native_dims)

    def weight(self, modality: str) -> float:
        return max(self.projections[modality].quality, _MIN_WEIGHT)

    def check_vectors(self, modality: str, x: np.ndarray) -> None:
        if modality not in self.projections:
            raise IncompatibleEmbeddingsError(
                f"the shared space has no {modality} projection (fitted modalities: {self.modalities})")
        if x.ndim != 2 or x.shape[1] != self.native_dims[modality]:
            raise IncompatibleEmbeddingsError(
                f"{modality} vectors have shape {x.shape}, but the model was fitted on "
                f"{self.native_dims[modality]}-d {modality} vectors "
                f"({self.encoders.get(modality, {}).get('model', 'unknown encoder')}); "
                "re-encode with the same encoder or retrain")

    def project(self, modality: str, x: np.ndarray) -> np.ndarray:
        """(n, d_modality) native vectors -> (n, D) unit rows in the shared space."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        self.check_vectors(modality, x)
        return self.projections[modality].apply(x)

    def check_compatible(self, emb: ItemEmbeddings) -> None:
        for m, v in emb.vectors.items():
            if m in self.projections and emb.masks[m].any():
                self.check_vectors(m, v)
        check_same(emb.encoders, self.encoders, have_name="the embeddings", want_name="the model",
                   fix="re-encode the catalog with the model's encoders (mixrec encode) or retrain",
                   slots=[m for m in MODALITIES if m in emb.vectors], error=IncompatibleEmbeddingsError)

    def project_items(self, emb: ItemEmbeddings) -> dict[str, np.ndarray]:
        """Per-modality (N, D) projections; rows of items lacking the modality are zero."""
        self.check_compatible(emb)
        out = {}
        for m in self.projections:
            rows = np.zeros((len(emb), self.dim), np.float32)
            if m in emb.vectors and emb.masks[m].any():
                mask = emb.masks[m]
                rows[mask] = self.project(m, emb.vectors[m][mask])
            out[m] = rows
        return out

    def fuse_projected(self, per_modality: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> np.ndarray:
        n = next(iter(per_modality.values())).shape[0]
        acc = np.zeros((n, self.dim), np.float32)
        for m, rows in per_modality.items():
            acc += self.weight(m) * masks[m][:, None] * rows
        # Weighted mean over present modalities, then unit length; items with no modality stay zero.
        norms = np.linalg.norm(acc, axis=1, keepdims=True)
        return np.where(norms > 0, acc / np.maximum(norms, 1e-12), 0.0).astype(np.float32)

    def fuse(self, emb: ItemEmbeddings) -> np.ndarray:
        """(N, D) unit rows: masked, quality-weighted mean of each item's present modalities."""
        per = self.project_items(emb)
        masks = {m: (emb.masks[m] if m in emb.masks else np.zeros(len(emb), bool)) for m in per}
        return self.fuse_projected(per, masks)

    def fuse_query(self, vectors: dict[str, np.ndarray]) -> np.ndarray | None:
        """One (D,) unit vector from any subset of native-space query vectors (None if none given)."""
        acc = np.zeros(self.dim, np.float32)
        for m, v in vectors.items():
            acc += self.weight(m) * self.project(m, np.asarray(v, np.float32).reshape(1, -1))[0]
        n = float(np.linalg.norm(acc))
        return acc / n if n > 0 else None

    # ------------------------------------------------------------------ persistence
    def arrays(self, prefix: str = "space_") -> dict[str, np.ndarray]:
        out = {}
        for m, p in self.projections.items():
            out[f"{prefix}{m}_mean"] = p.mean
            out[f"{prefix}{m}_weight"] = p.weight
            out[f"{prefix}{m}_bias"] = p.bias
        return out

    def meta(self) -> dict:
        return {"format": SHARED_SPACE_FORMAT, "dim": self.dim, "anchor": self.anchor,
                "native_dims": self.native_dims, "encoders": self.encoders, "requested_dim": self.requested_dim,
                "quality": {m: p.quality for m, p in self.projections.items()},
                "aligned": {m: p.aligned for m, p in self.projections.items()}}

    @classmethod
    def from_parts(cls, meta: dict, arrays, prefix: str = "space_") -> "SharedSpace":
        if meta.get("format") != SHARED_SPACE_FORMAT:
            raise ValueError(f"unsupported shared-space format {meta.get('format')!r}")
        projections = {m: ModalityProjection(np.asarray(arrays[f"{prefix}{m}_mean"]),
                                             np.asarray(arrays[f"{prefix}{m}_weight"]),
                                             np.asarray(arrays[f"{prefix}{m}_bias"]),
                                             float(meta["quality"][m]), bool(meta["aligned"][m]))
                       for m in meta["native_dims"]}
        return cls(int(meta["dim"]), meta["anchor"], projections,
                   {m: int(d) for m, d in meta["native_dims"].items()}, meta.get("encoders", {}),
                   meta.get("requested_dim"))

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "shared_space.npz", **self.arrays())
        (d / "shared_space.json").write_text(json.dumps(self.meta(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> "SharedSpace":
        d = Path(directory)
        meta = json.loads((d / "shared_space.json").read_text())
        with np.load(d / "shared_space.npz", allow_pickle=False) as z:
            return cls.from_parts(meta, {k: z[k] for k in z.files})


def _principal_axes(centred: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal axes (d, k'), k' = min(k, rank bound), via the d x d covariance (cheap: n >> d)."""
    n, d = centred.shape
    k = int(min(k, d, max(n - 1, 1)))
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(vals)[::-1][:k]
    return vecs[:, order]


def _fit_ridge(x_all: np.ndarray, mask: np.ndarray, both: np.ndarray, target: np.ndarray,
               dim: int, seed: int) -> ModalityProjection:
    x = x_all[mask].astype(np.float64)
    mean = x.mean(axis=0)
    if both.sum() < 3:
        # Nothing to align against: its own PCA keeps the modality usable among its peers,
        # but it is flagged unaligned and fused with the minimum weight.
        axes = _principal_axes(x - mean, dim)
        w = np.zeros((x.shape[1], dim))
        w[:, :axes.shape[1]] = axes
        return ModalityProjection(mean.astype(np.float32), w.astype(np.float32), np.zeros(dim, np.float32),
                                  0.0, False)
    xb = x_all[both].astype(np.float64) - mean
    yb = target[both]
    ridge = RidgeCV(alphas=_RIDGE_ALPHAS, fit_intercept=True, store_cv_results=True).fit(xb, yb)
    # Leave-one-out R^2 over all target coordinates: how well this modality predicts the anchor.
    loo_mse = ridge.cv_results_[:, :, list(_RIDGE_ALPHAS).index(ridge.alpha_)].mean()
    quality = float(np.clip(1.0 - loo_mse / max(yb.var(axis=0).mean(), 1e-12), 0.0, 1.0))
    return ModalityProjection(mean.astype(np.float32), ridge.coef_.T.astype(np.float32),
                              np.asarray(ridge.intercept_, np.float32), quality, True)
