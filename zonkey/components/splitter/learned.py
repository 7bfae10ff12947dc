"""``learned``: the Segment Splitter of §4, the differentiable tokenizer.

BOS probabilities come from a light local encoder over the level's own vectors (at level 0: the
learned byte embeddings) and nothing else: no whitespace rule, character class or boundary label
reaches it. Depthwise convolutions give n-gram context and one probabilistic-attention layer
(padding masked) gives wider context; a linear head whose bias starts at logit(1 / target length)
gives the logit. The attention is local, as the paper's splitter is: each position attends only to
those at most ``window`` positions away, so its cost is O(n · window) and a document of any length
splits in bounded memory (at inference the probabilities are computed over overlapping pieces of the
sequence, each wide enough to hold every position's whole receptive field, so they equal those of
one pass). A window that covers the sequence is exactly the full attention. Position 0 is always a BOS; in training BOS positions are sampled (u < p), at
inference thresholded at 0.5, and a BOS is forced inside any gap of ``max_segment`` positions.

``context: causal`` lets the decision at position i read positions <= i only (left-padded
convolutions, causal attention). Which edge of a word a bidirectional splitter settles on varies
between runs (the space before it, its first letter, or its last letter: docs/experiments.md); a
causal splitter cannot place a BOS on a word's last letter, because that needs the byte after it,
so it settles on the space or the first letter. It sees exactly the same learned vectors.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from zonkey.components.splitter.base import SplitterBase
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.existence import P_EPS, float32_logits
from zonkey.core.nn.transformer import Encoder


class LearnedSplitter(SplitterBase):
    """BOS probabilities from depthwise convolutions and a probabilistic-attention encoder (§4)."""

    def __init__(self, ctx: LevelContext, cfg: LearnedSplitterConfig) -> None:
        super().__init__(ctx, cfg.target_segment, cfg.existence)
        d = ctx.d_model
        self.causal = cfg.context == "causal"
        # bidirectional: centred windows; causal: the window ends at the position itself
        self.pads = [(w - 1, 0) if self.causal else (w // 2, (w - 1) // 2) for w in cfg.kernels]
        self.convs = nn.ModuleList(nn.Conv1d(d, d, kernel_size=w, groups=d) for w in cfg.kernels)
        self.mix = nn.Linear(d * (len(cfg.kernels) + 1), d)
        self.encoder = Encoder(d, ctx.heads, cfg.layers, ctx.attention, ctx.ffn_mult, ctx.dropout) if cfg.layers else None
        self.window = cfg.window
        self.piece = cfg.piece
        self.head = nn.Linear(d, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, math.log(self.target_rate / (1 - self.target_rate)))

    @property
    def reach(self) -> tuple[int, int]:
        """How far the probability at a position reads: (positions before it, positions after it)."""
        conv_left = max((left for left, _ in self.pads), default=0)
        conv_right = max((right for _, right in self.pads), default=0)
        layers = len(self.encoder.blocks) if self.encoder is not None else 0
        return conv_left + layers * self.window, conv_right + (0 if self.causal else layers * self.window)

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:
        """BOS probabilities.

        Without gradients, a sequence longer than ``piece`` positions is computed piece by piece,
        each piece with its receptive field (:attr:`reach`) on both sides: the same probabilities
        as one pass, in memory bounded by the piece.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (never read: the splitter sees only its vectors).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.
        """
        n = x.shape[1]
        if torch.is_grad_enabled() or n <= self.piece:
            return self._probabilities(x, valid)
        before, after = self.reach
        # written into one tensor made at the first piece: small results kept between the pieces'
        # large temporaries would fragment the heap
        p: Tensor | None = None
        for a in range(0, n, self.piece):
            b = min(n, a + self.piece)
            lo, hi = max(0, a - before), min(n, b + after)
            part = self._probabilities(x[:, lo:hi], valid[:, lo:hi])[:, a - lo:b - lo]
            if p is None:
                p = part.new_empty(valid.shape)  # float32, or float64 for a float64 input
            p[:, a:b] = part
        assert p is not None  # n > piece >= 1: at least one piece
        return p

    def _probabilities(self, x: Tensor, valid: Tensor) -> Tensor:
        """One pass of :meth:`bos_probabilities` over the whole of ``x`` (b, n, d)."""
        x = x.masked_fill(~valid[..., None], 0.0)
        xc = rearrange(x, "b n d -> b d n")
        feats = [x] + [rearrange(c(F.pad(xc, pad)), "b d n -> b n d") for c, pad in zip(self.convs, self.pads, strict=True)]
        h = self.mix(torch.cat(feats, dim=-1))  # (b, n, d)
        if self.encoder is not None:
            log_e = torch.zeros(valid.shape, device=x.device).masked_fill(~valid, float("-inf"))
            h = self.encoder(h, log_e, causal=self.causal, window=self.window)
        logit = float32_logits(self.head, h).squeeze(-1)  # (b, n) float32 even under autocast
        return torch.sigmoid(logit).clamp(P_EPS, 1 - P_EPS).masked_fill(~valid, 0.0)


@register("splitter", "learned")
class LearnedSplitterConfig(ComponentConfig):
    """Learned BOS probabilities from a light local encoder (§4)."""

    name: Literal["learned"] = "learned"
    target_segment: float = Field(6.0, gt=1, le=4096, description="target mean segment length (positions); sets the BOS-rate target")
    kernels: tuple[int, ...] = Field((3, 5), description="depthwise convolution widths (local n-gram context)")
    layers: int = Field(1, ge=0, le=64, description="probabilistic-attention layers of the splitter encoder")
    context: Literal["both", "causal"] = Field(
        "both", description="both: each BOS decision reads neighbours on both sides; causal: only the positions up to "
        "its own (it cannot see the byte after a word, so it cannot cut at the word's last letter)")
    window: int = Field(
        512, ge=1, le=1 << 20, description="local attention: each position attends only to positions at most this far away "
        "(O(n · window)); a sequence of up to window + 1 positions gets exactly the full attention. The default "
        "covers the bundled recipes' 512-byte training chunks, so their training is full attention")
    piece: int = Field(
        8192, ge=1, le=1 << 24, description="at inference, sequences longer than this are split piece by piece (each piece "
        "with its receptive field on both sides): bounded memory, the same probabilities")
    existence: Literal["soft", "straight_through"] = Field(
        "soft", description="soft: existence = Π(1 − p_bos) as in §4; straight_through: hard existence of the "
        "chosen BOS in the forward pass, soft gradients (an ablation lever)")

    def build(self, ctx: LevelContext) -> LearnedSplitter:
        """The module of this config for the level that ``ctx`` describes."""
        return LearnedSplitter(ctx, self)
