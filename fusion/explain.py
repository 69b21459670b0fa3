"""Why an item was recommended: interest clusters, the strongest modality, and liked items it resembles."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from fusion.codebook import Codebook
    from fusion.hybrid import _Snapshot
    from fusion.shared_space import SharedSpace

TOP_CLUSTERS = 2
TOP_LIKED = 3


def explain(snap: "_Snapshot", codebook: "Codebook", space: "SharedSpace", item: int, interest: np.ndarray,
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
    present = [m for m in snap.per_modality if snap.masks[m][item]]
    if not present:
        return None, {}
    if profile is None:  # nothing to compare against: fall back to the fusion weights
        raw = {m: space.weight(m) for m in present}
    else:
        raw = {m: space.weight(m) * max(float(snap.per_modality[m][item] @ profile), 0.0) for m in present}
    total = sum(raw.values())
    shares = {m: round(v / total, 4) if total > 0 else round(1.0 / len(present), 4) for m, v in raw.items()}
    return max(shares, key=shares.get), shares


def _nearest_liked(snap, item: int, liked: np.ndarray) -> list[dict]:
    liked = np.asarray([j for j in liked if j != item], np.int64)
    if len(liked) == 0:
        return []
    content = snap.fused[liked] @ snap.fused[item]
    reps = snap.item_repr[liked]
    norms = np.linalg.norm(reps, axis=1) * max(float(np.linalg.norm(snap.item_repr[item])), 1e-12)
    collab = (reps @ snap.item_repr[item]) / np.maximum(norms, 1e-12)
    sim = 0.5 * (content + collab)
    top = np.argsort(-sim)[:TOP_LIKED]
    return [{"item_id": snap.item_ids[liked[t]], "similarity": round(float(sim[t]), 4)} for t in top]
