"""``hard``: the ablation without soft existence. Existence below a threshold becomes a hard key
mask; no bias and no gradient reach the existence probabilities through attention."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import hard_attention
from zonkey.core.registry import register


@register("attention", "hard")
class HardAttentionConfig(AttentionConfig):
    """Existence thresholded into a hard mask (ablation)."""

    name: Literal["hard"] = "hard"
    threshold: float = Field(0.5, gt=0, lt=1, description="keys with existence below this are masked")

    def build(self, *args: Any, **kwargs: Any) -> AttentionBackend:
        return AttentionBackend("hard", hard_attention, threshold=self.threshold)
