"""``reference``: probabilistic attention as an explicit einsum (§3).

The ground truth every other backend is tested against; the right choice for float64 checks and
tiny sequences.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.contracts.registry import register
from zonkey.core.nn.attention import check_inputs, existence_bias, zero_padded_queries


def reference_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """Explicit einsum implementation: the ground truth for every other backend.

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
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale  # (b, h, n, n)
    scores = scores + existence_bias(log_existence, causal=causal, dtype=scores.dtype)
    attn = torch.softmax(scores, dim=-1)
    out = torch.einsum("bhqk,bhkd->bhqd", attn, v)  # (b, h, n, dh)
    return zero_padded_queries(out, log_existence)


@register("attention", "reference")
class ReferenceAttentionConfig(AttentionConfig):
    """Explicit einsum with the dense existence bias (the ground truth)."""

    name: Literal["reference"] = "reference"

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(reference_attention)
