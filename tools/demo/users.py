"""Synthetic users with hidden tastes, and the implicit feedback they generate.

Each user has a sparse taste distribution over the interest categories (one to
three dominant ones plus a little spread), a preference over item types and an
activity level. Interactions are drawn from taste x type preference x item
popularity, with some uniform noise, so the feedback is learnable yet not
trivially clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mixrec.catalog import DEMO_ITEM_TYPES, Interaction, Item, User

ITEM_TYPES = DEMO_ITEM_TYPES
# Event kinds per item type: (name, implicit weight, base probability).
EVENTS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "product": (("view", 1.0, 0.6), ("like", 2.0, 0.25), ("purchase", 3.0, 0.15)),
    "video": (("view", 1.0, 0.65), ("like", 2.0, 0.35)),
    "audio": (("play", 1.0, 0.65), ("like", 2.0, 0.35)),
}
MIN_INTERACTIONS = 5
START_TIMESTAMP = 1_704_067_200  # 2024-01-01T00:00:00Z, fixed so files are reproducible
TASTE_SPREAD = 0.1  # share of a user's taste spread evenly over all categories
NOISE_SHARE = 0.05  # share of picks made uniformly at random


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    tastes: np.ndarray  # over categories, sums to 1
    type_preference: np.ndarray  # over ITEM_TYPES, sums to 1
    n_interactions: int


def sample_users(n_users: int, categories: tuple[str, ...], n_items: int,
                 rng: np.random.Generator, mean_interactions: float) -> list[DemoUser]:
    users = []
    k = len(categories)
    max_interactions = max(MIN_INTERACTIONS, n_items // 3)
    for u in range(n_users):
        n_dominant = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        dominant = rng.choice(k, size=n_dominant, replace=False)
        tastes = np.full(k, TASTE_SPREAD / k)
        tastes[dominant] += (1 - TASTE_SPREAD) * rng.dirichlet(np.full(n_dominant, 3.0))
        type_preference = rng.dirichlet(np.full(len(ITEM_TYPES), 2.5))
        # Heavy-tailed activity, as in real logs; every user has at least a handful.
        activity = rng.lognormal(np.log(mean_interactions) - 0.18, 0.6)
        n = int(np.clip(round(activity), MIN_INTERACTIONS, max_interactions))
        users.append(DemoUser(f"user-{u:04d}", tastes, type_preference, n))
    return users


def item_affinity(items: list[Item], secondaries: list[str | None], categories: tuple[str, ...]) -> np.ndarray:
    """(n_items, n_categories) membership: the main category, and a little of a secondary one."""
    index = {c: i for i, c in enumerate(categories)}
    m = np.zeros((len(items), len(categories)))
    for row, (item, secondary) in enumerate(zip(items, secondaries)):
        if secondary is None:
            m[row, index[item.category]] = 1.0
        else:
            m[row, index[item.category]] = 0.7
            m[row, index[secondary]] = 0.3
    return m


def sample_interactions(users: list[DemoUser], items: list[Item], affinity: np.ndarray,
                        rng: np.random.Generator) -> list[Interaction]:
    """Implicit feedback, sorted by time (each user's own events in increasing time too)."""
    type_index = np.array([ITEM_TYPES.index(it.type) for it in items])
    popularity = rng.lognormal(0.0, 0.7, size=len(items))  # a few hits, a long tail
    rows: list[Interaction] = []
    for user in users:
        taste_fit = affinity @ user.tastes
        p = (taste_fit ** 2) * user.type_preference[type_index] * popularity
        p = (1 - NOISE_SHARE) * p / p.sum() + NOISE_SHARE / len(items)
        picks = rng.choice(len(items), size=user.n_interactions, replace=False, p=p)
        t = START_TIMESTAMP + rng.uniform(0, 150 * 86_400)  # first visit within ~5 months
        for i in picks:
            t += rng.exponential(6 * 3600)
            event, weight = _event(items[i].type, taste_fit[i], rng)
            rows.append(Interaction(user.user_id, items[i].item_id, event, weight, float(round(t))))
    rows.sort(key=lambda r: (r.timestamp, r.user_id, r.item_id))
    return rows


def _event(item_type: str, taste_fit: float, rng: np.random.Generator) -> tuple[str, float]:
    """Stronger events (like, purchase) grow likelier the better the item fits the user."""
    kinds = EVENTS[item_type]
    p = np.array([base * (1.0 if k == 0 else 0.5 + 1.5 * taste_fit) for k, (_, _, base) in enumerate(kinds)])
    name, weight, _ = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    return name, weight


def to_user_record(user: DemoUser, categories: tuple[str, ...]) -> User:
    return User(user_id=user.user_id,
                tastes={c: round(float(w), 4) for c, w in zip(categories, user.tastes)},
                type_preference={t: round(float(w), 4) for t, w in zip(ITEM_TYPES, user.type_preference)},
                n_interactions=user.n_interactions)
