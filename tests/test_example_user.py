"""The README / `make demo` example user shows the product at its best (issue 16, part 3)."""

from __future__ import annotations

from mixrec.catalog import Interaction, Item
from tools.demo.job import best_example_user


def _items():
    out = []
    for cat in ("jazz", "hiking"):
        for t in ("product", "video", "audio"):
            for n in range(4):
                out.append(Item(item_id=f"{cat}-{t}-{n}", type=t, title=f"{cat} {t} {n}", category=cat))
    return out


def test_the_busiest_user_who_has_seen_all_of_their_interest_is_not_picked():
    items = _items()
    jazz = [it.item_id for it in items if it.category == "jazz"]
    hiking = [it.item_id for it in items if it.category == "hiking"]
    events = [Interaction("busy", i, "like", 1.0, 0.0) for i in jazz]  # every jazz item seen: nothing left
    events += [Interaction("hiker", i, "like", 1.0, 0.0) for i in hiking[:2] + hiking[4:6] + hiking[8:10]]
    assert best_example_user(items, events, min_events=3) == "hiker"


def test_enough_history_outranks_a_thin_profile():
    items = _items()
    hiking = [it.item_id for it in items if it.category == "hiking"]
    jazz = [it.item_id for it in items if it.category == "jazz"]
    events = [Interaction("thin", hiking[0], "like", 1.0, 0.0)]
    events += [Interaction("fan", i, "like", 1.0, 0.0) for i in jazz[::2]]
    assert best_example_user(items, events, min_events=5) == "fan"
