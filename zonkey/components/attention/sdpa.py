"""``sdpa``: probabilistic attention as a dense additive bias (§3).

The bias goes to PyTorch's ``scaled_dot_product_attention``. The default backend: fast on CPU and
GPU at segment lengths.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import check_inputs, existence_bias, zero_padded_queries
from zonkey.core.registry import register


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Dense additive bias through ``scaled_dot_product_attention``.

    It uses fused kernels where the platform has them for a float mask.

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
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return zero_padded_queries(out, log_existence)


@register("attention", "sdpa")
class SdpaAttentionConfig(AttentionConfig):
    """Dense additive existence bias through scaled_dot_product_attention."""

    name: Literal["sdpa"] = "sdpa"

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(sdpa_attention)
