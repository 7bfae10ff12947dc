"""Denoisers: noisy latent -> segment vectors with existence (§6)."""

from zonkey.components.denoiser import ddmm  # noqa: F401
