"""What ``zonkey plot`` draws for a path: an ablation's chart, or a run's four figures (PNG, PDF or SVG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zonkey.errors import ZonkeyError
from zonkey.plot.run_plots import heldout_sentences, plot_attention, plot_bos, plot_boundaries, plot_curves


class PlotError(ZonkeyError, ValueError):
    """Nothing to plot at a path; the message says what was expected."""


def _metrics(path: Path) -> list[dict]:
    """The rows of a ``metrics.jsonl``.

    Raises:
        PlotError: a line that is not a JSON object (its number is given).
    """
    from zonkey.io import CheckpointError, read_metrics

    try:
        return read_metrics(path)
    except CheckpointError as exc:
        raise PlotError(str(exc)) from None


def _inside(folder: Path, name: str) -> Path:
    """``folder/name``, refused (:class:`PlotError`) when a link takes it out of ``folder``."""
    from zonkey.io import CheckpointError, inside

    try:
        inside(folder, folder / name, str(folder))
    except CheckpointError as exc:
        raise PlotError(str(exc)) from None
    return folder / name


def plot(path: str | Path, out: str | Path | None = None, *, texts: Sequence[str] = (),
         verify: bool = True, fmt: str = "png") -> list[Path]:
    """Every figure of a run or of an ablation folder.

    Args:
        path: a run directory (``metrics.jsonl``; a diffusion run's checkpoint adds the BOS and
            attention figures) or an ablation folder (``ablation.json``).
        out: where the figures go (default: ``PATH/plots``).
        texts: sentences for the BOS and attention figures (default: three held-out sentences).
        verify: check the checkpoint's files against their SHA-256 before loading the model.
        fmt: ``png``, ``pdf`` or ``svg`` (:data:`~zonkey.plot.style.FORMATS`).

    Returns:
        The files written.

    Raises:
        PlotError: ``path`` is neither, its files cannot be read, or ``fmt`` is not a format written.
    """
    from zonkey.plot.style import FORMATS

    if fmt not in FORMATS:
        raise PlotError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")
    p = Path(path)
    dest = Path(out) if out is not None else p / "plots"
    if (p / "ablation.json").is_file():
        from zonkey.plot.ablation_plots import plot_ablation

        _inside(p, "ablation.json")
        from zonkey.io import CheckpointError, read_json

        try:
            report = read_json(p / "ablation.json")
            return [plot_ablation(report, dest / f"ablation.{fmt}")]
        except CheckpointError as exc:
            raise PlotError(str(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise PlotError(f"{p / 'ablation.json'}: {exc}") from None
    if not os.path.lexists(p / "metrics.jsonl"):  # a FIFO there is refused by the reader, not called missing
        raise PlotError(f"{p}: neither a run (no metrics.jsonl) nor an ablation folder (no ablation.json)")
    rows = _metrics(_inside(p, "metrics.jsonl"))
    if not rows:
        raise PlotError(f"{p}/metrics.jsonl is empty (no step has been logged yet)")
    written = [plot_curves(rows, dest / f"curves.{fmt}")]
    if any("l0.word_f1" in r or "l0.mean_segment" in r for r in rows):
        written.append(plot_boundaries(rows, dest / f"boundaries.{fmt}"))
    if (p / "recipe.json").is_file() and ((p / "LATEST").is_file() or (p / "model.safetensors").is_file()):
        from zonkey.core.model.network import ZonkeyModel
        from zonkey.data import load_corpus

        model = ZonkeyModel.from_run(p, verify=verify)
        chosen = list(texts) or heldout_sentences(load_corpus(model.recipe.data).documents("heldout"))
        if chosen:
            written.append(plot_bos(model, chosen, dest / f"bos.{fmt}"))
            written.append(plot_attention(model, chosen[0], dest / f"attention.{fmt}"))
    return written
