"""Self-calibrating training: choose the fusion settings on the caller's own data, then refit.

The defaults of fusion (feature weights, codebook size, the new-user blend, epochs) were chosen
on one dataset and do not transfer, so ``train_model`` picks them from a validation split of the
data it is given (fusion/holdout.py): a time- (or random-) held-out slice of known users, items
trained without and added afterwards through ``HybridModel.add_items`` (as the service adds
them), and users known only by their first few likes. Each candidate of ``candidate_set`` is
trained once on the rest; the per-epoch figures of that one run give early stopping, and the
scoring-time knobs (new-user blend, cold-item map weight) are chosen on the same model without
refitting. The candidate set always holds plain "LightFM ids + tags", so the choice is never
worse on validation than that. The chosen settings are refitted on all the data.

``mixrec train`` and the Python API both call ``train_model``; the report goes to the training
output, to ``calibration.json`` beside the artifacts and to ``mixrec info``.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fusion import validation
from fusion.features import FeatureWeights
from fusion.holdout import Holdout, make_holdout
from fusion.hybrid import HybridModel
from fusion.query import Query, QueryBlend, blend, calibrate_blend
from fusion.scoring import users_scores
from mixrec.catalog import Interaction, Item
from mixrec.config import MixrecConfig
from mixrec.embeddings import ItemEmbeddings

MODES = ("off", "fast", "full")
REPORT_FILE = "calibration.json"
K = 10
MIN_VALIDATION_USERS = 10  # fewer validation users than this: no calibration (a figure of noise)
COLD_MAP_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # scoring-time: how far a cold item moves to its predicted representation
# New-user blends tried at every epoch checkpoint (cheap, fixed); the full coordinate search
# (query.calibrate_blend) runs once, on the chosen checkpoint.
_ZERO = {n: 0.0 for n in ("lightfm", "liked", "neighbours", "cooccurrence", "association", "content", "popularity")}
BLEND_STARTS = {
    "shipped": QueryBlend(),
    "mean of liked items": QueryBlend(**{**_ZERO, "liked": 1.0}),
    "liked items + content": QueryBlend(**{**_ZERO, "liked": 1.0, "content": 0.25}),
    "neighbours": QueryBlend(**{**_ZERO, "neighbours": 1.0}),
}


@dataclass(frozen=True)
class Candidate:
    """One setting trained on the validation split: feature weights + FusionConfig overrides."""

    name: str
    weights: FeatureWeights
    fusion: dict = field(default_factory=dict)

    def config(self, cfg: MixrecConfig, epochs: int | None = None, threads: int | None = None) -> MixrecConfig:
        update: dict[str, Any] = {"fusion": cfg.fusion.model_copy(update=self.fusion)}
        model = {k: v for k, v in (("epochs", epochs), ("num_threads", threads)) if v is not None}
        if model:
            update["model"] = cfg.model.model_copy(update=model)
        return cfg.model_copy(update=update)


SHIPPED = Candidate("shipped defaults", FeatureWeights())
# Plain LightFM ids + tags expressed in mixrec's features: identity and tags only, every feature one
# unit of the row's L1 mass (tools/evaluation/baselines.py LightFMGenres builds the same rows).
IDS_TAGS = Candidate("ids + tags", FeatureWeights(identity=1.0, clusters=0.0, tags=1.0, category=0.0, item_type=0.0,
                                                  per_feature=True))


def candidate_set(mode: str, cfg: MixrecConfig) -> list[Candidate]:
    """``fast``: the shipped defaults and ids + tags; ``full`` adds feature-weight, token and
    codebook variants (each one more fit on the validation split)."""
    if mode not in MODES or mode == "off":
        raise ValueError(f"calibrate must be one of {MODES}, got {mode!r}")
    out = [SHIPPED, IDS_TAGS]
    if mode == "full":
        size = cfg.fusion.codebook_size
        out += [
            Candidate("ids + tags + interest tokens", FeatureWeights(identity=1.0, clusters=0.25, tags=1.0,
                                                                     category=0.0, item_type=0.0)),
            Candidate("identity 1", FeatureWeights(identity=1.0)),
            Candidate("identity 2", FeatureWeights(identity=2.0)),
            Candidate("interest tokens x2", FeatureWeights(clusters=1.0)),
            Candidate("2 tokens per item", FeatureWeights(item_tokens=2)),
            Candidate("user interest tokens", FeatureWeights(user_interests=0.2)),
            Candidate(f"codebook {max(2, size // 2)}", FeatureWeights(), {"codebook_size": max(2, size // 2)}),
            Candidate(f"codebook {size * 2}", FeatureWeights(), {"codebook_size": size * 2}),
        ]
    return out


def checkpoints(mode: str, epochs: int) -> list[int]:
    """Epochs at which a validation run is scored (early stopping): fast at half and all of the
    configured epochs; full every ~quarter, up to 1.5x the configured epochs."""
    if mode == "fast":
        return sorted({max(1, epochs // 2), epochs})
    top = int(np.ceil(epochs * 1.5))
    step = max(1, int(round(epochs / 4)))
    out = list(range(step, top + 1, step))
    return out if out and out[-1] == top else out + [top]


# ================================================================== scoring one validation model
@dataclass
class Checkpoint:
    """Validation figures of one candidate after ``epochs`` epochs (NDCG@10; None: protocol absent)."""

    epochs: int
    warm: float | None = None
    warm_auc: float | None = None
    cold_items: float | None = None
    cold_map_weight: float = 1.0
    cold_users: float | None = None
    cold_users_auc: float | None = None
    blend: str = "shipped"


def _warm(model: HybridModel, hold: Holdout) -> tuple[float | None, float | None, np.ndarray | None]:
    """Mean NDCG@10 and AUC of the warm validation users, and their NDCG@10 per user."""
    snap = model.snapshot
    users = [u for u in hold.warm_users if u in snap.user_index]
    if not users:
        return None, None, None
    rows = np.array([snap.user_index[u] for u in users], np.int64)
    scores = users_scores(snap, snap.user_repr[rows])
    seen = snap.seen[rows]
    exclude = [seen.indices[seen.indptr[r]:seen.indptr[r + 1]] for r in range(len(rows))]
    targets = [np.array([snap.item_index[i] for i in hold.warm_targets[u]], np.int64) for u in users]
    rel = validation.target_mask(targets, scores.shape[1])
    ok = validation.rankable_mask(len(rows), scores.shape[1], exclude, None)
    per_user = validation.ndcg_at_k(scores, rel, ok, K)
    return validation.mean(per_user), validation.mean(validation.auc(scores, rel, ok)), per_user


def _cold_items(model: HybridModel, hold: Holdout, scan: bool) -> tuple[float | None, float, np.ndarray | None]:
    """NDCG@10 among the simulated cold items, and per user. With ``scan``, at the best cold-map
    weight of ``COLD_MAP_WEIGHTS`` (left set on the model): a cold item's representation is linear
    in the weight, so two published snapshots (weight 0 and 1) give the scores of every weight between.

    The weight moves cold items' scores against the warm items' too, which a ranking among cold items
    alone cannot see; production ranks them among every item. So the scan weighs both alike: NDCG@10
    among the cold items and over the whole catalogue (seen items excluded), each relative to its best
    weight (on ml-100k ub, choosing by the first alone cut whole-catalogue cold-item NDCG@10 to a third)."""
    users = [u for u in hold.cold_item_users if u in model.snapshot.user_index]
    if not users or not hold.cold_items:
        return None, model.cold_map_weight, None

    def scores_at(weight: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if weight is not None:
            model.set_scoring_knobs(cold_map_weight=weight)
        snap = model.snapshot
        rows = np.array([snap.user_index[u] for u in users], np.int64)
        cand = np.zeros(len(snap.item_ids), bool)
        cand[[snap.item_index[it.item_id] for it in hold.cold_items]] = True
        targets = [np.array([snap.item_index[i] for i in hold.cold_item_targets[u]], np.int64) for u in users]
        return users_scores(snap, snap.user_repr[rows]), validation.target_mask(targets, len(cand)), cand

    def ndcgs(scores: np.ndarray, rel: np.ndarray, cand: np.ndarray) -> np.ndarray:
        ok = validation.rankable_mask(len(users), scores.shape[1], None, cand)
        return validation.ndcg_at_k(scores, rel, ok, K)

    if not scan:
        per_user = ndcgs(*scores_at(None))
        return validation.mean(per_user), model.cold_map_weight, per_user
    s1, rel, cand = scores_at(1.0)
    s0, _, _ = scores_at(0.0)
    snap = model.snapshot
    seen = snap.seen[np.array([snap.user_index[u] for u in users], np.int64)]
    everything = validation.rankable_mask(len(users), s1.shape[1],
                                          [seen.indices[seen.indptr[r]:seen.indptr[r + 1]] for r in range(len(users))],
                                          None)
    among, overall = [], []
    for w in COLD_MAP_WEIGHTS:
        s = w * s1 + (1 - w) * s0
        among.append(ndcgs(s, rel, cand))
        overall.append(validation.mean(validation.ndcg_at_k(s, rel, everything, K)))
    a = np.array([validation.mean(v) for v in among])
    o = np.array(overall)
    score = a / max(a.max(), 1e-12) + o / max(o.max(), 1e-12)
    i = int(np.argmax(score))
    best_w = COLD_MAP_WEIGHTS[i]
    model.set_scoring_knobs(cold_map_weight=best_w)
    return float(a[i]), best_w, among[i]


def _cold_user_parts(model: HybridModel, hold: Holdout) -> tuple[list[dict], list[np.ndarray], list[np.ndarray]]:
    snap = model.snapshot
    parts, targets, known = [], [], []
    for liked, later in hold.cold_users:
        liked = [i for i in liked if i in snap.item_index]
        later = [i for i in later if i in snap.item_index]
        if not liked or not later:
            continue
        parts.append(model.score_query(Query(liked_item_ids=tuple(liked))).parts)
        targets.append(np.array([snap.item_index[i] for i in later], np.int64))
        known.append(np.array([snap.item_index[i] for i in liked], np.int64))
    return parts, targets, known


def _blend_figures(parts: list[dict], targets: list[np.ndarray], known: list[np.ndarray],
                   weights: QueryBlend) -> tuple[np.ndarray, np.ndarray]:
    """Per validation user: NDCG@10 and AUC of the blend ``weights`` (0 where undefined)."""
    n = len(next(iter(parts[0].values())))
    scores = np.vstack([blend(p, weights) for p in parts])
    rel = validation.target_mask(targets, n)
    ok = validation.rankable_mask(len(parts), n, known, None)
    return (np.nan_to_num(validation.ndcg_at_k(scores, rel, ok, K)),
            np.nan_to_num(validation.auc(scores, rel, ok)))


def _blend_objective(figures: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Per user, what a new-user blend is chosen on: NDCG@10 + AUC. On NDCG@10 alone the winning
    blend ranked the long tail badly (demo catalogue: cold-user AUC 0.78 against 0.88 for LightFM
    ids + tags, at a gain in NDCG@10 within noise); both count, in their own units."""
    return figures[0] + figures[1]


