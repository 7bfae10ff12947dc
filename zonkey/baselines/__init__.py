"""Baselines trained and evaluated beside the diffusion model (the autoregressive byte transformer)."""
