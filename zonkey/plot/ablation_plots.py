"""``ablation.png``: a bar per variant with the spread over seeds, one panel per headline metric."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zonkey.ablate.report import HEADLINE
from zonkey.plot.style import figure, save


def plot_ablation(report: dict[str, Any], path: Path, metrics: list[str] | None = None) -> Path:
    """Bars (mean over seeds) with error bars (std) of every variant, for each metric.

    Args:
        report: the content of ``ablation.json``.
        path: the PNG to write.
        metrics: the metrics to draw (default: the headline ones some variant has).

    Returns:
        ``path``.

    Raises:
        ValueError: none of the metrics is in the report.
    """
    variants = report["variants"]
    labels = dict((k, label) for label, k in HEADLINE)
    keys = metrics or [k for _, k in HEADLINE if any(k in v["metrics"] for v in variants)]
    keys = [k for k in keys if any(k in v["metrics"] for v in variants)]
    if not keys:
        raise ValueError("no metric to plot: the ablation has no finished run with these metrics")
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = figure(rows, cols, width=3.4 * cols, height=2.9 * rows)
    names = [v["name"] for v in variants]
    for ax, key in zip(axes, keys, strict=False):
        stats = [v["metrics"].get(key) for v in variants]
        means = [s["mean"] if s else 0.0 for s in stats]
        errs = [s["std"] if s else 0.0 for s in stats]
        bars = ax.bar(range(len(names)), means, yerr=errs, capsize=4, color="#6baed6", edgecolor="#2171b5")
        for b, s in zip(bars, stats, strict=True):
            if s is None:
                b.set_alpha(0.15)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_title(labels.get(key, key), fontsize=9)
    for ax in axes[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{report.get('recipe_name', '')}: mean ± std over seeds {report.get('seeds', [])}", fontsize=10)
    return save(fig, path)
