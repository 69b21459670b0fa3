"""`mixrec evaluate`: defaults a newcomer can trust, and a plot that says what it shows (issue 16)."""

from __future__ import annotations

import inspect

from typer.testing import CliRunner

from tools.evaluation.report import plot_figure

RESULTS = {"warm": {"mixrec": {"precision_at_10": 0.2, "recall_at_10": 0.3, "ndcg_at_10": 0.25, "auc": 0.9,
                               "coverage": 0.4, "novelty": 9.5},
                    "popularity": {"precision_at_10": 0.1, "recall_at_10": 0.1, "ndcg_at_10": 0.1, "auc": 0.8,
                                   "coverage": 0.05, "novelty": 6.0}},
           "cold_items": {"mixrec": {"precision_at_10": 0.1, "recall_at_10": 0.2, "ndcg_at_10": 0.1, "auc": 0.7,
                                     "coverage": 0.3, "novelty": 10.0}}}


def test_plot_shows_recall_coverage_novelty_with_labelled_axes():
    fig = plot_figure(RESULTS, k=10)
    used = [ax for ax in fig.axes if ax.axison]
    assert len(used) == 3  # two protocols + novelty
    ticks = {t.get_text() for ax in used for t in ax.get_xticklabels()}
    assert {"P@10", "R@10", "NDCG@10", "AUC", "coverage"} <= ticks
    for ax in used:
        assert ax.get_xlabel() and "higher is better" in ax.get_ylabel()
    assert any("novelty" in ax.get_title() for ax in used)
    assert "higher is better" in fig._suptitle.get_text()


def test_help_lists_cold_items_all_and_defaults_come_from_the_config():
    from tools.cli import app
    from tools.cli.evaluate import evaluate_command

    result = CliRunner().invoke(app, ["evaluate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "cold_items_all" in result.output
    params = inspect.signature(evaluate_command).parameters
    assert params["components"].default.default is None  # one default: the config's model.no_components
    assert params["out"].default.default is None  # not ./eval-results in the repository
