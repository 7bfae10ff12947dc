"""``plain``: single-step x0 denoising, the simplest objective (an ablation).

The latent is noised once and the denoiser's output, re-compressed, must pick its own clean latent among the batch's
(2·atanh(cos) logits). A second, heavier draw gives the "dirty" output.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.objective.base import (
    ObjectiveBase,
    bind_cut,
    contrastive_atanh,
    false_negatives,
    recompress,
    uniform,
)
from zonkey.core.contracts.outputs import ObjectiveOutput
from zonkey.core.contracts.protocols import CompressFn, DenoiseFn
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext


class PlainObjective(ObjectiveBase):
    """One noise draw; the re-compressed prediction must pick its own clean latent among the batch's."""

    def __init__(self, cfg: PlainObjectiveConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *,
                generator: torch.Generator | None = None, clean_only: bool = False,
                cut: Tensor | None = None) -> ObjectiveOutput:
        """Training pass (:meth:`ObjectiveBase.forward`): z0 (s, k·d) -> a clean and a dirty pass."""
        s = z0.shape[0]
        denoise, compress = bind_cut(denoise, compress, cut)
        sig = uniform(s, 0.0, self.cfg.clean_max, z0, generator)
        clean = denoise(self.noise(z0, sig, generator), sig)
        if clean_only:
            return ObjectiveOutput(loss=z0.new_zeros(()), clean=clean)
        sig_d = uniform(s, self.cfg.clean_max, 1.0, z0, generator)
        dirty = denoise(self.noise(z0, sig_d, generator), sig_d)
        z_hat = recompress(compress, dirty)
        return ObjectiveOutput(loss=contrastive_atanh(z_hat, z0.detach(), same=false_negatives(z0)), clean=clean, dirty=dirty, extra_latents=[z_hat])


@register("objective", "plain")
class PlainObjectiveConfig(ComponentConfig):
    """Single-step x0 prediction (ablation)."""

    name: Literal["plain"] = "plain"
    clean_max: float = Field(0.35, ge=0, lt=1)

    def build(self, ctx: LevelContext) -> PlainObjective:
        """The module of this config for the level that ``ctx`` describes."""
        return PlainObjective(self)
