"""``ddmm``: the Denoising Diffusion Mixed Model objective of §6, in the compressed space.

p1 = clean latent; p2 = p1 under heavy noise; denoise and re-compress p2, add light noise -> p3;
denoise and re-compress p3 -> p4. The loss is the cross-entropy of 2·atanh(cos) logits of p4
against the nearest point of each segment [p1, p2] (detached), with the other segments of the batch
as negatives. Moving toward p1 costs nothing, so the model learns to take a large step when the
clean latent is identifiable and a small one (staying near p2) when it is not. Also returns the
"clean" (light noise) and "dirty" (heavy noise) denoiser outputs for the reconstruction losses of
§8.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from zonkey.components.objective.base import (
    ObjectiveBase,
    bind_cut,
    contrastive_atanh,
    false_negatives,
    recompress,
    rows_of,
    subsample_rows,
    uniform,
)
from zonkey.core.contracts.outputs import ObjectiveOutput
from zonkey.core.contracts.protocols import CompressFn, DenoiseFn
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext


def nearest_on_segment(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Nearest point to each row of p on the segment [a, b] (rows), (s, D)."""
    ab = b - a
    lam = ((p - a) * ab).sum(-1, keepdim=True) / (ab * ab).sum(-1, keepdim=True).clamp_min(1e-8)
    return a + lam.clamp(0, 1) * ab


class DdmmObjective(ObjectiveBase):
    """The mixed step of §6: heavy noise, denoise and re-compress, light noise, denoise again."""

    def __init__(self, cfg: DdmmObjectiveConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *,
                generator: torch.Generator | None = None, clean_only: bool = False,
                cut: Tensor | None = None) -> ObjectiveOutput:
        """Training pass (:meth:`ObjectiveBase.forward`): z0 (s, k·d) -> the clean pass and the DDMM loss."""
        c = self.cfg
        s = z0.shape[0]
        all_rows = bind_cut(denoise, compress, cut)
        # σ = clean_max · u^power: power 1 is uniform; a larger power puts more of the clean pass
        # near σ = 0 (what t = 0 reconstruction measures) while still covering the whole range
        sig_c = c.clean_max * uniform(s, 0.0, 1.0, z0, generator).pow(c.clean_power)
        clean = all_rows[0](self.noise(z0, sig_c, generator), sig_c)
        if clean_only:
            return ObjectiveOutput(loss=z0.new_zeros(()), clean=clean)
        rows = subsample_rows(s, c.fraction, z0, generator)
        denoise, compress = bind_cut(denoise, compress, rows_of(cut, rows))
        p1 = z0 if rows is None else z0[rows]
        s = p1.shape[0]
        sig_h = uniform(s, c.heavy_min, c.heavy_max, z0, generator)
        p2 = self.noise(p1, sig_h, generator)
        dirty = denoise(p2, sig_h)
        z_mid = recompress(compress, dirty)
        sig_l = uniform(s, 0.0, c.light_max, z0, generator)
        p3 = self.noise(z_mid, sig_l, generator)
        p4 = recompress(compress, denoise(p3, sig_l))
        target = nearest_on_segment(p4.detach(), p1.detach(), p2.detach())
        # segments whose clean latents coincide (same bytes) are not negatives of each other
        loss = contrastive_atanh(p4, target, same=false_negatives(p1))
        return ObjectiveOutput(loss=loss, clean=clean, dirty=dirty, dirty_rows=rows, extra_latents=[z_mid, p4])


@register("objective", "ddmm")
class DdmmObjectiveConfig(ComponentConfig):
    """DDMM mixed-step objective (§6), computed in the compressed space."""

    name: Literal["ddmm"] = "ddmm"
    clean_max: float = Field(0.35, ge=0, lt=1, description="clean pass: σ = clean_max · u^clean_power, u ~ U(0, 1)")
    clean_power: float = Field(1.0, ge=1, le=100, description="1: σ uniform on [0, clean_max]; larger: more of the clean pass "
                               "near σ = 0 (mean clean_max / (1 + power))")
    heavy_min: float = Field(0.3, ge=0, lt=1, description="p2: σ ~ U(heavy_min, heavy_max)")
    heavy_max: float = Field(1.0, gt=0, le=1)
    light_max: float = Field(0.2, ge=0, lt=1, description="p3: σ ~ U(0, light_max)")
    fraction: float = Field(1.0, gt=0, le=1, description="run the mixed step (3 extra denoiser passes) on this "
                            "random fraction of the segments: a compute saver for CPU recipes")

    @model_validator(mode="after")
    def _range(self) -> DdmmObjectiveConfig:
        if self.heavy_min >= self.heavy_max:
            raise ValueError(f"heavy_min ({self.heavy_min}) must be < heavy_max ({self.heavy_max})")
        return self

    def build(self, ctx: LevelContext) -> DdmmObjective:
        """The module of this config for the level that ``ctx`` describes."""
        return DdmmObjective(self)
