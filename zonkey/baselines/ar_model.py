"""A small causal byte transformer: the autoregressive baseline beside the diffusion model.

Inputs are the 256 byte values and one start token (:data:`BOS`); outputs are the 256 bytes and
one end-of-document class, which shares the start token's id: a row is ``[BOS, b0 … b(L−1)]`` and
its targets ``[b0 … b(L−1), END]`` when the chunk ends its document (otherwise the last target is
not scored). Pre-norm blocks, learned absolute positions up to ``context``, plain softmax
attention (no existence: every position is real), untied output head.

Generation keeps every layer's keys and values in a :class:`KVCache`, so each new byte costs one
position's work; scoring a batch of continuations of one prefix reuses the prefix's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

BOS = 256  # the start token at the input; as an output class: the document ends here
END = BOS
VOCAB = 257


class ARConfig(BaseModel):
    """The baseline's size; everything else comes from the recipe it is trained beside."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    d_model: int = Field(default=128, ge=8, description="width")
    layers: int = Field(default=4, ge=1, description="transformer blocks")
    heads: int = Field(default=4, ge=1, description="attention heads (d_model must be divisible by them)")
    ffn_mult: int = Field(default=4, ge=1, description="hidden width of the feed-forward layer, × d_model")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    context: int = Field(default=1025, ge=2, description="positions the model can read: the start token and up to "
                         "context − 1 bytes (the trainer sets it to the recipe's max_doc_bytes + 1)")

    @model_validator(mode="after")
    def _heads(self) -> ARConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


@dataclass
class KVCache:
    """Keys and values of every layer for the positions seen so far.

    Attributes:
        k: per layer (b, h, T, dh), T the capacity.
        v: per layer (b, h, T, dh).
        length: positions filled.
    """

    k: list[Tensor]
    v: list[Tensor]
    length: int = 0

    def expand(self, b: int) -> KVCache:
        """The same cache for ``b`` rows (a one-row cache repeated, e.g. a prefix for many candidates)."""
        return KVCache([t.expand(b, -1, -1, -1).contiguous() for t in self.k],
                       [t.expand(b, -1, -1, -1).contiguous() for t in self.v], self.length)


class _Attention(nn.Module):
    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h dh) -> three b h t dh", three=3, h=self.heads)
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        else:
            start, t = cache.length, x.shape[1]
            cache.k[layer][:, :, start:start + t] = k
            cache.v[layer][:, :, start:start + t] = v
            keys, values = cache.k[layer][:, :, :start + t], cache.v[layer][:, :, :start + t]
            # query i (at position start + i) reads keys 0 .. start + i
            pos = torch.arange(start + t, device=x.device)
            allowed = pos[None, :] <= pos[start:, None]  # (t, start + t)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, dropout_p=p)
        return self.out(rearrange(y, "b h t dh -> b t (h dh)"))


class _Block(nn.Module):
    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = _Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.ffn_mult * cfg.d_model), nn.GELU(),
                                 nn.Linear(cfg.ffn_mult * cfg.d_model, cfg.d_model), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.ffn(self.ln2(x))


class ByteTransformer(nn.Module):
    """The causal byte transformer.

    Args:
        cfg: its size.
    """

    def __init__(self, cfg: ARConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(VOCAB, cfg.d_model)
        self.pos = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, VOCAB)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def new_cache(self, b: int, capacity: int | None = None, device: torch.device | str | None = None) -> KVCache:
        """An empty cache for ``b`` rows of up to ``capacity`` positions (default: ``context``)."""
        cap = self.cfg.context if capacity is None else min(capacity, self.cfg.context)
        dev = device if device is not None else self.head.weight.device
        dh = self.cfg.d_model // self.cfg.heads
        shape = (b, self.cfg.heads, cap, dh)
        dtype = self.head.weight.dtype
        return KVCache([torch.zeros(shape, device=dev, dtype=dtype) for _ in self.blocks],
                       [torch.zeros(shape, device=dev, dtype=dtype) for _ in self.blocks])

    def forward(self, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            tokens: (b, t) input ids (bytes 0..255 and :data:`BOS`).
            cache: keys and values of the positions before these (filled in and advanced by t);
                None: the rows start at position 0 and nothing is kept.

        Returns:
            (b, t, 257) logits: byte values and :data:`END`.

        Raises:
            ValueError: the positions run past ``context``.
        """
        start = cache.length if cache is not None else 0
        t = tokens.shape[1]
        limit = min(self.cfg.context, cache.k[0].shape[2]) if cache is not None else self.cfg.context
        if start + t > limit:
            raise ValueError(f"the byte transformer reads at most {limit} positions (asked for {start + t})")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.embed(tokens) + self.pos(pos)[None]
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        if cache is not None:
            cache.length = start + t
        return self.head(self.norm(x))


def shift_inputs(tokens: Tensor, valid: Tensor, ends: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and targets of byte rows: ``[BOS, bytes]`` and ``[bytes, END or ignored]``.

    Args:
        tokens: (b, n) byte values.
        valid: (b, n) bool.
        ends: (b,) bool, whether each row ends its document (its END is scored); None: no row does.

    Returns:
        inputs (b, n + 1) and targets (b, n + 1), −100 where nothing is scored.
    """
    b, n = tokens.shape
    bos = torch.full((b, 1), BOS, dtype=torch.long, device=tokens.device)
    inputs = torch.cat([bos, tokens.long().masked_fill(~valid, 0)], dim=1)
    targets = torch.full((b, n + 1), -100, dtype=torch.long, device=tokens.device)
    targets[:, :n] = tokens.long().masked_fill(~valid, -100)
    if ends is not None:
        lengths = valid.sum(1)
        rows = torch.nonzero(ends.to(tokens.device)).squeeze(1)
        targets[rows, lengths[rows]] = END
    return inputs, targets
