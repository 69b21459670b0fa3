"""Fresh feedback (issue 14): does folding in a user's newest events at request time pay, and what does it cost?

Phases (``--phases``, default both):

  nextevent  ml-100k, time-ordered "next event" protocol. Every rating is a positive event (as in
             bench/movielens.py). A sample of users (``--users``, seed 0) has its last ``--steps``+1
             events held out; the model is trained on everything else. Each held-out user's events
             are replayed one by one: after event t the top-10 (train items and replayed items
             excluded) is checked against event t+1 (HitRate@10, NDCG@10), for three arms:
               * as trained: the user's trained vector, events since ignored (what recommend did before);
               * fold-in:    HybridModel.fold_in of the replayed events (what recommend does now);
               * retrained:  a model trained from scratch on train + every sampled user's first t
                             events (one full training per step: the upper bound).
             Half of the sample are validation users: the recency half-life (training and fold-in) and
             the fold-in prior are chosen on them, the figures reported on the other half.
  cost       recommend p50/p99 inside the engine at ``--cost-items`` synthetic items (ANN at the default
             threshold, and exact) for users with 0, 10 and 100 fresh events in the database.

Writes bench/results/fresh_feedback.json and the ``fresh-feedback`` section of BENCHMARKS.md.

    .venv/bin/python bench/fresh_feedback.py [--users 400] [--steps 10] [--phases nextevent,cost]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SECTION_START = "<!-- fresh-feedback:start -->"
SECTION_END = "<!-- fresh-feedback:end -->"
HALF_LIVES = (None, 1.0, 7.0, 30.0, 180.0)
PRIORS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="ml-100k directory (default: $MIXREC_MOVIELENS_DIR or ../shared/data/ml-100k)")
    p.add_argument("--phases", default="nextevent,cost")
    p.add_argument("--users", type=int, default=400, help="sampled users (half validation, half test)")
    p.add_argument("--steps", type=int, default=10, help="replayed events per sampled user")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cost-items", type=int, default=100_000)
    p.add_argument("--cost-requests", type=int, default=300)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "fresh_feedback.json"))
    p.add_argument("--benchmarks-md", default=str(REPO / "BENCHMARKS.md"))
    return p.parse_args(argv)


# ============================================================== next-event protocol
def _config(epochs: int, components: int, threads: int, half_life):
    from mixrec.config import load_config

    cfg = load_config(REPO / "configs" / "offline.yaml", environ={})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={
        "epochs": epochs, "no_components": components, "num_threads": threads, "recency_half_life_days": half_life})})


def _hit(scores: np.ndarray, exclude: np.ndarray, target: int, k: int = 10) -> tuple[float, float]:
    s = scores.astype(np.float64).copy()
    s[exclude] = -np.inf
    rank = int((s > s[target]).sum())
    return (1.0, 1.0 / np.log2(rank + 2)) if rank < k else (0.0, 0.0)


def phase_nextevent(args) -> dict:
    from fusion.hybrid import HybridModel
    from fusion.scoring import FreshEvent, user_scores
    from mixrec.catalog import Interaction
    from tools.datasets.embed import build_text_encoder, encode_items
    from tools.datasets.movielens import load_movielens

    t_start = time.perf_counter()
    data = load_movielens(args.data_dir)
    log = data.extra["interactions"]
    base_cfg = _config(args.epochs, args.components, args.threads, None)
    t0 = time.perf_counter()
    data.embeddings = encode_items(data, base_cfg, images=False, progress=False,
                                   text_encoder=build_text_encoder(base_cfg))
    encode_s = time.perf_counter() - t0
    order = np.lexsort((log.items, log.timestamps, log.users))
    users, items, ts = log.users[order], log.items[order], log.timestamps[order]
    starts = np.searchsorted(users, np.arange(log.n_users + 1))
    rng = np.random.default_rng(0)
    eligible = [u for u in range(log.n_users) if starts[u + 1] - starts[u] >= args.steps + 1 + 20]
    sample = rng.choice(eligible, size=min(args.users, len(eligible)), replace=False)
    val_users, test_users = sample[: len(sample) // 2], sample[len(sample) // 2:]
    held = {int(u): np.arange(starts[u + 1] - args.steps - 1, starts[u + 1]) for u in sample}
    held_mask = np.zeros(len(users), bool)
    for idx in held.values():
        held_mask[idx] = True
    uid = lambda u: data.user_ids[int(u)]  # noqa: E731
    iid = lambda i: data.item_ids[int(i)]  # noqa: E731
    train = [Interaction(uid(u), iid(i), "like", 1.0, float(t))
             for u, i, t in zip(users[~held_mask], items[~held_mask], ts[~held_mask])]
    history = {int(u): items[starts[u]:starts[u + 1]][~held_mask[starts[u]:starts[u + 1]]] for u in sample}

    def train_model(half_life, extra=()) -> tuple[HybridModel, float]:
        t = time.perf_counter()
        m = HybridModel.train(data.items, data.embeddings, train + list(extra),
                              _config(args.epochs, args.components, args.threads, half_life))
        return m, time.perf_counter() - t

    def evaluate(model: HybridModel, group, arm: str, prior: float = 1.0, retrained=None) -> dict:
        snap = model.snapshot
        hits, ndcgs, ms = [], [], []
        for u in group:
            idx = held[int(u)]
            row = snap.user_index[uid(u)]
            for t in range(1, args.steps + 1):  # after replaying events 0..t-1, predict event t
                replayed, target = items[idx[:t]], int(items[idx[t]])
                exclude = np.concatenate([history[int(u)], replayed]).astype(np.int64)
                c0 = time.perf_counter()
                if arm == "trained":
                    scores = user_scores(snap, snap.user_repr[row])
                elif arm == "fold_in":
                    fresh = [FreshEvent(iid(i), "like", 1.0, float(s)) for i, s in zip(replayed, ts[idx[:t]])]
                    fold = model.fold_in(uid(u), fresh, now=float(ts[idx[t - 1]]), prior=prior)
                    scores = user_scores(snap, fold.vector)
                else:  # retrained[t]: trained on every sampled user's first t held-out events
                    rs = retrained[t].snapshot
                    scores = user_scores(rs, rs.user_repr[rs.user_index[uid(u)]])
                ms.append((time.perf_counter() - c0) * 1000)
                h, n = _hit(scores, exclude, target)
                hits.append(h)
                ndcgs.append(n)
        return {"hit_rate_at_10": round(float(np.mean(hits)), 4), "ndcg_at_10": round(float(np.mean(ndcgs)), 4),
                "pairs": len(hits), "score_ms_mean": round(float(np.mean(ms)), 3)}

    sweep, models, train_s = [], {}, {}
    for h in HALF_LIVES:
        m, s = train_model(h)
        models[h], train_s[str(h)] = m, round(s, 1)
        row = {"half_life_days": h, "trained": evaluate(m, val_users, "trained"),
               "fold_in": {str(p): evaluate(m, val_users, "fold_in", prior=p) for p in PRIORS}}
        sweep.append(row)
        print(f"[nextevent] validation, half-life {h}: trained {row['trained']} fold-in "
              f"{ {p: v['ndcg_at_10'] for p, v in row['fold_in'].items()} }", flush=True)
    best = max(((r["half_life_days"], float(p), v["ndcg_at_10"]) for r in sweep for p, v in r["fold_in"].items()),
               key=lambda x: x[2])
    half_life, prior = best[0], best[1]
    model = models[half_life]
    print(f"[nextevent] chosen on validation users: half-life {half_life} days, prior {prior}", flush=True)
    retrained = {}
    for t in range(1, args.steps + 1):
        extra = [Interaction(uid(u), iid(i), "like", 1.0, float(s))
                 for u in test_users for i, s in zip(items[held[int(u)][:t]], ts[held[int(u)][:t]])]
        retrained[t], s = train_model(half_life, extra)
        print(f"[nextevent] retrained with {t} replayed events per test user ({s:.1f}s)", flush=True)
    test = {"trained": evaluate(model, test_users, "trained"),
            "fold_in": evaluate(model, test_users, "fold_in", prior=prior),
            "retrained": evaluate(model, test_users, "retrained", retrained=retrained)}
    # the same protocol without recency (half-life None) at the chosen prior, for the record
    no_recency = {"trained": evaluate(models[None], test_users, "trained"),
                  "fold_in": evaluate(models[None], test_users, "fold_in", prior=prior)}
    gaps = {}
    for metric in ("hit_rate_at_10", "ndcg_at_10"):
        gap = test["retrained"][metric] - test["trained"][metric]
        gaps[metric] = round((test["fold_in"][metric] - test["trained"][metric]) / gap, 3) if gap > 0 else None
    print(f"[nextevent] test: {test}; share of the gap recovered: {gaps}", flush=True)
    return {"dataset": "ml-100k (every rating a positive event)", "sampled_users": int(len(sample)),
            "validation_users": int(len(val_users)), "test_users": int(len(test_users)), "steps": args.steps,
            "eligible_users": len(eligible), "lightfm": {"epochs": args.epochs, "no_components": args.components,
                                                        "threads": args.threads},
            "encode_seconds": round(encode_s, 1), "train_seconds": train_s, "chosen": {
                "half_life_days": half_life, "fold_in_prior": prior, "validation_ndcg_at_10": best[2]},
            "validation_sweep": sweep, "test": test, "test_without_recency": no_recency, "gap_recovered": gaps,
            "seconds": round(time.perf_counter() - t_start, 1)}


# ============================================================== cost at 100k items
def phase_cost(args) -> dict:
    from bench.serving import base_config, percentiles
    from bench.synthetic_catalog import bench_config, build
    from mixrec.catalog import Interaction
    from mixrec.config import load_config
    from mixrec.storage.media import MediaStore
    from mixrec.storage.store import CatalogStore
    from services.engine import Options, RecommenderEngine

    t0 = time.perf_counter()
    b = build(args.cost_items, bench_config(base_config()), text_dim=64)
    build_s = time.perf_counter() - t0
    model = b.model
    out = {"items": args.cost_items, "build_seconds": round(build_s, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {"MIXREC__SERVING__STATE_DIR": str(tmp / "state"), "MIXREC__STORAGE__URL": f"sqlite:///{tmp / 'db.sqlite'}",
               "MIXREC__SERVING__UPDATE_EVERY": "0"}
        cfg = load_config(REPO / "configs" / "offline.yaml", environ=env)
        store = CatalogStore(cfg.storage.url)
        rng = np.random.default_rng(1)
        pool = [b.items[j] for j in rng.choice(len(b.items), 2000, replace=False)]
        store.add_items(pool)
        engine = RecommenderEngine(cfg, model, store, MediaStore(tmp / "media"))
        snap = model.snapshot
        picked = rng.choice(len(snap.user_ids), 60, replace=False)  # 20 distinct users per row
        users = {n: [snap.user_ids[j] for j in picked[r * 20:(r + 1) * 20]] for r, n in enumerate((0, 10, 100))}
        now = time.time()
        events = []
        for n, group in users.items():
            for u in group:
                chosen = rng.choice(len(pool), n, replace=False)
                events += [Interaction(u, pool[j].item_id, "like", 1.0, now - 60 * (n - e)) for e, j in enumerate(chosen)]
        for s in range(0, len(events), 200):
            store.record_feedback(events[s:s + 200])
        model.add_interactions(events)  # applied to the model (seen, interests), not trained on: fresh
        engine.event_mark = max(e.id for e in store.interactions())
        opts = Options(k=10, mix="interleave", explain=True)
        for mode in ("ann", "exact"):
            engine.ann.threshold = cfg.serving.ann_threshold if mode == "ann" else 10 ** 12
            if mode == "ann":
                engine.ann.refresh(snap, wait=True)
                engine.ann.refresh(model.snapshot, wait=True)
            for cap in (cfg.serving.fold_in_events, 100, 0):
                engine.cfg = cfg.model_copy(update={"serving": cfg.serving.model_copy(update={"fold_in_events": cap})})
                row = {}
                for n, group in users.items():
                    for u in group[:5]:
                        engine.recommend(u, opts)  # warm-up
                    ms, fresh = [], []
                    for r in range(args.cost_requests):
                        u = group[r % len(group)]
                        t = time.perf_counter()
                        res = engine.recommend(u, opts)
                        ms.append((time.perf_counter() - t) * 1000)
                        fresh.append(res["fresh_events"])
                    row[str(n)] = {**percentiles(ms), "fresh_events_read": int(np.max(fresh))}
                out[f"{mode}_fold_in_events_{cap}"] = row
                print(f"[cost] {mode}, fold_in_events={cap}: {row}", flush=True)
        store.close()
    out["request"] = "RecommenderEngine.recommend(k=10, mix=interleave, exclude_seen, explain), in-process"
    return out


# ============================================================== report
def _fmt_cost(c: dict) -> str:
    lines = ["| scoring | `fold_in_events` | fresh events in the database | fresh events read | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, row in c.items():
        if not isinstance(row, dict) or "_fold_in_events_" not in key:
            continue
        mode, cap = key.split("_fold_in_events_")
        for n, v in row.items():
            lines.append(f"| {mode} | {cap} | {n} | {v['fresh_events_read']} | {v['p50_ms']} | {v['p99_ms']} |")
    return "\n".join(lines)


def section(results: dict, command: str) -> str:
    parts = [f"## Fresh feedback: fold-in at request time (issue 14)\n\nCommand (from the repository root):\n\n```\n{command}\n```\n",
             f"Machine: {results['machine']}; load average before {results['load_before']}, after {results['load_after']}. "
             f"Run on {results['date']}.\n"]
    ne = results.get("nextevent")
    if ne:
        t = ne["test"]
        parts.append(f"""### Next-event protocol, ml-100k

