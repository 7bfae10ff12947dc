"""``sdpa``: probabilistic attention as a dense additive bias (§3).

The bias goes to PyTorch's ``scaled_dot_product_attention``. The default backend: fast on CPU and
GPU at segment lengths.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import check_inputs, existence_bias, zero_padded_queries
from zonkey.core.registry import register

#: the SDPA kernels that return the gradient of an additive mask (memory-efficient; the math
#: fallback for shapes it refuses)
BIAS_GRAD_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Dense additive bias through ``scaled_dot_product_attention``.

    It uses fused kernels where the platform has them for a float mask. On CUDA, when the bias
    requires a gradient, only the memory-efficient kernel (or the math fallback) may run: the cuDNN
    kernel PyTorch prefers on Hopper GPUs returns no gradient for the mask, which would silently cut
    the gradient to the existence.

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
    bias = existence_bias(log_existence, causal=causal, dtype=q.dtype)
    if q.is_cuda and bias.requires_grad:
        # the bias needs its gradient (it carries d log_existence): keep to kernels that return one.
        # cuDNN attention, which PyTorch prefers on H100/H200, gives no gradient for attn_mask.
        with sdpa_kernel(BIAS_GRAD_KERNELS):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return zero_padded_queries(out, log_existence)


@register("attention", "sdpa")
class SdpaAttentionConfig(AttentionConfig):
    """Dense additive existence bias through scaled_dot_product_attention."""

    name: Literal["sdpa"] = "sdpa"

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(sdpa_attention)
