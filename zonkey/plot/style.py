"""One place for matplotlib: the non-interactive backend, figure creation and saving (PNG, PDF or SVG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the file formats ``zonkey plot --format`` writes (the file's suffix names it)
FORMATS = ("png", "pdf", "svg")


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
    """Write ``fig`` at ``path`` (folders created) in the format its suffix names, and close it.

    Returns:
        ``path``.

    Raises:
        ValueError: a suffix other than those of :data:`FORMATS`.
    """
    import matplotlib.pyplot as plt

    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        plt.close(fig)
        raise ValueError(f"{path}: figures are written as {', '.join(FORMATS)} (got {fmt or 'no suffix'!r})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    meta = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]  # no date stamped in the file
    fig.savefig(path, dpi=dpi, format=fmt, metadata=meta)
    plt.close(fig)
    return path
