"""``learned``: the Segment Splitter of §4, the differentiable tokenizer.

BOS probabilities come from a light local encoder over the level's own vectors (at level 0: the
learned byte embeddings) and nothing else: no whitespace rule, character class or boundary label
reaches it. Depthwise convolutions give n-gram context and one probabilistic-attention layer
(padding masked) gives wider context; a linear head whose bias starts at logit(1 / target length)
gives the logit. Position 0 is always a BOS; in training BOS positions are sampled (u < p), at
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
from zonkey.core.existence import P_EPS, float32_logits
from zonkey.core.registry import ComponentConfig, register
from zonkey.core.shapes import LevelContext
from zonkey.core.transformer import Encoder


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
        self.head = nn.Linear(d, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, math.log(self.target_rate / (1 - self.target_rate)))

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:
        """BOS probabilities.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (never read: the splitter sees only its vectors).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.
        """
        x = x.masked_fill(~valid[..., None], 0.0)
        xc = rearrange(x, "b n d -> b d n")
        feats = [x] + [rearrange(c(F.pad(xc, pad)), "b d n -> b n d") for c, pad in zip(self.convs, self.pads, strict=True)]
        h = self.mix(torch.cat(feats, dim=-1))  # (b, n, d)
        if self.encoder is not None:
            log_e = torch.zeros(valid.shape, device=x.device).masked_fill(~valid, float("-inf"))
            h = self.encoder(h, log_e, causal=self.causal)
        logit = float32_logits(self.head, h).squeeze(-1)  # (b, n) float32 even under autocast
        return torch.sigmoid(logit).clamp(P_EPS, 1 - P_EPS).masked_fill(~valid, 0.0)


@register("splitter", "learned")
class LearnedSplitterConfig(ComponentConfig):
    """Learned BOS probabilities from a light local encoder (§4)."""

    name: Literal["learned"] = "learned"
    target_segment: float = Field(6.0, gt=1, description="target mean segment length (positions); sets the BOS-rate target")
    kernels: tuple[int, ...] = Field((3, 5), description="depthwise convolution widths (local n-gram context)")
    layers: int = Field(1, ge=0, description="probabilistic-attention layers of the splitter encoder")
    context: Literal["both", "causal"] = Field(
        "both", description="both: each BOS decision reads neighbours on both sides; causal: only the positions up to "
        "its own (it cannot see the byte after a word, so it cannot cut at the word's last letter)")
    existence: Literal["soft", "straight_through"] = Field(
        "soft", description="soft: existence = Π(1 − p_bos) as in §4; straight_through: hard existence of the "
        "chosen BOS in the forward pass, soft gradients (an ablation lever)")

    def build(self, ctx: LevelContext) -> LearnedSplitter:
        """The module of this config for the level that ``ctx`` describes."""
        return LearnedSplitter(ctx, self)
