"""Summarise a py-spy profile (``py-spy record --format raw --threads``: collapsed on-CPU stacks) into
the few numbers a report needs, small enough to commit where the profile itself is not.

Shares are of ``wall_samples`` (rate x seconds recorded) when given, so a thread's share is the part
of the run it was on the CPU (the event loop's share is how long it was busy, i.e. not serving
others); else of the samples taken. ``self``: the function on top of the stack; ``inclusive``:
anywhere on it; ``mixrec_inclusive``: the same for mixrec's own functions only. Frames are ``function (file:line)``; lines are dropped so one function is one row.

    .venv/bin/python bench/profile_summary.py /tmp/prof/current-0-Recommender.collapsed [wall_samples]
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
OURS = re.compile(r"[(/](services|fusion|mixrec|encoders)/[^/]+\.py")  # mixrec's own code, not a library's


def _short(frame: str) -> str:
    """``fn (path/to/site-packages/pkg/mod.py:12)`` -> ``pkg/mod.py:fn``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    parts = m["file"].split("site-packages/")[-1].split("/")
    return f"{'/'.join(parts[-2:])}:{m['fn']}"


def _thread(frame: str) -> str:
    """``thread (0x7f..): MainThread`` -> ``MainThread`` (names group the pool's threads together)."""
    return frame.split(": ", 1)[-1] if ": " in frame else frame


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in Path(path).read_text(errors="replace").splitlines():
        head, _, count = line.rpartition(" ")
        if head and count.isdigit():
            stacks.append((head.split(";"), int(count)))
    return stacks


def summarise(path: Path, wall_samples: int | None = None, top: int = 15) -> dict:
    stacks = parse(path)
    taken = sum(c for _, c in stacks)
    total = wall_samples or taken or 1
    threads: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, count in stacks:
        has_thread = bool(frames) and frames[0].startswith("thread")
        body = frames[1:] if has_thread else frames
        threads[_thread(frames[0]) if has_thread else "?"] += count
        if body:
            leaf[_short(body[-1])] += count
        for name in {_short(f) for f in body}:
            inclusive[name] += count
        for name in {_short(f) for f in body if OURS.search(f) and "site-packages" not in f}:
            ours[name] += count

    def pct(counter: Counter, n: int) -> list[list]:
        return [[name, round(100 * c / total, 1)] for name, c in counter.most_common(n)]

    return {"samples": taken, "of": "wall" if wall_samples else "samples", "threads_pct": pct(threads, 12),
            "self_pct": pct(leaf, top), "inclusive_pct": pct(inclusive, top), "mixrec_inclusive_pct": pct(ours, top)}


if __name__ == "__main__":
    print(json.dumps(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None), indent=1))
