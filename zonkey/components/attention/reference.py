"""``reference``: probabilistic attention as an explicit einsum (§3). The ground truth every other
backend is tested against; the right choice for float64 checks and tiny sequences."""

from __future__ import annotations

from typing import Any, Literal

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import reference_attention
from zonkey.core.registry import register


@register("attention", "reference")
class ReferenceAttentionConfig(AttentionConfig):
    """Explicit einsum with the dense existence bias (the ground truth)."""

    name: Literal["reference"] = "reference"

    def build(self, *args: Any, **kwargs: Any) -> AttentionBackend:
        return AttentionBackend("reference", reference_attention)
