"""Sequence priors: diffusion models of the order of a level's latents (generation, infilling)."""

from zonkey.components.prior import context, sequence  # noqa: F401