def _best_fixed_blend(parts: list[dict], targets: list[np.ndarray],
                     known: list[np.ndarray]) -> tuple[str, np.ndarray, np.ndarray]:
    """The entry of ``BLEND_STARTS`` with the best mean ``_blend_objective``, with its per-user
    NDCG@10 and AUC."""
    name, (ndcg, auc) = max(((n, _blend_figures(parts, targets, known, w)) for n, w in BLEND_STARTS.items()),
                            key=lambda t: float(_blend_objective(t[1]).mean()))
    return name, ndcg, auc


def _clearly_better(new: np.ndarray, old: np.ndarray, z: float = 2.0) -> bool:
    """Paired: the mean gain exceeds ``z`` standard errors. A searched blend has many more degrees
    of freedom than the fixed ones, and on a few hundred users it overfits (query.py, QueryBlend)."""
    d = new - old
    return len(d) > 1 and d.mean() > z * d.std(ddof=1) / np.sqrt(len(d))


def _score_checkpoint(model: HybridModel, hold: Holdout, epochs: int,
                      last: bool) -> tuple[Checkpoint, tuple, dict[str, np.ndarray]]:
    """The checkpoint's figures, the cold users' score parts (for the blend search) and, per
    protocol, NDCG@10 per validation user (for the paired comparison in ``_select``)."""
    warm, warm_auc, warm_users = _warm(model, hold)
    cold_items, cmw, cold_item_users = _cold_items(model, hold, scan=last)
    cp = Checkpoint(epochs, warm, warm_auc, cold_items, cmw)
    per_user = {p: v for p, v in (("warm", warm_users), ("cold_items", cold_item_users)) if v is not None}
    parts = _cold_user_parts(model, hold)
    if parts[0]:
        name, ndcg, auc = _best_fixed_blend(*parts)
        per_user["cold_users"] = ndcg
        cp.cold_users, cp.cold_users_auc, cp.blend = float(ndcg.mean()), float(auc.mean()), name
    return cp, parts, per_user


