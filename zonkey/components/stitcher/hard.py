"""``hard``: the baseline stitcher of §7.

Each decoded segment is cut where its existence falls
below a threshold and the pieces are concatenated in order (with true starts, where they are known,
each position keeps the segment that starts closest before it). No parameters, no losses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from zonkey.components.stitcher.base import chain_starts, kept_lengths, place
from zonkey.core.contracts.outputs import StitchOutput
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext


class HardStitcher(nn.Module):
    """Cuts each segment at its existence threshold and lays the pieces end to end (no parameters)."""

    has_losses = False  # nothing to train: the level skips its training pass

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, segments: Tensor, log_existence: Tensor, doc: Tensor, b: int,
                true_starts: Tensor | None = None) -> StitchOutput:
        """Stitch segments back onto document positions.

        Args:
            segments: (s, m, d) decoded segment vectors.
            log_existence: (s, m) log existence of each slot.
            doc: (s,) long document of each segment, sorted by (document, start).
            b: number of documents.
            true_starts: (s,) true first positions (used for placement where known).

        Returns:
            The :class:`StitchOutput` (b, n, d).
        """
        lengths = kept_lengths(log_existence, self.threshold)  # (s,)
        starts = chain_starts(lengths, doc) if true_starts is None else true_starts
        m = segments.shape[1]
        keep = (nn.functional.one_hot(lengths - 1, m).flip(1).cumsum(1).flip(1)).bool()  # (s, m) first `len` slots
        x, valid = place(segments, keep, doc, starts, b)
        return StitchOutput(x=x, valid=valid, starts=starts)


@register("stitcher", "hard")
class HardStitcherConfig(ComponentConfig):
    """Baseline: cut at the existence threshold and concatenate."""

    name: Literal["hard"] = "hard"
    threshold: float = Field(0.5, gt=0, lt=1)

    def build(self, ctx: LevelContext) -> HardStitcher:
        """The module of this config for the level that ``ctx`` describes."""
        return HardStitcher(self.threshold)
