"""``flex``: probabilistic attention as a FlexAttention ``score_mod`` (§3), the fused path.

On CUDA it is compiled into one kernel that never materialises the (n, n) bias. On CPU it runs
eagerly and forward-only: PyTorch's FlexAttention has no CPU backward, so training on CPU with
``flex`` raises an error that names ``sdpa`` and ``reference`` (use those for CPU training).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import (
    AttentionBackendError,
    BackendConstraints,
    check_inputs,
    split_existence,
    zero_padded_queries,
)
from zonkey.core.registry import register

_compiled_flex: Callable[..., Tensor] | None = None


def _flex_fn(compile: bool) -> Callable[..., Tensor]:
    try:
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as exc:  # pragma: no cover - torch < 2.5
        raise AttentionBackendError(
            f"the 'flex' backend needs torch.nn.attention.flex_attention (torch >= 2.5): {exc}; "
            "use backend 'sdpa' or 'reference'"
        ) from None
    if not compile:
        return flex_attention
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def flex_attention_backend(
    q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False, compile: bool | None = None
) -> Tensor:
    """FlexAttention with the existence bias as a ``score_mod``.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence (−inf: hard padding).
        causal: mask keys after the query as well.
        compile: compile into a fused kernel (default: only on CUDA). On CPU the eager, unfused
            implementation runs: correct but no faster than ``sdpa``, and forward-only for q, k, v
            (FlexAttention has no CPU backward and refuses q, k, v that require grad, which
            surfaces as :class:`AttentionBackendError`); with q, k, v frozen it still gives the
            gradient to ``log_existence``.

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.

    Raises:
        AttentionBackendError: FlexAttention is unavailable or rejects the inputs; the message names
            the ``sdpa`` and ``reference`` backends as alternatives.
    """
    check_inputs(q, k, v, log_existence)
    if compile is None:
        compile = q.is_cuda
    fn = _flex_fn(compile)
    safe, pad = split_existence(log_existence)
    safe = safe.to(q.dtype)

    def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        future = ki > qi
        bias = torch.where(future, safe[b, ki] - safe[b, qi], torch.zeros_like(score))
        qpad = pad[b, qi]
        key_masked = pad[b, ki] & ~qpad
        if causal:
            key_masked = key_masked | future
        bias = torch.where(qpad, torch.zeros_like(bias), bias)
        return torch.where(key_masked, torch.full_like(score, float("-inf")), score + bias)

    try:
        out = fn(q, k, v, score_mod=score_mod)
    except Exception as exc:
        raise AttentionBackendError(
            f"FlexAttention failed on {q.device.type} with dtype {q.dtype}: {type(exc).__name__}: {exc}; "
            "use backend 'sdpa' (dense bias) or 'reference'"
        ) from exc
    return zero_padded_queries(out, log_existence)


@register("attention", "flex")
class FlexAttentionConfig(AttentionConfig):
    """FlexAttention score_mod (fused kernel on CUDA, eager on CPU)."""

    # FlexAttention has no CPU backward for q, k, v: refused up front with the alternatives named
    constraints: ClassVar[BackendConstraints] = BackendConstraints(supports_cpu_backward=False)

    name: Literal["flex"] = "flex"
    compile: bool | None = Field(None, description="compile into a fused kernel; default: on CUDA only")

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(flex_attention_backend, compile=self.compile)
