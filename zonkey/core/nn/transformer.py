"""Transformer blocks with probabilistic attention (§3): pre-norm, residual, GELU feed-forward.

Every block takes ``log_existence`` (b, n) next to its input and an attention backend module built
from the recipe's ``attention`` node, so the same encoder runs the ``reference``, ``sdpa``, ``flex``
or ``hard`` path without any other change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from einops import rearrange
from torch import Tensor, nn

from zonkey.core.nn.attention import probabilistic_attention
from zonkey.core.nn.local_attention import local_attention

AttentionFn = Callable[..., Tensor]


def _default_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    return probabilistic_attention(q, k, v, log_existence, causal=causal, backend="sdpa")


class ProbabilisticSelfAttention(nn.Module):
    """Multi-head self-attention whose scores carry the existence bias."""

    def __init__(self, d: int, heads: int, attention: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.attention: AttentionFn = attention if attention is not None else _default_attention
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, log_existence: Tensor, *, causal: bool = False, window: int | None = None) -> Tensor:
        """``x`` (b, n, d), ``log_existence`` (b, n) -> (b, n, d).

        With ``window``, each position attends only to those at most ``window`` positions away
        (O(n · window)); a window that covers the sequence (n <= window + 1) runs the backend's
        full attention unchanged.
        """
        q, k, v = rearrange(self.qkv(x), "b n (three h dh) -> three b h n dh", three=3, h=self.heads)
        if window is not None and x.shape[1] > window + 1:
            local = getattr(self.attention, "local", None)
            y = (local(q, k, v, log_existence, causal=causal, window=window) if callable(local)
                 else local_attention(q, k, v, log_existence, causal=causal, window=window))
        else:
            y = self.attention(q, k, v, log_existence, causal=causal)  # (b, h, n, dh)
        return self.drop(self.out(rearrange(y, "b h n dh -> b n (h dh)")))

    def forward_rows(self, h: Tensor, index: Tensor, shape: tuple[int, int], log_existence: Tensor, *,
                     causal: bool = False) -> Tensor:
        """The same attention for the positions ``index`` of a (b, n) layout only.

        ``h`` (T, d) holds those positions' inputs, in the order of ``index`` (flat indices into
        b·n). The projections run on the T rows alone; the scores run on the (b, n) layout, where
        every other position is a zero vector that ``log_existence`` (b, n) must mark −inf.

        Returns:
            (T, d), the attention's output at each position of ``index``.
        """
        b, n = shape
        qkv = self.qkv(h)  # (T, 3d)
        full = qkv.new_zeros(b * n, qkv.shape[1]).index_copy(0, index, qkv)
        q, k, v = rearrange(full, "(b n) (three h dh) -> three b h n dh", b=b, three=3, h=self.heads)
        y = self.attention(q, k, v, log_existence, causal=causal)  # (b, h, n, dh)
        y = rearrange(y, "b h n dh -> (b n) (h dh)").index_select(0, index)
        return self.drop(self.out(y))


class FeedForward(nn.Module):
    """The position-wise MLP of a block: Linear(d, mult·d), GELU, Linear(mult·d, d), dropout."""

    def __init__(self, d: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, mult * d), nn.GELU(), nn.Linear(mult * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (..., d) -> (..., d)."""
        return self.net(x)


class EncoderBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x), existence); x + FFN(LN(x))."""

    def __init__(self, d: int, heads: int, attention: nn.Module | None = None, ffn_mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = ProbabilisticSelfAttention(d, heads, attention, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = FeedForward(d, ffn_mult, dropout)

    def forward(self, x: Tensor, log_existence: Tensor, *, causal: bool = False, window: int | None = None) -> Tensor:
        """``x`` (b, n, d), ``log_existence`` (b, n) -> (b, n, d); ``window`` as in the attention."""
        x = x + self.attn(self.norm1(x), log_existence, causal=causal, window=window)
        return x + self.ffn(self.norm2(x))

    def forward_rows(self, h: Tensor, index: Tensor, shape: tuple[int, int], log_existence: Tensor, *,
                     causal: bool = False) -> Tensor:
        """The block on the positions ``index`` of a (b, n) layout: ``h`` (T, d) -> (T, d)."""
        h = h + self.attn.forward_rows(self.norm1(h), index, shape, log_existence, causal=causal)
        return h + self.ffn(self.norm2(h))


class Encoder(nn.Module):
    """A stack of :class:`EncoderBlock` with a final LayerNorm.

    Args:
        d: width. heads: attention heads. layers: number of blocks.
        attention: backend module (``registry("attention").config(...).build()``); default sdpa.
    """

    def __init__(
        self,
        d: int,
        heads: int,
        layers: int,
        attention: nn.Module | None = None,
        ffn_mult: int = 4,
        dropout: float = 0.0,
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(d, heads, attention, ffn_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d) if final_norm else nn.Identity()

    def forward(self, x: Tensor, log_existence: Tensor, *, causal: bool = False, window: int | None = None,
                keep: Tensor | None = None) -> Tensor:
        """``x`` (b, n, d), ``log_existence`` (b, n) -> (b, n, d). Padded positions (−inf) come out 0.

        ``window``: every layer attends only within that many positions (None: the whole sequence).
        ``keep`` (b, n) bool: compute only these positions (``model.packing: varlen``). The others
        are left out as if they were padding (existence −inf: no position reads them) and come out
        0; the linear layers run on the kept positions alone, gathered into one (T, d) matrix, and
        only the attention scores see the (b, n) layout.

        Raises:
            ValueError: ``keep`` with a ``window``.
        """
        if keep is not None:
            if window is not None:
                raise ValueError("an encoder computes kept positions only under full attention (no window)")
            return self._forward_rows(x, log_existence, keep, causal)
        for block in self.blocks:
            x = block(x, log_existence, causal=causal, window=window)
        x = self.norm(x)
        return x.masked_fill(torch.isneginf(log_existence)[..., None], 0.0)

    def _forward_rows(self, x: Tensor, log_existence: Tensor, keep: Tensor, causal: bool) -> Tensor:
        b, n, d = x.shape
        # one tensor for every block: the attention backends build their bias once per tensor
        le = log_existence.masked_fill(~keep, float("-inf"))
        index = keep.reshape(-1).nonzero().squeeze(1)  # (T,)
        h = x.reshape(b * n, d).index_select(0, index)
        for block in self.blocks:
            h = cast(EncoderBlock, block).forward_rows(h, index, (b, n), le, causal=causal)
        h = self.norm(h)
        out = h.new_zeros(b * n, d).index_copy(0, index, h).view(b, n, d)
        return out.masked_fill(torch.isneginf(le)[..., None], 0.0)
