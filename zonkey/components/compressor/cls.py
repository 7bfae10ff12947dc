"""``cls``: the Compressor of §5.

``k`` learned CLS vectors (existence 1) are prepended to the
segment, a probabilistic-attention encoder reads the whole (CLS + segment), and the first ``k``
outputs, flattened to ``k·d``, are scaled to the sphere of the expected Gaussian norm.

``skip: true`` adds a linear path from the existence-weighted, flattened segment (m·d) straight to
the k·d latent, summed with the CLS outputs before the sphere projection. With the ``linear``
decoder of ``ddmm`` this gives the autoencoder a direct linear route (bytes -> latent -> slots)
that small models find at once, while attention learns the rest; an ablation lever for how fast
reconstruction takes off (docs/experiments.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange, repeat
from pydantic import Field
from torch import Tensor, nn

from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.nn.transformer import Encoder


class ClsCompressor(nn.Module):
    """k learned CLS vectors prepended to the segment, read by a probabilistic-attention encoder.

    A segment may come with fewer than m slots (length buckets): the missing slots are the ones
    whose existence is 0, which the encoder masks and the skip path weighs by 0, so the latent is
    the one of the full m slots.
    """

    #: runs segments cut to fewer than m slots with the same result (``model.packing``)
    packs_slots = True
    #: takes ``lengths`` and computes each segment's own slots only (``model.packing: varlen``)
    packs_rows = True

    def __init__(self, ctx: LevelContext, layers: int, skip: bool = False) -> None:
        super().__init__()
        d, self.k, self.m = ctx.d_model, ctx.n_compress, ctx.max_segment
        self.cls = nn.Parameter(torch.randn(self.k, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(self.k + self.m, d))  # same scale as the content (norm ~ sqrt(d))
        self.encoder = Encoder(d, ctx.heads, layers, ctx.attention, ctx.ffn_mult, ctx.dropout)
        self.out = nn.Linear(d, d)
        self.skip = nn.Linear(self.m * d, self.k * d) if skip else None

    def encode(self, x: Tensor, log_existence: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Compress and keep the encoder's slot states (masked prediction reads them, §5.2).

        Args:
            x: (s, m, d) segment vectors (or (s, L, d), L <= m: the first L slots).
            log_existence: (s, m) log existence of each slot.
            lengths: (s,) optional: segment i is its first ``lengths[i]`` slots, the rest are left
                out (not computed; the same as existence 0 there).

        Returns:
            (latents (s, k·d) on the sphere, slot states (s, m, d), 0 past ``lengths``).
        """
        s, length = x.shape[0], x.shape[1]
        keep = None
        if lengths is not None:
            inside = torch.arange(length, device=x.device)[None, :] < lengths[:, None]  # (s, L)
            log_existence = log_existence.masked_fill(~inside, float("-inf"))
            keep = torch.cat([inside.new_ones(s, self.k), inside], dim=1)
        h = torch.cat([repeat(self.cls, "k d -> s k d", s=s), x], dim=1) + self.pos[: self.k + length]  # (s, k+m, d)
        le = torch.cat([log_existence.new_zeros(s, self.k), log_existence], dim=1)  # (s, k+m)
        h = self.encoder(h, le, keep=keep)  # (s, k+m, d)
        z = rearrange(self.out(h[:, : self.k]), "s k d -> s (k d)")
        if self.skip is not None:
            # existence-weighted so that bytes past the segment's end (existence 0) add nothing
            flat = rearrange(x * log_existence.exp()[..., None], "s m d -> s (m d)")
            weight = self.skip.weight if length == self.m else self.skip.weight[:, : flat.shape[1]]
            z = z + nn.functional.linear(flat, weight, self.skip.bias)
        return to_sphere(z), h[:, self.k:]

    def forward(self, x: Tensor, log_existence: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Compress.

        Args:
            x: (s, m, d) segment vectors.
            log_existence: (s, m) log existence of each slot.
            lengths: (s,) optional: compute only each segment's first ``lengths[i]`` slots.

        Returns:
            (s, k·d) latents on the sphere.
        """
        return self.encode(x, log_existence, lengths)[0]


@register("compressor", "cls")
class ClsCompressorConfig(ComponentConfig):
    """k learned CLS vectors + probabilistic-attention encoder (§5)."""

    name: Literal["cls"] = "cls"
    layers: int = Field(2, ge=1, le=64, description="encoder layers")
    skip: bool = Field(False, description="add a linear path from the existence-weighted flattened segment to the latent")

    def build(self, ctx: LevelContext) -> ClsCompressor:
        """The module of this config for the level that ``ctx`` describes."""
        return ClsCompressor(ctx, self.layers, self.skip)
