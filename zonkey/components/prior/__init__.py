"""Sequence priors: diffusion models of the order of a level's latents (generation, infilling)."""

from zonkey.components.prior import sequence  # noqa: F401
