"""``zonkey plot``: figures (PNG, PDF or SVG) of a run (curves, boundaries, BOS and existence, attention) or an ablation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zonkey.cli import common


def plot_cmd(
    path: Annotated[Path, typer.Argument(help="A run directory, or an ablation folder (holding ablation.json).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder of the figures (default: PATH/plots).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="File format of the figures: png, pdf or svg.")] = "png",
    text: Annotated[list[str] | None, typer.Option("--text", help="A sentence for the BOS and attention figures "
                                                   "(repeatable; default: three held-out sentences).")] = None,
    no_verify: common.NoVerify = False,
) -> None:
    """Draw a run's training curves, boundaries, BOS/existence and attention figures, or an ablation's bars."""
    if not path.exists():
        common.fail(f"{path}: no such run or ablation folder", common.EXIT_USAGE)
    from zonkey.plot.style import FORMATS

    if fmt.lower() not in FORMATS:
        common.fail(f"--format {fmt!r}: one of {', '.join(FORMATS)}", common.EXIT_USAGE)
    for i, t in enumerate(text or []):
        if not t.strip():
            common.fail(f"--text {i}: empty sentence", common.EXIT_USAGE)
    from zonkey.plot.make import PlotError, plot

    with common.user_errors():
        try:
            written = plot(path, out, texts=text or (), verify=not no_verify, fmt=fmt.lower())
        except PlotError as exc:
            common.fail(str(exc))
    for w in written:
        common.print_text(str(w))
