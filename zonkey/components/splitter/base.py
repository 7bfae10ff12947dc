"""What every built-in splitter shares: BOS probabilities -> BOS decisions -> segments (§4).

A splitter subclasses :class:`SplitterBase` and defines :meth:`SplitterBase.bos_probabilities`;
the decisions (sampled in training, thresholded at inference, a BOS forced in any gap of
``max_segment``) and the cut into segments are the same for all of them. The contract a level
relies on is :class:`zonkey.core.contracts.protocols.Splitter`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from zonkey.core.contracts.outputs import SplitOutput
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.segments import decide_bos, make_split


class SplitterBase(nn.Module):
    """Shared forward: BOS probabilities -> decisions -> segments.

    Args:
        ctx: the level's build context (``max_segment`` m and ``n_compress`` k are read).
        target_segment: the target mean segment length; sets :attr:`target_rate`.
        existence: ``soft`` (existence = Π(1 − p_bos)) or ``straight_through``.
    """

    def __init__(self, ctx: LevelContext, target_segment: float, existence: str = "soft") -> None:
        super().__init__()
        self.existence = existence
        self.m = ctx.max_segment
        self.k = ctx.n_compress
        self.target_segment = target_segment

    @property
    def target_rate(self) -> float:
        """The BOS rate the splitter is held near: 1 / ``target_segment``."""
        return 1.0 / self.target_segment

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:  # pragma: no cover
        """BOS probabilities; every splitter defines them.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (only rule-based splitters read them).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.
        """
        raise TypeError(f"{type(self).__name__} must define bos_probabilities()")

    def forward(self, x: Tensor, valid: Tensor, *, sample: bool | None = None, tokens: Tensor | None = None,
                generator: torch.Generator | None = None) -> SplitOutput:
        """Split a batch.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            sample: sample the decisions (default: ``self.training``) or threshold them at 0.5.
            tokens: (b, n) byte values (only rule-based splitters read them).
            generator: random source of the sampled decisions.

        Returns:
            The :class:`SplitOutput` with segments (s, m, d).
        """
        p = self.bos_probabilities(x, valid, tokens=tokens)  # (b, n)
        sample = self.training if sample is None else sample
        bos = decide_bos(p, valid, self.m, sample=sample, generator=generator)
        return make_split(x, valid, p, bos, self.m, self.k, existence=self.existence)
