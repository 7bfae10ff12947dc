"""Probabilistic attention (§3 of the paper) and its backend dispatch.

Every position carries a log existence probability ``log p`` (0 = certain, −inf = hard padding).
The raw score of query q and key k is shifted by ``log p_k − log p_q`` when k > q and left alone
otherwise: a key that probably does not exist (given that the query does) counts for little. With
all-zero log existence this is plain softmax attention; with a sharp 1 → 0 drop it equals a hard
key mask.

Hard padding (−inf) is handled explicitly rather than through ``−inf − (−inf)``:
 * a padded key gets −inf for every real query (it never contributes),
 * a padded query attends with no bias (so its softmax stays finite) and its output is set to 0.

Backends (one dispatch function, chosen by the recipe and passed down; nothing changes semantics
behind the caller's back):

``reference``  explicit einsum, the ground truth.
``sdpa``       dense additive bias through ``torch.nn.functional.scaled_dot_product_attention``.
``flex``       FlexAttention ``score_mod`` (compiled into a fused kernel on CUDA; eager and unfused
               on CPU, where it is correct but not fast).
``hard``       existence thresholded into a hard key mask: the ablation without soft existence.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Backend = Literal["reference", "sdpa", "flex", "hard"]
BACKENDS: tuple[str, ...] = ("reference", "sdpa", "flex", "hard")


class AttentionBackendError(RuntimeError):
    """A backend cannot run here (missing feature, unsupported dtype or device)."""


def _split_existence(log_existence: Tensor) -> tuple[Tensor, Tensor]:
    """(finite log existence with padding set to 0, bool padding mask), both (b, n)."""
    pad = torch.isneginf(log_existence)
    safe = log_existence.masked_fill(pad, 0.0)
    return safe, pad


def existence_bias(log_existence: Tensor, *, causal: bool = False, dtype: torch.dtype | None = None) -> Tensor:
    """The additive score bias of probabilistic attention.

    Args:
        log_existence: (b, n) log existence (−inf for hard padding).
        causal: also mask keys after the query.
        dtype: dtype of the result (default: that of ``log_existence``).

    Returns:
        (b, 1, n, n) bias[q, k]: ``log p_k − log p_q`` for k > q, 0 for k <= q, −inf for padded keys
        of real queries and, when causal, for every k > q; otherwise 0 on padded query rows.
    """
    safe, pad = _split_existence(log_existence)
    n = log_existence.shape[-1]
    idx = torch.arange(n, device=log_existence.device)
    future = idx[None, :] > idx[:, None]  # (q, k)
    diff = safe[:, None, :] - safe[:, :, None]  # (b, q, k) = log p_k − log p_q
    bias = torch.where(future[None], diff, torch.zeros_like(diff))
    bias = bias.masked_fill(pad[:, :, None], 0.0)  # padded query rows: no bias
    key_masked = pad[:, None, :] & ~pad[:, :, None]  # real query, padded key
    if causal:
        key_masked = key_masked | future[None]
    bias = bias.masked_fill(key_masked, float("-inf"))
    bias = bias[:, None]  # (b, 1, q, k)
    return bias.to(dtype) if dtype is not None else bias


def check_inputs(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor) -> None:
    """Validate the shapes of a probabilistic self-attention call.

    Every backend function calls this, so a registered backend module used directly fails as
    clearly as :func:`probabilistic_attention`.

    Raises:
        ValueError: q, k, v are not 4-D, q and k differ in shape (the bias pairs query and key
            positions of one sequence, so both see the same n and dh), v disagrees with k on
            (b, h, n), q, k, v differ in dtype, or log_existence is not (b, n).
    """
    shapes = f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"q, k, v must be 4-D (b, h, n, dh); got {shapes}")
    if k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (b, h, n, dh); got {shapes}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must agree with k on (b, h, n); got {shapes}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if log_existence.shape != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"log_existence must be (b, n) = {(q.shape[0], q.shape[2])} for {shapes}; got {tuple(log_existence.shape)}"
        )


def _zero_padded_queries(out: Tensor, log_existence: Tensor) -> Tensor:
    pad = torch.isneginf(log_existence)[:, None, :, None]  # (b, 1, n, 1)
    return out.masked_fill(pad, 0.0)


def reference_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Explicit einsum implementation: the ground truth for every other backend."""
    check_inputs(q, k, v, log_existence)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale  # (b, h, n, n)
    scores = scores + existence_bias(log_existence, causal=causal, dtype=scores.dtype)
    attn = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhqk,bhkd->bhqd", attn, v)  # (b, h, n, dh)
    return _zero_padded_queries(out, log_existence)


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Dense additive bias through ``scaled_dot_product_attention`` (uses fused kernels where the
    platform has them for a float mask)."""
    check_inputs(q, k, v, log_existence)
    bias = existence_bias(log_existence, causal=causal, dtype=q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return _zero_padded_queries(out, log_existence)


def hard_attention(
    q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False, threshold: float = 0.5
) -> Tensor:
    """Ablation: positions whose existence is below ``threshold`` become hard padding (masked as
    keys, zero rows as queries); no soft bias, no gradient to the existence."""
    check_inputs(q, k, v, log_existence)
    alive = log_existence.detach() >= math.log(threshold)  # (b, n)
    hard = torch.zeros_like(log_existence).masked_fill(~alive, float("-inf"))
    return reference_attention(q, k, v, hard.detach(), causal=causal)


_compiled_flex: Callable | None = None


def _flex_fn(compile: bool) -> Callable:
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
        compile: compile into a fused kernel (default: only on CUDA). On CPU the eager, unfused
            implementation runs: correct but no faster than ``sdpa``, and forward-only for q, k, v
            (FlexAttention has no CPU backward and refuses q, k, v that require grad, which
            surfaces as :class:`AttentionBackendError`); with q, k, v frozen it still gives the
            gradient to ``log_existence``.

    Raises:
        AttentionBackendError: FlexAttention is unavailable or rejects the inputs; the message names
            the ``sdpa`` and ``reference`` backends as alternatives.
    """
    check_inputs(q, k, v, log_existence)
    if compile is None:
        compile = q.is_cuda
    fn = _flex_fn(compile)
    safe, pad = _split_existence(log_existence)
    safe = safe.to(q.dtype)

    def score_mod(score, b, h, qi, ki):  # noqa: ANN001 - FlexAttention's signature
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
    return _zero_padded_queries(out, log_existence)


def probabilistic_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_existence: Tensor,
    *,
    causal: bool = False,
    backend: Backend | str = "reference",
) -> Tensor:
    """Attention with existence probabilities (§3).

    Args:
        q, k, v: (b, h, n, dh).
        log_existence: (b, n) log existence of every position (0 = certain, −inf = hard padding).
        causal: mask keys after the query as well.
        backend: one of ``reference``, ``sdpa``, ``flex``, ``hard``.

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.

    Raises:
        ValueError: shapes disagree or the backend is unknown.
        AttentionBackendError: the backend cannot run on these inputs.
    """
    check_inputs(q, k, v, log_existence)
    if backend == "reference":
        return reference_attention(q, k, v, log_existence, causal=causal)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, log_existence, causal=causal)
    if backend == "flex":
        return flex_attention_backend(q, k, v, log_existence, causal=causal)
    if backend == "hard":
        return hard_attention(q, k, v, log_existence, causal=causal)
    raise ValueError(f"unknown attention backend {backend!r}; known: {', '.join(BACKENDS)}")
