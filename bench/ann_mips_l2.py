"""Would the MIPS -> L2 reduction fix HNSW's inner-product dead ends? A measurement, not a feature.

The reduction indexes ``[x, sqrt(M^2 - |x|^2)]`` (M the largest norm) in an L2 HNSW and queries
``[q, 0]``: the same ranking as the inner product, over a metric graph. This compares, on the same
vectors (Gaussian directions with log-normal norms, like LightFM ``[repr, bias]`` rows of uneven
norm) and the same queries: faiss inner-product HNSW, the L2 reduction (query as is, and scaled to
norm M), and an HNSW graph built over the unit-normalised vectors but searched with the raw ones.
Reports recall@10 against exact inner product and how many answers came back short of k.

    .venv/bin/python bench/ann_mips_l2.py [--items 50000] [--norm-sigma 1.0] [--dim 33]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import faiss
import numpy as np


def recall_and_short(index: faiss.Index, queries: np.ndarray, exact: np.ndarray, k: int, ef: int) -> dict:
    t = time.perf_counter()
    _, found = index.search(np.ascontiguousarray(queries, np.float32), k, params=faiss.SearchParametersHNSW(efSearch=ef))
    seconds = time.perf_counter() - t
    recall = float(np.mean([len(set(found[i, :10]) & set(exact[i])) / 10 for i in range(len(queries))]))
    return {"recall_at_10": round(recall, 3), "short_answers": int(((found >= 0).sum(axis=1) < k).sum()),
            "ms_per_query": round(seconds / len(queries) * 1000, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=50_000)
    p.add_argument("--dim", type=int, default=33)
    p.add_argument("--norm-sigma", type=float, default=1.0, help="sigma of the log-normal item norms")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--ef", type=int, default=128)
    p.add_argument("--m", type=int, default=16)
    a = p.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((a.items, a.dim)).astype(np.float32)
    x *= rng.lognormal(0.0, a.norm_sigma, (a.items, 1)).astype(np.float32)
    q = rng.standard_normal((a.queries, a.dim)).astype(np.float32)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    out = {"items": a.items, "dim": a.dim, "norm_sigma": a.norm_sigma, "k": a.k, "efSearch": a.ef, "M": a.m,
           "load_avg_before": os.getloadavg()}

    def hnsw(d: int, metric, data: np.ndarray) -> faiss.Index:
        index = faiss.IndexHNSWFlat(d, a.m, metric)
        index.hnsw.efConstruction = 80
        index.add(np.ascontiguousarray(data, np.float32))
        return index

    out["inner_product"] = recall_and_short(hnsw(a.dim, faiss.METRIC_INNER_PRODUCT, x), q, exact, a.k, a.ef)
    norms2 = (x.astype(np.float64) ** 2).sum(axis=1)
    m2 = norms2.max()
    lifted = np.hstack([x, np.sqrt(np.maximum(m2 - norms2, 0.0))[:, None]])
    l2 = hnsw(a.dim + 1, faiss.METRIC_L2, lifted)
    zero = np.zeros((len(q), 1), np.float32)
    out["l2_reduction"] = recall_and_short(l2, np.hstack([q, zero]), exact, a.k, a.ef)
    scaled = q / np.linalg.norm(q, axis=1, keepdims=True) * np.sqrt(m2)
    out["l2_reduction_query_scaled_to_M"] = recall_and_short(l2, np.hstack([scaled, zero]), exact, a.k, a.ef)
    angular = hnsw(a.dim, faiss.METRIC_INNER_PRODUCT, x / np.linalg.norm(x, axis=1, keepdims=True))
    storage = faiss.downcast_index(angular.storage)
    faiss.rev_swig_ptr(storage.get_xb(), a.items * a.dim)[:] = x.ravel()  # same graph, raw vectors
    out["angular_graph_raw_vectors"] = recall_and_short(angular, q, exact, a.k, a.ef)
    out["load_avg_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
