"""A small level context and batch that the component tests build and run components with."""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.contracts.registry import registry
from zonkey.core.contracts.shapes import LevelContext

D, M, K, H = 16, 8, 2, 2  # width, max segment, compression vectors, heads


def ctx(level: int = 0) -> LevelContext:
    """The build context of a level of width D with the ``sdpa`` attention backend."""
    attn = registry("attention").config("sdpa").build()
    return LevelContext(level=level, d_model=D, max_segment=M, n_compress=K, heads=H, ffn_mult=2, dropout=0.0, attention=attn)


def batch(b: int = 2, n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (b, n, D), valid (b, n) with document 1 ending at 13, byte tokens (b, n)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 256, (b, n), generator=g)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[1, 13:] = False
    x = torch.randn(b, n, D, generator=g)
    return x, valid, tokens


def assert_same_grads(want: tuple[Tensor | None, ...], got: tuple[Tensor | None, ...]) -> None:
    """Two ``torch.autograd.grad(..., allow_unused=True)`` results agree; an unused input counts as 0."""
    for a, b in zip(want, got, strict=True):
        if a is None and b is None:
            continue
        a = a if a is not None else torch.zeros_like(b)
        b = b if b is not None else torch.zeros_like(a)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
