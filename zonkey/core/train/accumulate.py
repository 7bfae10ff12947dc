"""Gradient accumulation (``train.grad_accum``): a step's batch as row slices whose gradients add up.

The batch of a step is cut into N slices by rows (rows j::N, as ranks cut a global batch under
data parallelism); slice j's loss is weighted by its share of the rows, b_j / b, so the summed
gradient is the row-weighted mean of the slices' gradients, the gradient of one pass over the whole
batch wherever the loss is a mean over rows. Clipping and the optimizer step see the sum once.
"""

from __future__ import annotations

from zonkey.core.train.distributed import shard_batch
from zonkey.data import Batch

__all__ = ["add_values", "micro_batches"]


def micro_batches(batch: Batch, n: int) -> list[tuple[Batch, float]]:
    """The ``n`` slices of ``batch`` and the share of the rows each holds.

    Args:
        batch: the step's batch (this rank's rows under DDP), (b, n).
        n: slices wanted (``train.grad_accum``).

    Returns:
        ``[(batch, 1.0)]`` for n = 1 (the batch itself, untouched); else n pairs (rows j::n, b_j / b).
        Where the batch has fewer than n rows the extra slices hold row 0 at share 0 (under DDP every
        rank runs the same number of passes, so none waits for a pass another skips).
    """
    if n == 1:
        return [(batch, 1.0)]
    return [(part, w / n) for part, w in (shard_batch(batch, j, n) for j in range(n))]


def add_values(into: dict[str, float], values: dict[str, float], share: float) -> None:
    """Add ``share`` × each value to ``into`` (the logged figures of a step, a row-weighted mean of its slices)."""
    for k, v in values.items():
        into[k] = into.get(k, 0.0) + share * v
