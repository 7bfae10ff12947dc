"""Diffusion objectives: how latents are noised, what the denoiser is trained on, and the matching
sampler step (§6, §9.1)."""

from zonkey.components.objective import ddmm, flow, plain  # noqa: F401
