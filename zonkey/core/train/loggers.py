"""Where a training run's logged rows go besides ``metrics.jsonl``: ``train.loggers``.

``jsonl`` (``RUN/metrics.jsonl``) is always written by the trainer, listed or not; the others are
optional sinks that receive the same rows:

* ``tensorboard``: event files in ``RUN/tensorboard`` through ``torch.utils.tensorboard`` (needs the
  ``tensorboard`` package: ``pip install -e .[tensorboard]``); view them with
  ``tensorboard --logdir RUN/tensorboard``;
* ``wandb``: a Weights & Biases run named after the run directory, with the recipe as its config,
  its files in ``RUN/wandb`` (needs the ``wandb`` package; ``WANDB_MODE=offline`` keeps everything
  on disk, ``wandb sync`` uploads it later).

A logger asked for whose package is missing stops the run before its first step with a one-line
error that names the package. Only numbers are sent (``None`` and non-finite values are left out);
every key keeps its name, so held-out figures stay under ``val.`` and curriculum weights under ``w.``.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from zonkey.errors import TrainingError

__all__ = ["RowLogger", "format_row", "format_validation", "numeric", "open_loggers"]


class RowLogger(Protocol):
    """A sink of logged rows."""

    def log(self, step: int, row: dict[str, Any]) -> None:
        """Record the row of ``step``."""
        ...

    def close(self) -> None:
        """Flush and release the sink."""
        ...


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a row, ``step`` left out (booleans are not numbers here)."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _require(package: str, extra: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise TrainingError(f"train.loggers names {extra} but the {package!r} package is not installed "
                            f"(pip install {extra if extra == 'wandb' else '-e .[' + extra + ']'}; or drop it from "
                            "train.loggers)") from None


class TensorBoardLogger:
    """Scalars to ``RUN/tensorboard`` through ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, run_dir: Path) -> None:
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, step: int, row: dict[str, Any]) -> None:
        for k, v in numeric(row).items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run (``wandb.init`` once, ``log`` per row, ``finish`` at the end)."""

    def __init__(self, run_dir: Path, recipe: dict[str, Any], name: str) -> None:
        wandb = _require("wandb", "wandb")
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "zonkey"), name=name, dir=str(run_dir),
                              config=recipe, resume="allow", id=_wandb_id(run_dir))

    def log(self, step: int, row: dict[str, Any]) -> None:
        self.run.log(numeric(row), step=step)

    def close(self) -> None:
        self.run.finish()


def _wandb_id(run_dir: Path) -> str:
    """A W&B run id kept in ``RUN/wandb/run-id`` so that a resumed run logs into the same W&B run."""
    path = run_dir / "wandb" / "run-id"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    import secrets

    rid = secrets.token_hex(8)
    path.write_text(rid + "\n", encoding="utf-8")
    return rid


def open_loggers(names: Sequence[str], run_dir: Path, recipe: dict[str, Any], name: str) -> list[RowLogger]:
    """The sinks ``train.loggers`` asks for besides ``jsonl`` (which the trainer writes itself).

    Args:
        names: the recipe's ``train.loggers``.
        run_dir: the run directory.
        recipe: the recipe as a dict (W&B's config).
        name: the run's name in the trackers.

    Returns:
        one open logger per name other than ``jsonl``, in the order given.

    Raises:
        TrainingError: a logger whose package is not installed.
    """
    out: list[RowLogger] = []
    for n in names:
        if n == "tensorboard":
            out.append(TensorBoardLogger(run_dir))
        elif n == "wandb":
            out.append(WandbLogger(run_dir, recipe, name))
    return out


def format_row(row: dict[str, Any], end: int, ramping: dict[str, float] | None = None) -> str:
    """The log line of a row: loss, level-0 figures, throughput, then the held-out figures and the ramps."""
    keys = ["l0.token", "l0.diffusion", "l0.train_byte_acc", "l0.mean_segment", "l0.space_f1", "l0.word_f1"]
    extra = " ".join(f"{k.split('.', 1)[1]}={row[k]:.3f}" for k in keys if isinstance(row.get(k), float))
    loss = row["loss"]
    line = (f"step {row['step']}/{end} loss={loss:.4f} " if loss is not None else f"step {row['step']}/{end} loss=nan ") + \
        f"{extra} {row['bytes_per_s']:.0f} B/s"
    if "val.loss" in row:
        line += " | " + format_validation(row)
    if ramping:
        line += " | ramping " + ", ".join(f"{k} x{v:.2f}" for k, v in ramping.items())
    return line


def format_validation(row: dict[str, Any]) -> str:
    """``val loss=… l0.recon_acc=… …``: the held-out figures of a row (the ``val.`` keys)."""
    keys = ["val.l0.recon_acc", "val.l0.word_f1", "val.l0.space_f1", "val.l1.recon_acc"]
    parts = [f"{k[4:]}={row[k]:.3f}" for k in keys if isinstance(row.get(k), float)]
    parts += [f"{k[4:]}={v:.4f}" for k, v in row.items() if k.endswith(".prior") and k.startswith("val.")]
    return f"held-out (val.) loss={row['val.loss']:.4f} " + " ".join(parts)
