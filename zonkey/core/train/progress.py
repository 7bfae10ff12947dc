"""What a training run shows and reports: its device, its progress bar and its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from zonkey.errors import TrainingError

__all__ = ["TrainProgress", "TrainResult", "resolve_device"]


@dataclass
class TrainResult:
    """What a finished training run reports: where it wrote, how far it got, its last figures."""

    run_dir: Path
    step: int
    last_loss: float
    skipped_steps: int
    bytes_seen: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    interrupted: int | None = None  # the signal that stopped training (after a checkpoint was saved)


def resolve_device(name: str) -> torch.device:
    """The device ``train.device`` names (``auto``: CUDA when available, else CPU).

    Raises:
        TrainingError: CUDA asked for where it is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


class TrainProgress:
    """A rich progress bar (loss, bytes/s, ETA), or nothing when disabled."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), transient=False)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, *, loss: float, bps: float, acc: float | None) -> None:
        """Show step ``step`` with the loss, bytes per second and (when known) byte accuracy."""
        if self.bar is None:
            return
        info = f"loss {loss:.3f} · {bps:,.0f} B/s" + (f" · acc {acc:.3f}" if acc is not None else "")
        self.bar.update(self.task, completed=step, info=info)

    def close(self) -> None:
        """Stop the bar (idempotent)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