# ================================================================== the report
@dataclass
class CandidateResult:
    name: str
    weights: dict
    fusion: dict
    fit_seconds: float
    checkpoints: list[Checkpoint]
    best: Checkpoint | None = None
    score: float = 0.0


@dataclass
class CalibrationReport:
    mode: str
    seconds: float = 0.0  # the whole of train_model: validation runs + refit
    refit_seconds: float = 0.0
    validation: dict = field(default_factory=dict)  # sizes of the validation split
    candidates: list[CandidateResult] = field(default_factory=list)
    chosen: str = "shipped defaults"
    epochs: int = 0
    weights: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)
    blend: dict = field(default_factory=dict)
    cold_map_weight: float = 1.0
    figures: dict = field(default_factory=dict)  # the chosen setting's validation NDCG@10 / AUC
    selection: str = ""  # why the chosen setting won (or why the configured one stayed)

    def as_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @staticmethod
    def load(directory: str | Path) -> dict | None:
        """The saved report as a dict, None when the artifacts have none (trained with calibration off)."""
        path = Path(directory) / REPORT_FILE
        return json.loads(path.read_text()) if path.is_file() else None


PROTOCOLS = ("warm", "cold_items", "cold_users")


def _select(results: list[CandidateResult], per_user: dict[tuple[str, int], dict[str, np.ndarray]] | None = None,
            reference: tuple[str, int] | None = None, z: float = 2.0) -> tuple[CandidateResult, str]:
    """Best (candidate, checkpoint) by the mean over protocols of NDCG@10 relative to the best
    value any candidate reached on that protocol: every protocol counts alike, whatever its scale.

    With ``per_user`` (NDCG@10 per validation user, by (candidate, epochs) and protocol) and a
    ``reference`` (the configured settings at the configured epochs), the best is chosen over the
    reference only when it is clearly better: its paired gain over the same validation users
    exceeds ``z`` standard errors. Between two settings a few thousand validation users cannot
    tell apart, the one the user configured stays (on ml-100k picking by such noise cost up to 14%
    of cold-item NDCG on the test split). Returns the chosen result and why, in words."""
    top = {p: max((getattr(cp, p) or 0.0 for r in results for cp in r.checkpoints), default=0.0) for p in PROTOCOLS}
    present = [p for p in PROTOCOLS if top[p] > 0]

    def score(cp: Checkpoint) -> float:
        return float(np.mean([(getattr(cp, p) or 0.0) / top[p] for p in present])) if present else 0.0

    for r in results:
        for cp in r.checkpoints:
            s = score(cp)
            if r.best is None or s > r.score + 1e-9:
                r.best, r.score = cp, s
    best = max(results, key=lambda r: r.score)
    if per_user is None or reference is None or reference not in per_user or (best.name, best.best.epochs) == reference:
        return best, f"{best.name} at {best.best.epochs} epochs: the highest validation score"
    ref = next(r for r in results if r.name == reference[0])
    ref_cp = next(cp for cp in ref.checkpoints if cp.epochs == reference[1])
    other = f"{best.name} at {best.best.epochs} epochs"  # named before ref.best changes (best may be ref)
    gain, se = _paired_gain(per_user[(best.name, best.best.epochs)], per_user[reference], top, present)
    if gain > z * se:
        return best, (f"{other}: {gain:+.2%} over the configured settings at "
                      f"{reference[1]} epochs, more than {z:g} standard errors ({se:.2%})")
    ref.best, ref.score = ref_cp, score(ref_cp)
    return ref, (f"the configured settings at {reference[1]} epochs: the best other ({other}, "
                 f"{gain:+.2%}) is within {z:g} standard errors ({se:.2%}) of them")


