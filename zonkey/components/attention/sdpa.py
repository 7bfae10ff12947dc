"""``sdpa``: probabilistic attention as a dense additive bias (§3).

The bias goes to PyTorch's ``scaled_dot_product_attention``. The default backend: fast on CPU and
GPU at segment lengths.

Two CPU details, both exact:

* The bias is built once per ``log_existence`` tensor and reused while the same tensor (same
  version, dtype, mode and grad mode) comes back: every block of an encoder reads the same
  existence, so a stack of L layers builds it once instead of L times.
* A bias that requires grad (the existence gradient of the compressor and the denoiser) is not
  taken by PyTorch's fused CPU kernel; its fallback (the math kernel with a safe softmax that checks
  every row for being fully masked) cost about a third of the attention time in a training step.
  On CPU such a call computes softmax(q·kᵀ/√dh + bias)·v directly: no row is ever fully masked
  here (a real query always sees itself; a padded query row has no bias), so the plain softmax is
  the same function.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.contracts.registry import register
from zonkey.core.nn.attention import check_inputs, existence_bias, zero_padded_queries

#: the SDPA kernels that return the gradient of an additive mask (memory-efficient; the math
#: fallback for shapes it refuses)
BIAS_GRAD_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Dense additive bias through ``scaled_dot_product_attention``.

    It uses fused kernels where the platform has them for a float mask. On CUDA, when the bias
    requires a gradient, only the memory-efficient kernel (or the math fallback) may run: the cuDNN
    kernel PyTorch prefers on Hopper GPUs returns no gradient for the mask, which would silently cut
    the gradient to the existence. On CPU such a bias goes through the explicit softmax below.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence (−inf: hard padding).
        causal: mask keys after the query as well.

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.
    """
    check_inputs(q, k, v, log_existence)
    bias = _bias(log_existence, causal, q.dtype)
    if bias.requires_grad and not q.is_cuda:
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1])) + bias  # (b, h, n, n)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
    elif bias.requires_grad:
        # the bias needs its gradient (it carries d log_existence): keep to kernels that return one.
        # cuDNN attention, which PyTorch prefers on H100/H200, gives no gradient for attn_mask.
        with sdpa_kernel(BIAS_GRAD_KERNELS):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return zero_padded_queries(out, log_existence)


_last = threading.local()  # per thread: the key and the bias of the last call


def _bias(log_existence: Tensor, causal: bool, dtype: torch.dtype) -> Tensor:
    """:func:`existence_bias` of ``log_existence``, reused while the same tensor comes back unchanged.

    The key holds a weak reference, so a freed tensor never matches a new one at the same address.
    """
    if log_existence.is_inference() or torch.compiler.is_compiling():
        # inference tensors keep no version counter; a compiled graph builds its bias itself
        return existence_bias(log_existence, causal=causal, dtype=dtype)
    key = (log_existence._version, causal, dtype, torch.is_grad_enabled(), log_existence.device)
    entry: tuple[weakref.ref[Tensor], tuple[object, ...], Tensor] | None = getattr(_last, "entry", None)
    if entry is not None and entry[0]() is log_existence and entry[1] == key:
        return entry[2]
    bias = existence_bias(log_existence, causal=causal, dtype=dtype)
    _last.entry = (weakref.ref(log_existence), key, bias)
    return bias


@register("attention", "sdpa")
class SdpaAttentionConfig(AttentionConfig):
    """Dense additive existence bias through scaled_dot_product_attention."""

    name: Literal["sdpa"] = "sdpa"

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(sdpa_attention)
