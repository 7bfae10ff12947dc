"""Shared shape of an attention backend: a callable module with the probabilistic-attention
signature, built from a recipe node such as ``attention: {name: sdpa}``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from zonkey.core.registry import ComponentConfig


class AttentionBackend(nn.Module):
    """Parameter-free module wrapping one backend of :func:`probabilistic_attention`."""

    def __init__(self, name: str, fn: Any, **options: Any) -> None:
        super().__init__()
        self.name = name
        self._fn = fn
        self._options = options

    def forward(self, q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
        """q, k, v (b, h, n, dh); log_existence (b, n) -> (b, h, n, dh)."""
        return self._fn(q, k, v, log_existence, causal=causal, **self._options)

    def extra_repr(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self._options.items())
        return f"backend={self.name}" + (f", {opts}" if opts else "")


class AttentionConfig(ComponentConfig):
    """Base config of attention backends (each entry's ``build()`` returns an AttentionBackend)."""
