"""A bounded loopback load generator (asyncio + httpx) for the Recommender's mixed workload.

``run_load`` keeps ``clients`` concurrent callers busy for ``duration_s`` seconds on
recommend / recommend_by_query (text) / similar_items / feedback / user_interests
and records, per request, when it started, how long it took, which API and
whether it failed. Used by bench/robustness.py.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field

import httpx

WORKLOAD = ("recommend", "recommend_by_query", "similar_items", "feedback", "user_interests")
QUERY_WORDS = ("jazz piano", "running shoes", "ambient synth", "cooking video", "rock guitar", "yoga mat")


@dataclass
class Sample:
    t: float  # seconds since the run started
    api: str
    latency_s: float
    ok: bool
    error: str = ""


@dataclass
class LoadResult:
    duration_s: float
    clients: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def errors(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def summary(self) -> dict:
        lat = sorted(s.latency_s for s in self.samples if s.ok)
        per_api = {}
        for api in WORKLOAD:
            mine = [s for s in self.samples if s.api == api]
            ok = sorted(s.latency_s for s in mine if s.ok)  # per API: which endpoint carries the tail
            per_api[api] = {"requests": len(mine), "errors": sum(not s.ok for s in mine),
                            "p50_ms": round(_pct(ok, 50) * 1000, 1), "p99_ms": round(_pct(ok, 99) * 1000, 1)}
        return {
            "duration_s": round(self.duration_s, 1), "clients": self.clients, "requests": len(self.samples),
            "errors": len(self.errors), "throughput_rps": round(len(self.samples) / self.duration_s, 1),
            "p50_ms": round(_pct(lat, 50) * 1000, 1), "p99_ms": round(_pct(lat, 99) * 1000, 1),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None, "per_api": per_api,
            "error_examples": sorted({s.error for s in self.errors})[:5],
        }


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    idx = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[idx]


def _request(api: str, rng: random.Random, users: list[str], items: list[str]) -> dict:
    if api == "recommend":
        return {"user_id": rng.choice(users), "k": 10, "explain": rng.random() < 0.5}
    if api == "recommend_by_query":
        return {"text": rng.choice(QUERY_WORDS), "k": 10}
    if api == "similar_items":
        return {"item_id": rng.choice(items), "k": 10}
    if api == "feedback":
        return {"events": [{"user_id": rng.choice(users), "item_id": rng.choice(items), "event": "click"}]}
    return {"user_id": rng.choice(users), "top": 5}


async def _client(url: str, deadline: float, t0: float, seed: int, users: list[str], items: list[str],
                  out: list[Sample], timeout_s: float) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as http:
        while time.monotonic() < deadline:
            api = rng.choice(WORKLOAD)
            start = time.monotonic()
            try:
                r = await http.post(f"/{api}", json=_request(api, rng, users, items))
                ok, err = r.status_code == 200, ("" if r.status_code == 200 else f"{r.status_code} {r.text[:120]}")
            except httpx.HTTPError as e:
                ok, err = False, f"{type(e).__name__}: {e}"[:160]
            out.append(Sample(start - t0, api, time.monotonic() - start, ok, err))
            if not ok:
                await asyncio.sleep(0.05)  # a refused connection fails instantly: do not spin


async def run_load(url: str, *, duration_s: float, clients: int, users: list[str], items: list[str],
                   seed: int = 0, timeout_s: float = 30.0) -> LoadResult:
    t0 = time.monotonic()
    samples: list[Sample] = []
    await asyncio.gather(*(_client(url, t0 + duration_s, t0, seed + i, users, items, samples, timeout_s)
                           for i in range(clients)))
    return LoadResult(time.monotonic() - t0, clients, samples)
