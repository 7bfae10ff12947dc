"""``hard``: the baseline stitcher of §7. Each decoded segment is cut where its existence falls
below a threshold and the pieces are concatenated in order (with true starts, where they are known,
each position keeps the segment that starts closest before it). No parameters, no losses."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field
from torch import Tensor, nn

from zonkey.components.stitcher.base import chain_starts, kept_lengths, place
from zonkey.core.outputs import StitchOutput
from zonkey.core.registry import ComponentConfig, register
from zonkey.core.shapes import LevelContext


class HardStitcher(nn.Module):
    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, segments: Tensor, log_existence: Tensor, doc: Tensor, b: int,
                true_starts: Optional[Tensor] = None) -> StitchOutput:
        """segments (s, m, d), log_existence (s, m), doc (s,) sorted -> StitchOutput."""
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
        return HardStitcher(self.threshold)
