"""Dead ends of one type's inner-product HNSW: how many walks come back short, and does a level-0 walk
from the pivots nearest the query complete them (mixrec/ann.py re-entry)? Against the exact top.

    .venv/bin/python bench/ann_reentry.py --size 1000000 --pivots 1024 --entries 32

Reads the ``bench/serving.py --phases build`` artifacts under ``--work``; builds the HNSW of type 0
(M 16, efConstruction 80) over the model's ANN vectors, queries it with user vectors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serving import _engine_for, artifacts_dir  # noqa: E402
from fusion.scoring import ann_query, ann_vectors  # noqa: E402
from services.candidates import type_codes_of  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=1_000_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/hann-bench"))
    p.add_argument("--pivots", type=int, default=1024)
    p.add_argument("--entries", type=int, default=32)
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--ef", type=int, default=128)
    p.add_argument("--entry-score-sign", type=float, default=1.0, help="-1: pass the entries' scores negated")
    args = p.parse_args()
    faiss.omp_set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        snap = _engine_for(artifacts_dir(args.work, args.size), ann_threshold=10 ** 12, tmp=Path(tmp)).model.snapshot
    codes, _ = type_codes_of(snap)
    x = np.ascontiguousarray(ann_vectors(snap)[np.flatnonzero(codes == 0)], dtype=np.float32)
    rng = np.random.default_rng(0)
    q = np.stack([ann_query(snap.user_repr[u]) for u in rng.integers(0, len(snap.user_ids), args.queries)])
    q = q.astype(np.float32)
    t = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(x)
    print(f"type 0: {len(x)} items, HNSW built in {time.perf_counter() - t:.1f} s", flush=True)
    k, params = args.k, faiss.SearchParametersHNSW(efSearch=args.ef)
    _, labels = index.search(q, k, params=params)
    short = np.flatnonzero((labels >= 0).sum(1) < k)
    exact = np.argsort(-(q[short] @ x.T), axis=1)[:, :k]
    pivots = rng.choice(len(x), args.pivots, replace=False)
    e = args.entries
    recall, ms, complete = [], [], 0
    for j, s in enumerate(short):
        qq = q[s:s + 1]
        t = time.perf_counter()
        ip = x[pivots] @ qq[0]
        best = np.argpartition(-ip, e - 1)[:e]
        best = best[np.argsort(-ip[best])]
        entries = np.ascontiguousarray(pivots[best][None, :], dtype=np.int32)
        entry_scores = np.ascontiguousarray(args.entry_score_sign * ip[best][None, :], dtype=np.float32)
        dist, lab = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
        index.search_level_0(1, faiss.swig_ptr(qq), k, faiss.swig_ptr(entries), faiss.swig_ptr(entry_scores),
                             faiss.swig_ptr(dist), faiss.swig_ptr(lab), e, 2, params)
        ms.append((time.perf_counter() - t) * 1000)
        got = lab[0][lab[0] >= 0]
        complete += len(got) >= k
        recall.append(len(set(got[:10].tolist()) & set(exact[j][:10].tolist())) / 10)
    t = time.perf_counter()
    for s in short[:50]:
        scores = x @ q[s]
        np.argpartition(-scores, k)[:k]
    exact_ms = (time.perf_counter() - t) * 1000 / max(min(50, len(short)), 1)
    print(f"short walks: {len(short)} of {len(q)} (k {k}, efSearch {args.ef})")
    if len(short):
        print(f"re-entered from the best {e} of {args.pivots} pivots: {complete} complete, recall@10 vs exact "
              f"{np.mean(recall):.3f}, {np.median(ms):.2f} ms per walk (p50), exact scan of the type {exact_ms:.2f} ms")


if __name__ == "__main__":
    main()