def _paired_gain(new: dict[str, np.ndarray], old: dict[str, np.ndarray], top: dict[str, float],
                 present: list[str]) -> tuple[float, float]:
    """The selection score's paired difference ``new - old`` and its standard error: per protocol,
    the mean over validation users of the per-user difference (scaled as ``_select`` scales the
    protocol), averaged over protocols (distinct user sets: their variances add)."""
    means, variances = [], []
    for p in present:
        if p not in new or p not in old:
            continue
        d = (np.asarray(new[p], np.float64) - np.asarray(old[p], np.float64)) / top[p]
        d = d[np.isfinite(d)]
        if d.size < 2:
            continue
        means.append(d.mean())
        variances.append(d.var(ddof=1) / d.size)
    if not means:
        return 0.0, 0.0
    return float(np.mean(means)), float(np.sqrt(np.sum(variances)) / len(means))


# ================================================================== train_model
def _validate(cand: Candidate, cfg: MixrecConfig, threads: int, hold: Holdout, emb: ItemEmbeddings,
              content: tuple, marks: list[int]) -> tuple[CandidateResult, dict[int, dict], dict[int, tuple]]:
    """One candidate's validation run: trained on the validation split's training side, cold items
    added afterwards, scored at every epoch checkpoint of ``marks``. Returns its result, and by
    epochs its per-user NDCG@10 (for ``_select``) and its cold users' score parts (blend search)."""
    t0 = time.perf_counter()
    model = HybridModel.train(hold.train_items, emb, hold.train_interactions, cand.config(cfg, threads=threads),
                              weights=cand.weights, epochs=marks[0], content=None if cand.fusion else content)
    model.add_items(hold.cold_items, emb)  # the service's path for new items
    result = CandidateResult(cand.name, asdict(model.weights), dict(cand.fusion), 0.0, [])
    per_user, parts_at = {}, {}
    done = marks[0]
    for e in marks:
        if e > done:
            model.fit_partial(e - done)
            done = e
        cp, parts_at[e], per_user[e] = _score_checkpoint(model, hold, e, last=e == marks[-1])
        result.checkpoints.append(cp)
    result.fit_seconds = time.perf_counter() - t0
    return result, per_user, parts_at