{ne['sampled_users']} users sampled (seed 0) among the {ne['eligible_users']} with at least {ne['steps'] + 21} ratings;
each one's last {ne['steps'] + 1} ratings held out and replayed one by one ({ne['steps']} predictions per user).
Half of them ({ne['validation_users']}) chose the recency half-life and the fold-in prior; the figures
below are on the other {ne['test_users']} ({t['trained']['pairs']} predictions). LightFM: {ne['lightfm']['epochs']}
epochs, {ne['lightfm']['no_components']} components, {ne['lightfm']['threads']} threads (Hogwild: ±0.005 noise).
"Retrained" trains from scratch after every step on train + every test user's replayed events.

Chosen on validation users: half-life **{ne['chosen']['half_life_days']} days**, fold-in prior **{ne['chosen']['fold_in_prior']}**.

| arm (test users) | HitRate@10 | NDCG@10 |
|---|---:|---:|
| as trained (no fold-in: recommend before this change) | {t['trained']['hit_rate_at_10']} | {t['trained']['ndcg_at_10']} |
| fold-in of the replayed events | {t['fold_in']['hit_rate_at_10']} | {t['fold_in']['ndcg_at_10']} |
| retrained after every event (upper bound) | {t['retrained']['hit_rate_at_10']} | {t['retrained']['ndcg_at_10']} |

