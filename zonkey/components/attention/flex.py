"""``flex``: probabilistic attention as a FlexAttention ``score_mod`` and ``block_mask`` (§3), the fused path.

The existence bias is a ``score_mod``: it adds ``le_k − le_q`` for k > q from the (b, n)
log existence, read in its own dtype (float32 from the existence math, never cast to the compute
dtype: bf16 would round the small differences that matter), and FlexAttention differentiates it,
so ``log_existence`` gets its gradient. Everything that is a hard mask goes to a ``block_mask``
instead, so the kernel skips every tile that holds no pair to attend: padded keys of real
queries, future keys when causal, and keys beyond ``window`` positions (the hook a sliding-window
splitter uses). A padded query attends only to itself; its output is set to 0 as in every backend.

On CUDA it is compiled once for dynamic shapes (the number of segments, and with it the batch
axis, changes every batch), into kernels that never materialise the (n, n) bias. On CPU it runs
eagerly and forward-only: PyTorch's FlexAttention has no CPU backward, so training on CPU with
``flex`` raises an error that names ``sdpa`` and ``reference`` (use those for CPU training, or
``auto``, which picks ``flex`` on CUDA and ``sdpa`` elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.contracts.registry import register
from zonkey.core.nn.attention import (
    AttentionBackendError,
    BackendConstraints,
    check_inputs,
    split_existence,
    zero_padded_queries,
)

_compiled_flex: Callable[..., Tensor] | None = None


def _flex_api() -> tuple[Callable[..., Tensor], Callable[..., object]]:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError as exc:  # pragma: no cover - torch < 2.5
        raise AttentionBackendError(
            f"the 'flex' backend needs torch.nn.attention.flex_attention (torch >= 2.5): {exc}; "
            "use backend 'sdpa' or 'reference'"
        ) from None
    return flex_attention, create_block_mask


def _flex_fn(compile: bool) -> Callable[..., Tensor]:
    flex_attention, _ = _flex_api()
    if not compile:
        return flex_attention
    global _compiled_flex
    if _compiled_flex is None:
        # dynamic: the batch axis (segments) and n change from batch to batch; a static compile
        # recompiles for every new shape until it hits the recompile limit and falls back to eager
        _compiled_flex = torch.compile(flex_attention, dynamic=True)
    return _compiled_flex


def existence_block_mask(pad: Tensor, *, causal: bool = False, window: int | None = None, compile: bool = False) -> object:
    """The FlexAttention ``BlockMask`` of probabilistic attention's hard masks.

    Args:
        pad: (b, n) bool, hard padding.
        causal: also mask keys after the query.
        window: if given, also mask keys more than ``window`` positions from the query.
        compile: build it with a compiled ``mask_mod`` (on CUDA: no dense (b, n, n) mask is made).

    Returns:
        A ``BlockMask`` for (b, any h, n, n): a real query attends to real keys (within the window,
        not after it when causal); a padded query only to itself.
    """
    _, create_block_mask = _flex_api()
    b, n = pad.shape

    def mask_mod(bi: Tensor, hi: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        q_pad = pad[bi, qi]
        keep = ~q_pad & ~pad[bi, ki]
        if causal:
            keep = keep & (ki <= qi)
        if window is not None:
            keep = keep & ((qi - ki).abs() <= window)
        return keep | (q_pad & (ki == qi))

    return create_block_mask(mask_mod, B=b, H=None, Q_LEN=n, KV_LEN=n, device=pad.device, _compile=compile)


def flex_attention_backend(
    q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False, window: int | None = None,
    compile: bool | None = None,
) -> Tensor:
    """FlexAttention with the existence bias as a ``score_mod`` and the hard masks as a ``block_mask``.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence (−inf: hard padding), in its own dtype (float32 from
            the existence math), never cast to that of q, k, v.
        causal: mask keys after the query as well.
        window: if given, attend only to keys within ``window`` positions of each query (the
            sliding-window form; masked tiles are skipped).
        compile: compile into fused kernels (default: only on CUDA). On CPU the eager, unfused
            implementation runs: correct but no faster than ``sdpa``, and forward-only for q, k, v
            (FlexAttention has no CPU backward and refuses q, k, v that require grad, which
            surfaces as :class:`AttentionBackendError`); with q, k, v frozen it still gives the
            gradient to ``log_existence``.

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.

    Raises:
        AttentionBackendError: FlexAttention is unavailable or rejects the inputs; the message names
            the ``sdpa`` and ``reference`` backends as alternatives.
        ValueError: a window below 0.
    """
    check_inputs(q, k, v, log_existence)
    if window is not None and window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if compile is None:
        compile = q.is_cuda
    fn = _flex_fn(compile)
    safe, pad = split_existence(log_existence)  # safe: log_existence's own dtype, padding 0

    def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        # padded keys and (when causal) future keys never get here: the block mask removes them
        return score + torch.where(ki > qi, safe[b, ki] - safe[b, qi], torch.zeros_like(safe[b, qi]))

    try:
        block_mask = existence_block_mask(pad, causal=causal, window=window, compile=compile)
        out = fn(q, k, v, score_mod=score_mod, block_mask=block_mask)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        raise AttentionBackendError(
            f"FlexAttention failed on {q.device.type} with dtype {q.dtype}: {type(exc).__name__}: {reason}; "
            "use backend 'sdpa' (dense bias) or 'reference'"
        ) from exc
    assert isinstance(out, Tensor)
    return zero_padded_queries(out, log_existence)


@register("attention", "flex")
class FlexAttentionConfig(AttentionConfig):
    """FlexAttention score_mod (fused kernel on CUDA, eager on CPU)."""

    # FlexAttention has no CPU backward for q, k, v: refused up front with the alternatives named
    constraints: ClassVar[BackendConstraints] = BackendConstraints(supports_cpu_backward=False,
                                                                   alternatives=("auto", "sdpa", "reference"))

    name: Literal["flex"] = "flex"
    compile: bool | None = Field(None, description="compile into a fused kernel; default: on CUDA only")

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        # its sliding-window form is the same kernel with the window in its block mask
        return self.module(flex_attention_backend, flex_attention_backend, compile=self.compile)
