"""The small attention inputs the attention tests share: soft existence, a padded position, tiny
existences."""

from __future__ import annotations

import torch

from tests.strategies import qkv

NEG_INF = float("-inf")


def attention_case(b: int = 2, h: int = 2, n: int = 5, dh: int = 4, *, dtype: torch.dtype = torch.float64,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (b, h, n, dh) and log existence (b, n); document 0 ends in one padded position."""
    q, k, v = qkv((b, h, n, dh), seed, dtype=dtype)
    log_e = torch.tensor([[0.0, -0.1, -0.7, -2.0, NEG_INF], [0.0, -1.0, -0.5, -13.8, -30.0]], dtype=dtype)[:b, :n]
    return q, k, v, log_e


def cuda_attention_case(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """A wider case (h 4, dh 16) on the CUDA device."""
    q, k, v, log_e = attention_case(b=2, h=4, n=5, dh=16, dtype=dtype, seed=7)
    return tuple(t.cuda() for t in (q, k, v, log_e))