Share of the as-trained → retrained gap the fold-in recovers: HitRate@10 {ne['gap_recovered']['hit_rate_at_10']},
NDCG@10 {ne['gap_recovered']['ndcg_at_10']} (target: at least 0.5).

Without recency (half-life none, same prior): as trained NDCG@10 {ne['test_without_recency']['trained']['ndcg_at_10']},
fold-in {ne['test_without_recency']['fold_in']['ndcg_at_10']}.

Validation sweep (NDCG@10; columns: fold-in prior):

| half-life (days) | as trained | """ + " | ".join(str(p) for p in PRIORS) + " |\n|---|---:|" + "---:|" * len(PRIORS) + "\n" +
            "\n".join(f"| {r['half_life_days']} | {r['trained']['ndcg_at_10']} | " +
                      " | ".join(str(r['fold_in'][str(p)]['ndcg_at_10']) for p in PRIORS) + " |"
                      for r in ne["validation_sweep"]) + "\n")
    c = results.get("cost")
    if c:
        parts.append(f"""### Cost of the fold-in at {c['items']:,} items

{c['request']}; synthetic catalogue (bench/synthetic_catalog.py, text-only, 32 components), 20 users per
row, {c.get('requests', '')} requests per row, fresh events stored in SQLite and applied to the model but not trained on.
`fold_in_events` bounds how many of a user's newest fresh events a request reads (default 50; 0 = fold-in off).

