"""Fitting the parts of a model that are counted on the training text instead of learned.

A component that fulfils :class:`~zonkey.core.contracts.protocols.FitsTrainingText` (the ``entropy``
splitter's byte n-gram) is fitted once, when a fresh run starts, on the training split's chunks.
Its tables live in the module's buffers, so every checkpoint saves them; what the fit measured is
written beside the checkpoints as ``RUN/<kind>-l<level>.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from zonkey.core.contracts.protocols import FitsTrainingText
from zonkey.io import atomic_write_json

FITTED_KINDS = ("splitter", "compressor", "denoiser", "objective", "stitcher")


def fit_report_path(run_dir: str | Path, kind: str, level: int) -> Path:
    """Where the fit report of a level's component is written."""
    return Path(run_dir) / f"{kind}-l{level}.json"


def fit_to_training_text(levels: Iterable[nn.Module], chunks: Sequence[bytes], run_dir: str | Path | None,
                         log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Fit every component of ``levels`` that fits to the training text.

    Args:
        levels: the model's levels (each with its components as attributes).
        chunks: the training split's chunks.
        run_dir: where each report is written (None: nowhere).
        log: where one line per fitted component goes.

    Returns:
        ``{"<kind>-l<level>": report}`` of every fitted component (empty when none fits).
    """
    out: dict[str, dict[str, Any]] = {}
    for i, level in enumerate(levels):
        for kind in FITTED_KINDS:
            comp = getattr(level, kind, None)
            if not isinstance(comp, FitsTrainingText):
                continue
            t0 = time.perf_counter()
            report = {"kind": kind, "level": i, "component": type(comp).__name__, **comp.fit(chunks),
                      "seconds": round(time.perf_counter() - t0, 2)}
            out[f"{kind}-l{i}"] = report
            if run_dir is not None:
                atomic_write_json(fit_report_path(run_dir, kind, i), report)
            if log is not None:
                shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in report.items()
                                  if k in ("threshold_bits", "mean_segment", "train_bytes", "seconds"))
                log(f"fitted model.levels.{i}.{kind} on the training split: {shown}")
    return out
