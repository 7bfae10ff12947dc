"""``flex``: probabilistic attention as a FlexAttention ``score_mod`` (§3): the fused path. On CUDA
it is compiled into one kernel that never materialises the (n, n) bias. On CPU it runs eagerly and
forward-only: PyTorch's FlexAttention has no CPU backward, so training on CPU with ``flex`` raises
an error that names ``sdpa`` and ``reference`` (use those for CPU training)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.core.attention import flex_attention_backend
from zonkey.core.registry import register


@register("attention", "flex")
class FlexAttentionConfig(AttentionConfig):
    """FlexAttention score_mod (fused kernel on CUDA, eager on CPU)."""

    name: Literal["flex"] = "flex"
    compile: Optional[bool] = Field(None, description="compile into a fused kernel; default: on CUDA only")

    def build(self, *args: Any, **kwargs: Any) -> AttentionBackend:
        return AttentionBackend("flex", flex_attention_backend, compile=self.compile)
