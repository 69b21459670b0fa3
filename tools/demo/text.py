"""Titles, descriptions and tags written from a category's vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.demo.categories import Category

_VIDEO_FORMATS = ("step-by-step guide", "quick tutorial", "full tutorial", "vlog", "highlight reel",
                  "beginner lesson", "review")
_VIDEO_TITLE_TEMPLATES = ("{topic}", "{topic} ({fmt})", "{topic}: {fmt}")
# Products speak of use and features; videos and tracks of what they contain ("note").
_DESCRIPTION_TEMPLATES = {
    "product": ("{use} {feature}", "{feature} {use}", "Our {adj_lc} {noun}. {use}"),
    "video": ("{a_fmt}: {topic}. {note}", "{topic} in a short {fmt}. {note}",
              "Watch this {fmt}. {note}"),
    "audio": ("{note}", "{a_mood} track: {form}. {note}", "{mood} {form} to enjoy at home. {note}"),
}


def _with_article(phrase: str) -> str:
    return ("An " if phrase[0].lower() in "aeiou" else "A ") + phrase


@dataclass(frozen=True)
class ItemText:
    title: str
    description: str
    tags: list[str]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _title(item_type: str, cat: Category, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    v = cat.vocab
    if item_type == "product":
        adj, noun = _pick(rng, v.product_adjectives), _pick(rng, v.product_nouns)
        return f"{adj} {noun}", {"adj_lc": adj.lower(), "noun": noun}
    if item_type == "video":
        topic, fmt = _pick(rng, v.video_topics), _pick(rng, _VIDEO_FORMATS)
        title = _pick(rng, _VIDEO_TITLE_TEMPLATES).format(topic=topic, fmt=fmt)
        return title, {"topic": topic, "fmt": fmt, "a_fmt": _with_article(fmt)}
    mood, form = _pick(rng, v.audio_moods), _pick(rng, v.audio_forms)
    return f"{mood} {form}", {"mood": mood, "a_mood": _with_article(mood.lower()), "form": form}


def write_text(item_type: str, cat: Category, secondary: Category | None,
               rng: np.random.Generator, taken_titles: set[str]) -> ItemText:
    """Write an item's text; ``taken_titles`` keeps titles unique across the catalog."""
    for _ in range(20):
        title, slots = _title(item_type, cat, rng)
        if title not in taken_titles:
            break
    else:  # the vocabulary is exhausted for this category: number the edition
        base, n = title, 2
        while title in taken_titles:
            title, n = f"{base} vol. {n}", n + 1
    taken_titles.add(title)

    template = _pick(rng, _DESCRIPTION_TEMPLATES[item_type])
    description = template.format(use=_pick(rng, cat.vocab.uses), feature=_pick(rng, cat.vocab.features),
                                  note=_pick(rng, cat.vocab.media_notes), **slots)
    n_tags = int(rng.integers(3, 6))
    tags = [str(t) for t in rng.choice(cat.vocab.tags, size=n_tags, replace=False)]
    if secondary is not None:
        # A cross-over item: a little of the second interest shows in its words.
        extra = secondary.vocab.uses if item_type == "product" else secondary.vocab.media_notes
        description += " " + _pick(rng, extra)
        tags += [str(t) for t in rng.choice(secondary.vocab.tags, size=2, replace=False)
                 if t not in tags]
    return ItemText(title=title, description=description, tags=tags)
