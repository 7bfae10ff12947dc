"""``auto``: the fused ``flex`` path on CUDA, ``sdpa`` everywhere else, chosen per call.

A recipe written for a GPU then still trains on a CPU (where FlexAttention has no backward) without
an edit; the two compute the same function, so a model trained with one runs with the other.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.components.attention.flex import flex_attention_backend
from zonkey.components.attention.sdpa import sdpa_attention
from zonkey.core.contracts.registry import register
from zonkey.core.nn.attention import check_inputs
from zonkey.core.nn.local_attention import local_attention


def auto_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
    """``flex`` (compiled, block-masked) when q is on CUDA, else ``sdpa`` (dense bias).

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
    if q.is_cuda:
        return flex_attention_backend(q, k, v, log_existence, causal=causal)
    return sdpa_attention(q, k, v, log_existence, causal=causal)


def auto_local_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, window: int,
                         causal: bool = False) -> Tensor:
    """The sliding-window form of ``auto``.

    ``flex`` with the window in its block mask on CUDA, the blocked
    :func:`~zonkey.core.nn.local_attention.local_attention` elsewhere.
    """
    check_inputs(q, k, v, log_existence)
    if q.is_cuda:
        return flex_attention_backend(q, k, v, log_existence, causal=causal, window=window)
    return local_attention(q, k, v, log_existence, window=window, causal=causal)


@register("attention", "auto")
class AutoAttentionConfig(AttentionConfig):
    """flex on CUDA, sdpa elsewhere (per call, by the device of q)."""

    name: Literal["auto"] = "auto"

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(auto_attention, auto_local_attention)
