"""One place for matplotlib: the non-interactive backend, figure creation and PNG saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(rows: int, cols: int, *, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure of ``rows`` × ``cols`` panels on the Agg backend (no display needed).

    Returns:
        (the figure, its axes as a flat list).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    return fig, [ax for row in axes for ax in row]


def save(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders created) and close it.

    Returns:
        ``path``.
    """
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
    return path
