"""Noise schedules and sampler steps of the sequence priors, in zonkey's noise convention.

Convention (all of zonkey): σ ∈ [0, 1] is the share of the variance that is noise,
``z_σ = sqrt(1 − σ)·z0 + sqrt(σ)·ε``, σ = 0 clean, σ = 1 pure noise.

Time ``u ∈ [0, 1]`` is mapped to σ by a cosine schedule whose log signal-to-noise ratio is shifted
down by ``2·log(shift)``: ``snr(u) = cot²(πu/2) / shift²``. A latent of many dimensions keeps
its identity at noise levels where a low-dimensional one has lost it (its content is decided
close to σ = 1), so training draws and sampler steps are put there by a shift above 1; shift 1 is
the plain cosine schedule. Training draws ``u ~ U(0, 1)``; sampling walks ``u`` from 1 to 0 in
equal steps, so both see the same σ band.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

U_EPS = 1e-4  # keeps σ away from 0 (and, in float64, from 1): the log-SNR stays finite


def sigma_at(u: Tensor, shift: float = 1.0) -> Tensor:
    """σ at time ``u`` (any shape) of the shifted cosine schedule.

    Args:
        u: times in [0, 1] (clamped to [U_EPS, 1 − U_EPS]).
        shift: log-SNR shift (>= 1 puts more of the schedule near σ = 1).

    Returns:
        σ, the same shape as ``u``, in (0, 1).
    """
    u = u.clamp(U_EPS, 1 - U_EPS)
    half = u * (math.pi / 2)
    snr = (torch.cos(half) / torch.sin(half)).pow(2) / (shift * shift)
    return 1.0 / (1.0 + snr)


def log_snr(sigma: Tensor) -> Tensor:
    """log((1 − σ) / σ), the conditioning signal of the prior's time embedding."""
    s = sigma.clamp(1e-6, 1 - 1e-6)
    return torch.log1p(-s) - torch.log(s)


def add_noise(z0: Tensor, sigma: Tensor, eps: Tensor) -> Tensor:
    """``sqrt(1 − σ)·z0 + sqrt(σ)·ε``.

    Args:
        z0: (b, n, D) clean latents.
        sigma: (b,) noise shares.
        eps: (b, n, D) standard noise.

    Returns:
        (b, n, D) the noised latents.
    """
    s = sigma.to(z0.dtype)[:, None, None]
    return (1 - s).sqrt() * z0 + s.sqrt() * eps


def sampler_sigmas(steps: int, shift: float) -> list[float]:
    """The ``steps + 1`` noise levels a sampler walks, from σ(1) down to 0 (the last is exactly 0)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sig = sigma_at(u, shift).tolist()
    sig[-1] = 0.0
    return sig


def step(z: Tensor, z0_hat: Tensor, sigma: float, sigma_next: float, *, eta: float = 0.0,
         generator: torch.Generator | None = None) -> Tensor:
    """One sampler step from σ to ``sigma_next`` given the clean estimate ``z0_hat``.

    ``eta`` = 0 is the deterministic (DDIM) step along the implied noise; ``eta`` = 1 draws the
    fresh noise of the ancestral (DDPM posterior) step; values between interpolate its variance.

    Args:
        z: (..., D) the current noisy latents at σ.
        z0_hat: (..., D) the prior's clean estimate.
        sigma: the current noise share.
        sigma_next: the noise share to move to, ``sigma_next < sigma``.
        eta: 0 the deterministic step, 1 the ancestral one.
        generator: source of the fresh noise.

    Returns:
        (..., D) latents at ``sigma_next`` (``z0_hat`` itself when ``sigma_next`` is 0).
    """
    if sigma_next <= 0.0:
        return z0_hat
    eps_hat = (z - math.sqrt(1 - sigma) * z0_hat) / math.sqrt(max(sigma, 1e-12))
    # posterior variance of z_{σ'} given z_σ and z0 (VP form), scaled by eta²
    keep = (1 - sigma) / (1 - sigma_next)  # signal-variance ratio of the two levels, < 1
    var = eta * eta * sigma_next * (1 - keep) / max(sigma, 1e-12)
    var = min(var, sigma_next)
    z_next = math.sqrt(1 - sigma_next) * z0_hat + math.sqrt(sigma_next - var) * eps_hat
    if var > 0:
        z_next = z_next + math.sqrt(var) * torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
    return z_next
