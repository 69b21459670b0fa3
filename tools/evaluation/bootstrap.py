"""How sure a difference is: paired bootstrap over users of mixrec minus the best baseline.

On one protocol every model is scored on the same users in the same order (run_protocols keeps
per-user values under ``PER_USER``), so the difference is taken user by user and the users are
resampled with replacement: the 2.5th and 97.5th percentiles of the resampled mean difference
are the 95% interval. The best baseline is chosen per protocol and metric by its point estimate.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tools.evaluation.protocols import BASELINES, PER_USER

__all__ = ["paired_bootstrap", "compare_to_best", "comparison_markdown", "comparison_table", "METRICS"]

METRICS = ("precision_at_10", "ndcg_at_10", "auc")
LABELS = {"precision_at_10": "P@10", "ndcg_at_10": "NDCG@10", "auc": "AUC"}


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """(mean of a - b, lower, upper) over the users where both are defined (AUC may be NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must align, got {a.shape} and {b.shape}")
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    # Resampled means in chunks, so memory stays small for many users.
    means = np.concatenate([d[rng.integers(0, d.size, (min(250, n_resamples - s), d.size))].mean(axis=1)
                            for s in range(0, n_resamples, 250)])
    tail = (1.0 - level) / 2 * 100
    return float(d.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def compare_to_best(results: Mapping[str, Mapping[str, Mapping[str, Any]]], model: str = "mixrec",
                    baselines: Sequence[str] = BASELINES, metrics: Sequence[str] = METRICS,
                    n_resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """``out[protocol][metric]``: best baseline (by point estimate), both values, the ratio and the
    paired difference with its 95% interval. Protocols where ``model`` or every baseline is
    missing (or failed) are left out."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for protocol, by_model in results.items():
        mine = by_model.get(model, {})
        if PER_USER not in mine:
            continue
        rows = {}
        for metric in metrics:
            scored = [(name, m) for name, m in by_model.items()
                      if name in baselines and PER_USER in m and m.get(metric) is not None and np.isfinite(m[metric])]
            if not scored:
                continue
            best, ref = max(scored, key=lambda t: t[1][metric])
            diff, lo, hi = paired_bootstrap(mine[PER_USER][metric], ref[PER_USER][metric], n_resamples, seed)
            base = float(ref[metric])
            rows[metric] = {"baseline": best, "baseline_value": base, "value": float(mine[metric]),
                            "ratio": float(mine[metric]) / base if base else float("nan"),
                            "diff": diff, "ci_low": lo, "ci_high": hi}
        if rows:
            out[protocol] = rows
    return out


def _row(protocol: str, metric: str, c: Mapping[str, Any]) -> list[str]:
    return [protocol, LABELS.get(metric, metric), c["baseline"], f"{c['baseline_value']:.4f}", f"{c['value']:.4f}",
            f"{c['ratio']:.3f}", f"{c['diff']:+.4f}", f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"]


HEADERS = ["protocol", "metric", "best baseline", "baseline", "mixrec", "ratio", "mixrec - best", "95% CI (paired bootstrap)"]


def comparison_markdown(comparison: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
    for protocol, rows in comparison.items():
        for metric, c in rows.items():
            lines.append("| " + " | ".join(_row(protocol, metric, c)) + " |")
    return "\n".join(lines)


def comparison_table(comparison: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str = "mixrec vs best baseline"):
    from rich.table import Table

    table = Table(title=title)
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("protocol", "metric", "best baseline") else "right")
    for protocol, rows in comparison.items():
        for metric, c in rows.items():
            table.add_row(*_row(protocol, metric, c))
    return table
