"""Presenting ``run_protocols`` results: rich table, markdown, JSON and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

from tools.evaluation.protocols import PER_USER, PROTOCOL_TITLES

__all__ = ["Results", "columns", "report_console", "rich_table", "markdown_table", "write_json", "plot_results", "write_report"]

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]  # protocol -> model -> metric -> value


def columns(k: int = 10) -> list[tuple[str, str, str]]:
    """(metric key, column header, number format) in display order."""
    return [(f"precision_at_{k}", f"P@{k}", "{:.4f}"), (f"recall_at_{k}", f"R@{k}", "{:.4f}"),
            (f"ndcg_at_{k}", f"NDCG@{k}", "{:.4f}"), ("auc", "AUC", "{:.4f}"), ("coverage", "coverage", "{:.3f}"),
            ("novelty", "novelty", "{:.2f}"), ("fit_seconds", "fit s", "{:.1f}"), ("users", "users", "{:d}")]


def _cell(metrics: Mapping[str, Any], key: str, fmt: str) -> str:
    value = metrics.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else float(value))


def _rows(results: Results, k: int) -> list[tuple[str, str, list[str], str | None]]:
    rows = []
    for protocol, by_model in results.items():
        for model, metrics in by_model.items():
            cells = [_cell(metrics, key, fmt) for key, _, fmt in columns(k)]
            rows.append((protocol, model, cells, metrics.get("error")))
    return rows


def report_console() -> Console:
    """A console that does not squeeze the table to 80 columns when output is piped to a log."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=160)


def rich_table(results: Results, k: int = 10, title: str = "evaluation") -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("protocol", style="bold")
    table.add_column("model")
    for _, header, _ in columns(k):
        table.add_column(header, justify="right")
    previous = None
    for protocol, model, cells, error in _rows(results, k):
        if previous is not None and protocol != previous:
            table.add_section()
        label = protocol if protocol != previous else ""
        table.add_row(label, model, *(cells if error is None else [f"[red]{error}[/red]"] + [""] * (len(cells) - 1)))
        previous = protocol
    return table


def markdown_table(results: Results, k: int = 10) -> str:
    headers = ["protocol", "model"] + [h for _, h, _ in columns(k)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(columns(k))) + "|"]
    for protocol, model, cells, error in _rows(results, k):
        if error is not None:
            cells = [f"error: {error}"] + [""] * (len(cells) - 1)
        lines.append("| " + " | ".join([protocol, model] + cells) + " |")
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN / inf
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def scalars(results: Results) -> dict:
    """``results`` without the per-user arrays (``protocols.PER_USER``)."""
    return {p: {m: {k: v for k, v in metrics.items() if k != PER_USER} for m, metrics in by_model.items()}
            for p, by_model in results.items()}


def write_json(results: Results, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    results = scalars(results)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"results": results, **({"meta": meta} if meta else {})}
    path.write_text(json.dumps(_json_safe(payload), indent=2, sort_keys=True) + "\n")
    return path


def plot_figure(results: Results, k: int = 10, title: str = "evaluation"):
    """The matplotlib figure ``plot_results`` saves: one panel per protocol with grouped bars (one per
    model) for P@k, R@k, NDCG@k, AUC and catalogue coverage (all 0-1), and one panel with novelty
    (bits, not 0-1) per protocol. Every axis is labelled and says that higher is better."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [(f"precision_at_{k}", f"P@{k}"), (f"recall_at_{k}", f"R@{k}"), (f"ndcg_at_{k}", f"NDCG@{k}"),
               ("auc", "AUC"), ("coverage", "coverage")]
    protocols = [p for p in results if results[p]]
    models = list(dict.fromkeys(m for p in protocols for m in results[p]))
    panels = len(protocols) + 1  # + novelty
    n_cols = min(2, panels)
    n_rows = math.ceil(panels / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(7 * n_cols, 4.4 * n_rows), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / max(1, len(models))

    def value(m, key):
        v = float(m.get(key) or 0.0) if "error" not in m else 0.0
        return 0.0 if math.isnan(v) else v

    def bars(ax, x, labels, values_of):
        for j, model in enumerate(models):
            b = ax.bar(x + (j - (len(models) - 1) / 2) * width, values_of(model), width, label=model,
                       color=colors[j % len(colors)])
            ax.bar_label(b, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(x, labels)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)

    flat = list(axes.flat)
    for ax, protocol in zip(flat, protocols):
        bars(ax, np.arange(len(metrics)), [label for _, label in metrics],
             lambda model: [value(results[protocol].get(model, {}), key) for key, _ in metrics])
        ax.set_ylim(0, 1.1)
        ax.set_title(PROTOCOL_TITLES.get(protocol, protocol), fontsize=10)
        ax.set_xlabel("metric")
        ax.set_ylabel("value (0-1), higher is better")
    ax = flat[len(protocols)]
    bars(ax, np.arange(len(protocols)), [PROTOCOL_TITLES.get(p, p) for p in protocols],
         lambda model: [value(results[p].get(model, {}), "novelty") for p in protocols])
    ax.set_title("novelty (mean self-information of the items recommended)", fontsize=10)
    ax.set_xlabel("protocol")
    ax.set_ylabel("novelty, bits: higher is better (less popular items)")
    ax.tick_params(axis="x", labelsize=7)
    for ax in flat[panels:]:
        ax.axis("off")
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(models)), frameon=False)
    fig.suptitle(f"{title} (higher is better on every axis)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def plot_results(results: Results, path: str | Path, k: int = 10, title: str = "evaluation") -> Path:
    """Save ``plot_figure`` as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = plot_figure(results, k, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: Results, out_dir: str | Path, stem: str, k: int = 10, title: str = "evaluation",
                 meta: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    md.write_text(f"# {title}\n\n{markdown_table(results, k)}\n")
    return {"json": write_json(results, out / f"{stem}.json", meta), "md": md,
            "png": plot_results(results, out / f"{stem}.png", k, title)}
