"""``sdpa``: probabilistic attention as a dense additive bias passed to PyTorch's
``scaled_dot_product_attention`` (§3). The default: fast on CPU and GPU at segment lengths."""

from __future__ import annotations

from typing import Any, Literal

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import sdpa_attention
from zonkey.core.registry import register


@register("attention", "sdpa")
class SdpaAttentionConfig(AttentionConfig):
    """Dense additive existence bias through scaled_dot_product_attention."""

    name: Literal["sdpa"] = "sdpa"

    def build(self, *args: Any, **kwargs: Any) -> AttentionBackend:
        return AttentionBackend("sdpa", sdpa_attention)
