"""``zonkey curves RUN``: training curves from a run's ``metrics.jsonl`` as a table or JSON.

Every logged row holds the loss terms, the training statistics (``l0.train_byte_acc``,
``l0.mean_segment``, ``l0.space_f1`` ...) and the curriculum weights (``w.l1``) of its step; rows of
a held-out pass (``train.eval_every``) add the ``val.`` figures. The command picks columns, adds a
``ramping`` column (the curriculum terms whose weight moved since the row before) and thins the rows
so a curve fits on a screen.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from zonkey.cli import common

DEFAULT_KEYS = ("loss", "val.loss", "l0.train_byte_acc", "val.l0.recon_acc", "l0.mean_segment", "l0.space_f1",
                "l0.word_f1", "val.l0.space_f1", "val.l0.word_f1", "l1.train_recon_acc", "val.l1.recon_acc", "w.l1",
                "ramping", "bytes_per_s")


def mark_ramps(rows: list[dict[str, Any]]) -> None:
    """Add a ``ramping`` column where curriculum weights (``w.<term>``) changed since the row before.

    Its value: those terms, comma-separated.
    """
    prev: dict[str, Any] = {}
    for r in rows:
        moved = [k[2:] for k, v in r.items() if k.startswith("w.") and k in prev and prev[k] != v]
        prev.update({k: v for k, v in r.items() if k.startswith("w.")})
        if moved:
            r["ramping"] = ",".join(moved)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    """The rows of ``RUN/metrics.jsonl`` (a run directory or the file itself).

    Raises:
        FileNotFoundError: no metrics file there.
        ValueError: a line that is not JSON or not UTF-8 (its number is given), or a metrics file
            that resolves outside the run directory.
    """
    path = run / "metrics.jsonl" if run.is_dir() else run
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{path}: no metrics.jsonl (is {run} a run directory written by `zonkey train`?)")
    from zonkey.io import CheckpointError, inside, read_metrics

    try:
        if run.is_dir():
            inside(run, path, str(run))
        return read_metrics(path)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None


def thin(rows: list[dict[str, Any]], every: int) -> list[dict[str, Any]]:
    """Rows whose step is a multiple of ``every``, plus the last row."""
    if every <= 1 or not rows:
        return rows
    out = [r for r in rows if int(r.get("step", 0)) % every == 0]
    if out[-1:] != rows[-1:]:
        out.append(rows[-1])
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4f}"
    return str(v)


def curves_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory (or a metrics.jsonl file).")],
    keys: Annotated[str | None, typer.Option("--keys", "-k", help="Comma-separated columns (default: loss, "
                                                 "byte accuracy, segment length, boundary F1, level-1 recon, w.l1, B/s).")] = None,
    every: Annotated[int, typer.Option("--every", help="Show steps that are multiples of this (and the last).")] = 1,
    list_keys: Annotated[bool, typer.Option("--list", help="List the logged columns and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per row.")] = False,
) -> None:
    """Print a run's training curves (from metrics.jsonl) as a table."""
    try:
        rows = read_metrics(run)
    except (FileNotFoundError, ValueError) as exc:
        common.fail(str(exc), common.EXIT_USAGE if isinstance(exc, FileNotFoundError) else common.EXIT_INVALID)
    if not rows:
        common.fail(f"{run}: metrics.jsonl is empty (no step has been logged yet)")
    mark_ramps(rows)
    present = sorted({k for r in rows for k in r})
    from zonkey.plot.run_plots import boundary_convention

    conv = boundary_convention(rows)
    other = {"word": "space", "space": "word"}.get(conv or "")
    defaults = [k for k in DEFAULT_KEYS if k in present and not (other and k.endswith(f"l0.{other}_f1"))]
    if list_keys:
        common.print_text("\n".join(present))
        return
    # default columns: the boundary F1 under the run's own convention only (word or space)
    cols = [k.strip() for k in keys.split(",") if k.strip()] if keys else defaults
    unknown = [k for k in cols if k not in present]
    if unknown:
        common.fail(f"{run}: no logged column {', '.join(map(repr, unknown))} (see `zonkey curves {run} --list`)")
    rows = thin(rows, every)
    if as_json:
        for r in rows:
            common.print_json({"step": r.get("step"), **{k: r.get(k) for k in cols}})
        return
    header = ["step", *cols]
    table = [header] + [[_fmt(r.get("step")), *(_fmt(r.get(k)) for k in cols)] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    common.print_text("\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table))
