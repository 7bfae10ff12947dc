"""``ablation.png``: each variant's mean over seeds with its spread, one panel per headline metric.

Points with error bars, not bars from 0: most headline figures lie near 1 (reconstruction, F1),
where bars from 0 would all look the same height. Each panel's y-axis spans its data (means ± std,
padded), so the differences between variants are what the eye sees; the axis labels give the range.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from zonkey.ablate.report import HEADLINE
from zonkey.plot.style import figure, save


def plot_ablation(report: dict[str, Any], path: Path, metrics: list[str] | None = None) -> Path:
    """``path`` (PNG, PDF or SVG): :func:`ablation_figure` saved.

    Raises:
        ValueError: none of the metrics is in the report.
    """
    return save(ablation_figure(report, metrics), path)


def ablation_figure(report: dict[str, Any], metrics: list[str] | None = None) -> Any:
    """A point (mean over seeds) with an error bar (std) for every variant, one panel per metric.

    Args:
        report: the content of ``ablation.json``.
        metrics: the metrics to draw (default: the headline ones some variant has).

    Returns:
        the figure, not yet saved.

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
        xs = [i for i, st in enumerate(stats) if st]
        means = [stats[i]["mean"] for i in xs]
        errs = [stats[i]["std"] for i in xs]
        ax.errorbar(xs, means, yerr=errs, fmt="o", capsize=4, color="#2171b5", ecolor="#6baed6")
        lo, hi = y_range(means, errs)
        ax.set_ylim(lo, hi)
        ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_title(labels.get(key, key), fontsize=9)
    for ax in axes[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{report.get('recipe_name', '')}: mean ± std over seeds {report.get('seeds', [])}", fontsize=10)
    return fig


def y_range(means: list[float], errs: list[float]) -> tuple[float, float]:
    """The y-axis of a panel: the span of means ± std, padded by a tenth of it on each side.

    A span of 0 (one variant, or equal means) gets ± 5% of the value (± 0.05 at 0).

    Returns:
        (bottom, top).
    """
    if not means:
        return 0.0, 1.0
    lo = min(m - e for m, e in zip(means, errs, strict=True))
    hi = max(m + e for m, e in zip(means, errs, strict=True))
    pad = 0.1 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad
