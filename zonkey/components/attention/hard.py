"""``hard``: the ablation without soft existence.

Existence below a threshold becomes a hard key mask; no bias and no gradient reach the existence
probabilities through attention.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.components.attention.reference import reference_attention
from zonkey.core.contracts.registry import register
from zonkey.core.nn.attention import check_inputs
from zonkey.core.nn.local_attention import local_attention


def _hard_existence(log_existence: Tensor, threshold: float) -> Tensor:
    """0 where existence reaches ``threshold``, −inf (hard padding) elsewhere; no gradient."""
    alive = log_existence.detach() >= math.log(threshold)  # (b, n)
    return torch.zeros_like(log_existence).masked_fill(~alive, float("-inf")).detach()


def hard_attention(
    q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False, threshold: float = 0.5
) -> Tensor:
    """Ablation: positions whose existence is below ``threshold`` become hard padding.

    They are masked as keys and give zero rows as queries; no soft bias, no gradient to the existence.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence (−inf: hard padding).
        causal: mask keys after the query as well.
        threshold: existence below which a position is padding.

    Returns:
        (b, h, n, dh).
    """
    check_inputs(q, k, v, log_existence)
    return reference_attention(q, k, v, _hard_existence(log_existence, threshold), causal=causal)


def hard_local_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, window: int, causal: bool = False,
                         threshold: float = 0.5) -> Tensor:
    """:func:`hard_attention` restricted to keys within ``window`` positions (O(n · window))."""
    check_inputs(q, k, v, log_existence)
    return local_attention(q, k, v, _hard_existence(log_existence, threshold), window=window, causal=causal)


@register("attention", "hard")
class HardAttentionConfig(AttentionConfig):
    """Existence thresholded into a hard mask (ablation)."""

    name: Literal["hard"] = "hard"
    threshold: float = Field(0.5, gt=0, lt=1, description="keys with existence below this are masked")

    def build(self) -> AttentionBackend:
        """The parameter-free backend module."""
        return self.module(hard_attention, hard_local_attention, threshold=self.threshold)
