"""Why an item was recommended: interest clusters, the strongest modality, and liked items it resembles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fusion.scoring import (FoldIn, ScoredQuery, fresh_shift, liked_interest, liked_similarity, modality_shares,
                            taste_profile, user_scores)
from fusion.snapshot import Snapshot

if TYPE_CHECKING:
    from fusion.codebook import Codebook
    from fusion.shared_space import SharedSpace

TOP_CLUSTERS = 2
TOP_LIKED = 3


def explain(snap: Snapshot, codebook: "Codebook", space: "SharedSpace", item: int, interest: np.ndarray,
            profile: np.ndarray | None, liked: np.ndarray, components: dict[str, float],
            fresh: dict[int, dict] | None = None) -> dict:
    """Explanation dict for ``item`` given the user's interest distribution and shared-space profile.

    * ``interests``: clusters where user interest x item membership is largest, with labels;
    * ``modality``: the item modality whose projection is closest to the user's profile
      (weighted like the fusion weights it), with every present modality's share;
    * ``because_you_liked``: liked items nearest to it (shared space and LightFM representations);
    * ``components``: the score parts (LightFM, popularity, co-occurrence, …) for this item;
    * ``because`` (only when the nearest liked item is a fresh event, ``fresh``: row -> event, age,
      title): a sentence naming it ("because you liked 'X' a minute ago").
    """
    out: dict = {"components": {k: round(v, 4) for k, v in components.items()}}
    membership = np.zeros(codebook.size, np.float32)
    membership[snap.item_assign.clusters[item]] = snap.item_assign.weights[item]
    contrib = interest * membership
    order = [int(c) for c in np.argsort(-contrib)[:TOP_CLUSTERS] if contrib[c] > 0]
    if not order:  # no overlap with the user's interests: say which cluster the item itself belongs to
        order = [int(c) for c in snap.item_assign.clusters[item][:1] if membership[c] > 0]
    out["interests"] = [{"cluster": c, "label": codebook.labels[c], "user_share": round(float(interest[c]), 4),
                         "item_share": round(float(membership[c]), 4)} for c in order]
    out["modality"], out["modality_shares"] = _modality(snap, space, item, profile)
    out["because_you_liked"] = _nearest_liked(snap, item, liked)
    if fresh:
        for entry in out["because_you_liked"]:
            ev = fresh.get(snap.item_index[entry["item_id"]])
            if ev is not None:
                entry.update(fresh=True, event=ev["event"], seconds_ago=round(ev["seconds_ago"], 1))
        top = out["because_you_liked"][0] if out["because_you_liked"] else None
        if top is not None and top.get("fresh"):
            ev = fresh[snap.item_index[top["item_id"]]]
            out["because"] = f"because you {_past(ev['event'])} {ev['title']!r} {ago(ev['seconds_ago'])}"
    return out


_PAST = {"like": "liked", "view": "viewed", "click": "clicked", "play": "played", "purchase": "purchased"}


def _past(event: str) -> str:
    return _PAST.get(event, f"sent {event!r} on")


def ago(seconds: float) -> str:
    """A human age: "just now", "a minute ago", "5 minutes ago", "2 hours ago", "3 days ago"."""
    s = max(float(seconds), 0.0)
    for limit, unit, size in ((3600, "minute", 60), (86400, "hour", 3600), (float("inf"), "day", 86400)):
        if s < 45 and unit == "minute":
            return "just now"
        if s < limit * 0.75 or unit == "day":
            n = max(int(round(s / size)), 1)
            return f"a{'n' if unit == 'hour' else ''} {unit} ago" if n == 1 else f"{n} {unit}s ago"
    return "a while ago"


def _modality(snap, space, item: int, profile: np.ndarray | None) -> tuple[str | None, dict[str, float]]:
    raw = modality_shares(snap, space, item, profile)
    if not raw:
        return None, {}
    total = sum(raw.values())
    shares = {m: round(v / total, 4) if total > 0 else round(1.0 / len(raw), 4) for m, v in raw.items()}
    return max(shares, key=shares.get), shares


def _nearest_liked(snap, item: int, liked: np.ndarray) -> list[dict]:
    liked = np.asarray([j for j in liked if j != item], np.int64)
    if len(liked) == 0:
        return []
    sim = liked_similarity(snap, item, liked)
    top = np.argsort(-sim)[:TOP_LIKED]
    return [{"item_id": snap.item_ids[liked[t]], "similarity": round(float(sim[t]), 4)} for t in top]


# ====================================================================== per kind of reader
def explain_user(snap: Snapshot, codebook: "Codebook", space: "SharedSpace", user_row: int, rows: np.ndarray,
                 scores: np.ndarray | None = None) -> list[dict]:
    """Explanations for a known user's item ``rows`` (``scores``: their scores there, when known)."""
    if scores is None:
        scores = user_scores(snap, snap.user_repr[user_row], rows)
    liked = snap.seen[user_row].indices
    profile = taste_profile(snap, liked, None)
    interest = snap.user_interest[user_row]
    return [explain(snap, codebook, space, int(j), interest, profile, liked, {"lightfm": float(s)})
            for j, s in zip(rows, scores)]


def explain_query(scored: ScoredQuery, codebook: "Codebook", space: "SharedSpace", rows: np.ndarray) -> list[dict]:
    """Explanations for a scored query's item ``rows``: every score component the blend combined."""
    parts = {n: np.asarray(v)[rows] for n, v in scored.parts.items()}
    return [explain(scored.snapshot, codebook, space, int(j), scored.interest, scored.profile, scored.liked,
                    {n: float(v[i]) for n, v in parts.items()}) for i, j in enumerate(rows)]


def explain_fold_in(fold: FoldIn, codebook: "Codebook", space: "SharedSpace", rows: np.ndarray,
                    scores: np.ndarray | None) -> list[dict]:
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
    moved = fresh_shift(snap, fold, rows)
    if len(liked):
        interest = liked_interest(snap, codebook, liked)
    else:
        interest = snap.user_interest[fold.user_row] if fold.user_row is not None else np.zeros(codebook.size)
    profile = taste_profile(snap, liked, None)
    return [explain(snap, codebook, space, int(j), interest, profile, liked,
                    {"lightfm": float(s), "fresh_events": float(m)}, fresh=fresh)
            for j, s, m in zip(rows, scores, moved)]