def train_model(items: list[Item], emb: ItemEmbeddings, interactions: list[Interaction], cfg: MixrecConfig,
                calibrate: str = "fast", progress: bool = False, seed: int = 0) -> tuple[HybridModel, CalibrationReport]:
    """Train the hybrid with settings chosen on a validation split of this data (``calibrate``:
    off = the configured defaults, fast = a few candidates, full = more); the refitted model and
    what was chosen, with its validation figures."""
    if calibrate not in MODES:
        raise ValueError(f"calibrate must be one of {', '.join(MODES)}, got {calibrate!r}")
    start = time.perf_counter()
    report = CalibrationReport(mode=calibrate)
    if calibrate == "off":
        model = HybridModel.train(items, emb, interactions, cfg, progress=progress)
        report.refit_seconds = report.seconds = time.perf_counter() - start
        report.epochs, report.weights = cfg.model.epochs, asdict(model.weights)
        report.blend, report.cold_map_weight = model.blend_weights.as_dict(), model.cold_map_weight
        return model, report
    hold = make_holdout(items, interactions, cfg.events, seed=seed, cold_user_share=0.2,
                        max_users=2000 if calibrate == "fast" else 5000)
    report.validation = hold.sizes()
    if len(hold.warm_users) + len(hold.cold_item_users) + len(hold.cold_users) < MIN_VALIDATION_USERS:
        # Too little data to hold anything out: the configured defaults, said so in the report.
        model, report = train_model(items, emb, interactions, cfg, "off", progress, seed)
        report.mode, report.validation = f"{calibrate} (skipped: too few interactions to validate)", hold.sizes()
        return model, report
    best_parts, per_user = {}, {}
    # The shared space and codebook depend on item content only (no interaction): fitted once on the
    # whole catalogue and shared by every candidate with the configured fusion settings and the refit.
    content = HybridModel.fit_content(items, emb, cfg)
    cands = candidate_set(calibrate, cfg)
    # Candidates run side by side, LightFM's threads split between them: LightFM releases the GIL,
    # so one candidate's scoring (Python and numpy) overlaps another's epochs instead of leaving
    # cores idle. Each LightFM run then has one thread: Hogwild with one thread is also reproducible.
    workers = max(1, min(len(cands), cfg.model.num_threads))
    threads = max(1, cfg.model.num_threads // workers)
    marks = checkpoints(calibrate, cfg.model.epochs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calibrate") as pool:
        runs = list(pool.map(lambda c: _validate(c, cfg, threads, hold, emb, content, marks), cands))
    for result, run_per_user, run_parts in runs:
        report.candidates.append(result)
        per_user.update({(result.name, e): v for e, v in run_per_user.items()})
        best_parts.update({(result.name, e): v for e, v in run_parts.items()})
    chosen, report.selection = _select(report.candidates, per_user, reference=(SHIPPED.name, cfg.model.epochs))
    del per_user
    cand = next(c for c in candidate_set(calibrate, cfg) if c.name == chosen.name)
    best = chosen.best
    blend_w = BLEND_STARTS[best.blend]
    parts, targets, known = best_parts[(chosen.name, best.epochs)]
    if parts:
        # A coordinate search from the checkpoint's best fixed blend (full: from every fixed blend;
        # each start costs about as much as a validation epoch).
        starts = [blend_w] if calibrate == "fast" else list(BLEND_STARTS.values())
        searched, _ = calibrate_blend(parts, targets, known, k=K, starts=starts,
                                        rounds=2 if calibrate == "fast" else 3)
        found = _blend_figures(parts, targets, known, searched)
        if _clearly_better(_blend_objective(found), _blend_objective(_blend_figures(parts, targets, known, blend_w))):
            blend_w = replace(searched, content_description=QueryBlend().content_description)
            best.cold_users, best.cold_users_auc, best.blend = float(found[0].mean()), float(found[1].mean()), "searched"
    del best_parts
    t0 = time.perf_counter()
    # Fixed weights (identity resolved on the validation data) so the refit trains what was validated.
    model = HybridModel.train(items, emb, interactions, cand.config(cfg, best.epochs),
                              progress=progress, weights=FeatureWeights(**chosen.weights), epochs=best.epochs,
                              content=None if cand.fusion else content)
    model.set_scoring_knobs(blend=blend_w, cold_map_weight=best.cold_map_weight)
    report.refit_seconds = time.perf_counter() - t0
    report.chosen, report.epochs, report.weights, report.fusion = chosen.name, best.epochs, chosen.weights, cand.fusion
    report.blend, report.cold_map_weight = blend_w.as_dict(), best.cold_map_weight
    report.figures = {"warm_ndcg_at_10": best.warm, "warm_auc": best.warm_auc, "cold_items_ndcg_at_10": best.cold_items,
                      "cold_users_ndcg_at_10": best.cold_users, "cold_users_auc": best.cold_users_auc}
    report.seconds = time.perf_counter() - start
    return model, report
