"""``mean``: pooling ablation of the Compressor.

The segment is encoded, then split into ``k``
equal chunks of slots whose existence-weighted means become the ``k`` latents (no CLS vectors).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.nn.transformer import Encoder


class MeanCompressor(nn.Module):
    """Existence-weighted means of k equal chunks of encoded slots (no per-slot states exposed)."""

    assign: Tensor  # (m, k) one-hot: the latent each slot is pooled into

    #: runs segments cut to fewer than m slots (their missing slots have existence 0) the same
    packs_slots = True

    def __init__(self, ctx: LevelContext, layers: int) -> None:
        super().__init__()
        d, self.k, self.m = ctx.d_model, ctx.n_compress, ctx.max_segment
        self.pos = nn.Parameter(torch.randn(self.m, d))
        self.encoder = Encoder(d, ctx.heads, layers, ctx.attention, ctx.ffn_mult, ctx.dropout)
        # slot j contributes to latent floor(j·k/m)
        self.register_buffer("assign", nn.functional.one_hot(torch.arange(self.m) * self.k // self.m, self.k).float(), persistent=False)
        self.latent_pos = nn.Parameter(torch.randn(self.k, d) * 0.02)

    def forward(self, x: Tensor, log_existence: Tensor) -> Tensor:
        """Compress.

        Args:
            x: (s, m, d) segment vectors.
            log_existence: (s, m) log existence of each slot.

        Returns:
            (s, k·d) latents on the sphere.
        """
        length = x.shape[1]
        h = self.encoder(x + self.pos[:length], log_existence)  # (s, m, d)
        w = log_existence.exp()[..., None] * self.assign[:length]  # (s, m, k)
        pooled = torch.einsum("smk,smd->skd", w, h) / w.sum(1)[..., None].clamp_min(1e-6)  # (s, k, d)
        return to_sphere(rearrange(pooled + self.latent_pos, "s k d -> s (k d)"))


@register("compressor", "mean")
class MeanCompressorConfig(ComponentConfig):
    """Pooling ablation: existence-weighted means of k chunks of slots."""

    name: Literal["mean"] = "mean"
    layers: int = Field(2, ge=1, le=64)

    def build(self, ctx: LevelContext) -> MeanCompressor:
        """The module of this config for the level that ``ctx`` describes."""
        return MeanCompressor(ctx, self.layers)
