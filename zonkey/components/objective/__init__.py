"""Diffusion objectives (§6, §9.1).

How latents are noised, what the denoiser is trained on, and the matching sampler step.
"""

from zonkey.components.objective import ddmm, flow, plain  # noqa: F401
