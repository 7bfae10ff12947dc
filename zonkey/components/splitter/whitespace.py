"""``whitespace``: rule-based baseline (level 0 only) with a BOS at every word start.

A word start is a non-whitespace byte after a whitespace byte. The splitter reads the raw bytes, which is exactly what the
learned splitter is never allowed to do; it exists to compare against.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from zonkey.components.splitter.base import SplitterBase
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.existence import P_EPS

_WS = torch.tensor([9, 10, 11, 12, 13, 32])


class WhitespaceSplitter(SplitterBase):
    """A BOS at every word start of the byte tokens (level 0 only).

    Raises:
        ValueError: built for a level above 0.
    """

    def __init__(self, ctx: LevelContext) -> None:
        if ctx.level != 0:
            raise ValueError("the whitespace splitter reads bytes and only works at level 0")
        super().__init__(ctx, 6.0)

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:
        """BOS probabilities.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (required).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.

        Raises:
            ValueError: no tokens given.
        """
        if tokens is None:
            raise ValueError("the whitespace splitter needs the byte tokens")
        ws = torch.isin(tokens, _WS.to(tokens.device))
        prev_ws = torch.cat([torch.ones_like(ws[:, :1]), ws[:, :-1]], dim=1)
        start = ~ws & prev_ws
        return torch.where(start, 1 - P_EPS, P_EPS).to(torch.float32).masked_fill(~valid, 0.0)


@register("splitter", "whitespace")
class WhitespaceSplitterConfig(ComponentConfig):
    """Baseline (level 0): a BOS at every word start."""

    name: Literal["whitespace"] = "whitespace"

    def build(self, ctx: LevelContext) -> WhitespaceSplitter:
        """The module of this config for the level that ``ctx`` describes."""
        return WhitespaceSplitter(ctx)
