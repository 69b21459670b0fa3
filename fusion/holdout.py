"""The validation split training-time calibration (fusion/calibration.py) scores candidates on.

Carved from the training data only, in three parts that mirror what the served model meets:

* cold items: a share of the items with feedback is left out of the training catalogue (with all
  their interactions) and added afterwards through ``HybridModel.add_items``; their users should
  find them among the cold items;
* cold users: a share of the users with enough feedback is left out and described by their first
  ``n_known`` likes; the rest of their likes are the targets;
* warm: each remaining user's newest ``share`` of likes (by time where the interactions carry
  timestamps, otherwise at random) is held out, at least one like staying in training.

Only positive events (config ``events``) are held out; other events stay in training. Seeded,
so a rerun validates on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mixrec.catalog import Interaction, Item
from mixrec.events import signed_weight

MIN_COLD_ITEMS = 10  # fewer held-out items than this make the cold-item figure noise: skipped


@dataclass
class Holdout:
    train_items: list[Item]
    train_interactions: list[Interaction]
    cold_items: list[Item] = field(default_factory=list)
    warm_users: list[str] = field(default_factory=list)
    warm_targets: dict[str, list[str]] = field(default_factory=dict)
    cold_item_users: list[str] = field(default_factory=list)
    cold_item_targets: dict[str, list[str]] = field(default_factory=dict)
    cold_users: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (first likes, later likes)
    by_time: bool = False

    def sizes(self) -> dict:
        return {"train_interactions": len(self.train_interactions), "warm_users": len(self.warm_users),
                "cold_items": len(self.cold_items), "cold_item_users": len(self.cold_item_users),
                "cold_users": len(self.cold_users), "split": "by time" if self.by_time else "random per user"}


def make_holdout(items: list[Item], interactions: list[Interaction], rules, seed: int = 0, share: float = 0.2,
                 cold_item_share: float = 0.1, cold_user_share: float = 0.1, n_known: int = 5,
                 max_users: int = 2000) -> Holdout:
    """The three-part validation split of ``interactions`` (see the module doc); at most
    ``max_users`` users are scored per part (a sample keeps calibration cheap on big data)."""
    rng = np.random.default_rng(seed)
    positive = np.array([signed_weight(rules, r.event, r.weight) > 0 for r in interactions], bool)
    liked_items = sorted({r.item_id for r, p in zip(interactions, positive) if p})
    by_time = len({r.timestamp for r in interactions}) > 1

    # cold items: drawn among the items with feedback
    n_cold = int(round(cold_item_share * len(liked_items)))
    cold = set(rng.choice(liked_items, size=n_cold, replace=False).tolist()) if n_cold >= MIN_COLD_ITEMS else set()
    # per user, positives in time (or random) order
    order = np.arange(len(interactions))
    keys = (np.array([r.timestamp for r in interactions]) if by_time else rng.random(len(interactions)))
    order = order[np.argsort(keys, kind="stable")]
    per_user: dict[str, list[int]] = {}
    for n in order:
        if positive[n] and interactions[n].item_id not in cold:
            per_user.setdefault(interactions[n].user_id, []).append(n)
    # cold users: among users with enough feedback to tell n_known likes and test on more
    eligible = sorted(u for u, rows in per_user.items() if len({interactions[n].item_id for n in rows}) > n_known + 1)
    n_cu = min(int(round(cold_user_share * len(eligible))), max_users)
    cold_user_ids = set(rng.choice(eligible, size=n_cu, replace=False).tolist()) if n_cu else set()

    held = np.zeros(len(interactions), bool)
    hold = Holdout(train_items=[it for it in items if it.item_id not in cold],
                   cold_items=[it for it in items if it.item_id in cold], train_interactions=[], by_time=by_time)
    for n, r in enumerate(interactions):
        if r.item_id in cold or r.user_id in cold_user_ids:
            held[n] = True
    for u in sorted(cold_user_ids):
        seq = list(dict.fromkeys(interactions[n].item_id for n in per_user[u]))
        hold.cold_users.append((seq[:n_known], seq[n_known:]))
    warm = [u for u in sorted(per_user) if u not in cold_user_ids and len(per_user[u]) >= 2]
    if len(warm) > max_users:
        warm = sorted(rng.choice(warm, size=max_users, replace=False).tolist())
    for u in warm:
        rows = per_user[u]
        n_test = min(max(1, int(round(share * len(rows)))), len(rows) - 1)
        test = rows[-n_test:]
        held[test] = True
        targets = list(dict.fromkeys(interactions[n].item_id for n in test))
        # an item also liked earlier stays a training item: not a target
        earlier = {interactions[n].item_id for n in rows[:-n_test]}
        targets = [i for i in targets if i not in earlier]
        if targets:
            hold.warm_users.append(u)
            hold.warm_targets[u] = targets
    # cold-item users: training users (not cold users) who liked a cold item
    targets_ci: dict[str, list[str]] = {}
    for r, p in zip(interactions, positive):
        if p and r.item_id in cold and r.user_id not in cold_user_ids:
            targets_ci.setdefault(r.user_id, []).append(r.item_id)
    ci_users = sorted(targets_ci)
    if len(ci_users) > max_users:
        ci_users = sorted(rng.choice(ci_users, size=max_users, replace=False).tolist())
    hold.cold_item_users = ci_users
    hold.cold_item_targets = {u: list(dict.fromkeys(targets_ci[u])) for u in ci_users}
    hold.train_interactions = [r for r, h in zip(interactions, held) if not h]
    return hold
