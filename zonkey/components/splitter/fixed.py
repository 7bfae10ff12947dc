"""``fixed``: baseline splitter with a BOS every ``every`` positions (no learning)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.splitter.base import SplitterBase
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.existence import P_EPS


class FixedSplitter(SplitterBase):
    """A BOS every ``every`` positions (at most ``max_segment``), whatever the input."""

    def __init__(self, ctx: LevelContext, every: int) -> None:
        super().__init__(ctx, float(every))
        self.every = min(every, ctx.max_segment)

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:
        """BOS probabilities.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (not read).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.
        """
        idx = torch.arange(x.shape[1], device=x.device)
        p = torch.where(idx % self.every == 0, 1 - P_EPS, P_EPS).to(torch.float32)
        return p[None].expand(valid.shape).masked_fill(~valid, 0.0)


@register("splitter", "fixed")
class FixedSplitterConfig(ComponentConfig):
    """Baseline: a BOS every `every` positions."""

    name: Literal["fixed"] = "fixed"
    every: int = Field(6, ge=1, le=4096)

    def build(self, ctx: LevelContext) -> FixedSplitter:
        """The module of this config for the level that ``ctx`` describes."""
        return FixedSplitter(ctx, self.every)