{_fmt_cost(c)}
""")
    return "\n".join(parts)


def write_section(path: Path, body: str, first: str = SECTION_START, last: str = SECTION_END) -> None:
    """Replace the text between the markers ``first`` and ``last`` (appended when absent), atomically."""
    current = path.read_text() if path.exists() else ""
    block = f"{first}\n{body.rstrip()}\n{last}"
    start, end = current.find(first), current.find(last)
    text = (current[:start] + block + current[end + len(last):] if start != -1 and end > start
            else current.rstrip() + "\n\n" + block + "\n")
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".benchmarks-", suffix=".md") as f:
        f.write(text)
    os.replace(f.name, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update({"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d"),
                    "load_before": [round(x, 2) for x in os.getloadavg()]})
    if "nextevent" in phases:
        results["nextevent"] = phase_nextevent(args)
    if "cost" in phases:
        results["cost"] = {**phase_cost(args), "requests": args.cost_requests}
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    command = (f".venv/bin/python bench/fresh_feedback.py --users {args.users} --steps {args.steps} --epochs {args.epochs} "
               f"--components {args.components} --threads {args.threads} --cost-items {args.cost_items} "
               f"--phases {args.phases}")
    write_section(Path(args.benchmarks_md), section(results, command))
    print(f"wrote {out} and {args.benchmarks_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
