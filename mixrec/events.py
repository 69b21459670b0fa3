"""Feedback event semantics: what an event type means for training and for ranking.

The rules live in configuration (``events:`` in the YAML, ``mixrec.config.EventRule``), as
serious recommenders keep them (gorse's positive / read feedback types): a ``positive`` event
trains as a like with ``caller weight x rule weight``; a ``negative`` one (``dislike`` by default)
cancels that much positive weight on the pair and keeps the item out of the user's
recommendations; a ``seen`` one only marks the item as seen. Event types without a rule are
refused by the API and ignored by training.
"""

from __future__ import annotations

from collections.abc import Mapping

from mixrec.config import EventRule, default_events

DEFAULT_RULES: Mapping[str, EventRule] = default_events()


def signed_weight(rules: Mapping[str, EventRule], event: str, weight: float) -> float:
    """The event's contribution to the pair's positive weight: > 0 pulls, < 0 pushes, 0 adds nothing."""
    rule = rules.get(event)
    if rule is None or rule.role == "seen":
        return 0.0
    w = float(weight) * rule.weight
    return w if rule.role == "positive" else -w


def negative_events(rules: Mapping[str, EventRule]) -> tuple[str, ...]:
    return tuple(sorted(e for e, r in rules.items() if r.role == "negative"))
