"""``flow``: spherical flow matching with data prediction and self-conditioning.

The objective the paper's prototype ended up using, registered as an alternative to DDMM.

Path: z_t = cos(θ)·z0 + sin(θ)·ε with θ = t·π/2 and ε a Gaussian vector on the same sphere (in
high dimension ε ⟂ z0, so this is the slerp between them). t is skewed toward high noise
(t = u^skew). The denoiser predicts the clean segment; re-compressed, it must pick its own clean
latent among the batch's (2·atanh(cos) logits). With probability ``self_cond`` the denoiser first
makes a detached estimate and then sees it as a conditioning input (self-conditioning). Sampling
moves deterministically along the implied noise direction.
"""

from __future__ import annotations

import math
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
from zonkey.core.contracts.outputs import DenoiseOutput, ObjectiveOutput
from zonkey.core.contracts.protocols import CompressFn, DenoiseFn
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere


class FlowObjective(ObjectiveBase):
    """Slerp noise path, clean-segment prediction picked among the batch, optional self-conditioning."""

    def __init__(self, cfg: FlowObjectiveConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def noise(self, z0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The slerp path: cos(θ)·z0 + sin(θ)·ε with θ = σ·π/2; z0 (s, k·d), sigma (s,) -> (s, k·d)."""
        eps = to_sphere(torch.randn(z0.shape, device=z0.device, generator=generator))
        th = (sigma.to(z0.dtype) * math.pi / 2)[:, None]
        return torch.cos(th) * z0 + torch.sin(th) * eps

    def forward(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *,
                generator: torch.Generator | None = None, clean_only: bool = False,
                cut: Tensor | None = None) -> ObjectiveOutput:
        """Training pass (:meth:`ObjectiveBase.forward`): z0 (s, k·d) -> the clean pass and the flow loss."""
        c = self.cfg
        s = z0.shape[0]
        denoise, compress = bind_cut(denoise, compress, cut)
        sig_c = uniform(s, 0.0, c.clean_max, z0, generator)
        clean = denoise(self.noise(z0, sig_c, generator), sig_c)
        if clean_only:
            return ObjectiveOutput(loss=z0.new_zeros(()), clean=clean)
        t = torch.rand(s, device=z0.device, generator=generator).pow(c.skew)
        zt = self.noise(z0, t, generator)
        use_sc = torch.rand((), generator=generator).item() < c.self_cond
        cond = None
        if use_sc:
            with torch.no_grad():
                cond = recompress(compress, denoise(zt, t))
        out = denoise(zt, t) if cond is None else denoise(zt, t, cond)
        z_hat = recompress(compress, out)
        target = z0.detach()
        loss = contrastive_atanh(z_hat, target, same=false_negatives(target))
        return ObjectiveOutput(loss=loss, clean=clean, dirty=out, extra_latents=[z_hat])

    def step(self, z: Tensor, sigma: float, sigma_next: float, denoise: DenoiseFn, compress: CompressFn,
             cond: Tensor | None = None) -> tuple[Tensor, DenoiseOutput]:
        """One deterministic step along the slerp path (:meth:`ObjectiveBase.step`).

        ``cond`` (s, k·d), when given, self-conditions the denoiser.
        """
        s = z.shape[0]
        sig = z.new_full((s,), sigma)
        out = denoise(z, sig) if cond is None else denoise(z, sig, cond)
        z0_hat = recompress(compress, out)
        if sigma_next <= 0:
            return z0_hat, out
        th, thn = sigma * math.pi / 2, sigma_next * math.pi / 2
        eps = (z - math.cos(th) * z0_hat) / max(math.sin(th), 1e-6)
        return math.cos(thn) * z0_hat + math.sin(thn) * eps, out

    def prior(self, s: int, dim: int, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> Tensor:
        """Pure noise at σ = 1 on the sphere: (s, dim)."""
        return to_sphere(torch.randn(s, dim, device=device, generator=generator))


@register("objective", "flow")
class FlowObjectiveConfig(ComponentConfig):
    """Spherical flow matching with data prediction and self-conditioning (the prototype's final objective)."""

    name: Literal["flow"] = "flow"
    clean_max: float = Field(0.35, ge=0, lt=1, description="clean pass: t ~ U(0, clean_max)")
    skew: float = Field(0.5, gt=0, le=1, description="t = u^skew (< 1 skews toward high noise)")
    self_cond: float = Field(0.5, ge=0, le=1, description="probability of a self-conditioned training pass")

    def build(self, ctx: LevelContext) -> FlowObjective:
        """The module of this config for the level that ``ctx`` describes."""
        return FlowObjective(self)
