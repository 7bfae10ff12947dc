"""The contract every objective fulfils, and the pieces they share."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zonkey.core.contracts.outputs import DenoiseOutput, ObjectiveOutput
from zonkey.core.contracts.protocols import CompressFn, DenoiseFn
from zonkey.core.nn.sphere import atanh_cos_logits, to_sphere


def add_noise(z: Tensor, sigma: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Variance-preserving noise on the sphere: sqrt(1 − σ)·z + sqrt(σ)·ε, σ (s,) in [0, 1]."""
    if noise is None:
        noise = torch.randn(z.shape, device=z.device, dtype=z.dtype, generator=generator)
    s = sigma.to(z.dtype)[:, None]
    return torch.sqrt(1 - s) * z + torch.sqrt(s) * noise


def subsample_rows(s: int, fraction: float, like: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
    """A random subset of ``ceil(fraction · s)`` rows (at least 2), or None for all rows."""
    if fraction >= 1.0 or s <= 2:
        return None
    keep = max(2, math.ceil(fraction * s))
    return torch.randperm(s, device=like.device, generator=generator)[:keep].sort().values


def uniform(s: int, lo: float, hi: float, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(s,) draws from U(lo, hi) on the device of ``like``."""
    return lo + (hi - lo) * torch.rand(s, device=like.device, generator=generator)


def contrastive_atanh(pred: Tensor, target: Tensor, weight: Tensor | None = None, same: Tensor | None = None) -> Tensor:
    """Cross-entropy of 2·atanh(cos) logits with in-batch negatives.

    Each prediction must pick its own target among the targets of the batch; the diagonal is always
    the positive.

    Args:
        pred: (s, D) predictions.
        target: (s, D) targets.
        weight: optional (s,) per-row weights.
        same: optional (s, s) bool, pairs that must not be used as negatives (false negatives).

    Returns:
        () the (weighted) mean cross-entropy.
    """
    logits = atanh_cos_logits(pred, target)  # (s, s)
    s = logits.shape[0]
    eye = torch.eye(s, dtype=torch.bool, device=logits.device)
    if same is not None:
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    ce = F.cross_entropy(logits, torch.arange(s, device=logits.device), reduction="none")  # (s,)
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-8)


def false_negatives(targets: Tensor, tol: float = 1e-6) -> Tensor:
    """(s, s) bool: pairs of rows whose targets coincide (cosine > 1 − tol).

    E.g. two segments with the same bytes: they must not serve as each other's negatives.
    """
    t = F.normalize(targets.detach(), dim=-1)
    return (t @ t.T) > 1 - tol


def bind_cut(denoise: DenoiseFn, compress: CompressFn, cut: Tensor | None) -> tuple[DenoiseFn, CompressFn]:
    """The level's denoise and compress calls for rows whose length buckets are ``cut`` (s,).

    With ``cut`` None (``model.packing: off``) the calls are returned unchanged; otherwise every
    call runs each row at its bucket's length (the level's calls take ``cut``).
    """
    if cut is None:
        return denoise, compress
    den = cast(Callable[..., DenoiseOutput], denoise)
    com = cast(Callable[..., Tensor], compress)

    def denoise_cut(z: Tensor, sigma: Tensor, cond: Tensor | None = None) -> DenoiseOutput:
        return den(z, sigma, cond, cut=cut)

    def compress_cut(x: Tensor, log_existence: Tensor) -> Tensor:
        return com(x, log_existence, cut=cut)

    return denoise_cut, compress_cut


def rows_of(cut: Tensor | None, rows: Tensor | None) -> Tensor | None:
    """The buckets of a subset ``rows`` of the segments (None: all of them, or no buckets)."""
    return cut if cut is None or rows is None else cut[rows]


def recompress(compress: CompressFn, out: DenoiseOutput) -> Tensor:
    """Re-compress denoised slots weighted by their own predicted existence (§9.1 step 4)."""
    return compress(to_sphere(out.x_hat), out.log_existence)


class ObjectiveBase(nn.Module):
    """Base class of the built-in objectives (their contract: :class:`zonkey.core.contracts.protocols.Objective`).

    Subclasses implement :meth:`forward` (training) and, where their noise path differs from the
    variance-preserving one, :meth:`noise`, :meth:`prior` and :meth:`step` (sampling). The
    built-in ones run the level's calls per length bucket when the level gives them ``cut``.
    """

    #: takes ``cut`` in :meth:`forward` and passes it to the level's calls (``model.packing``)
    packs_slots = True

    def forward(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *, generator: torch.Generator | None = None,
                clean_only: bool = False, cut: Tensor | None = None) -> ObjectiveOutput:  # pragma: no cover
        """Training pass; every objective defines it.

        Args:
            z0: (s, k·d) clean latents.
            denoise: the level's denoiser.
            compress: the level's compressor.
            generator: random source of the noise draws.
            clean_only: run the clean pass alone (loss 0, no dirty output, no extra latents); the
                level asks for it while the objective's own loss and the dirty reconstruction weigh 0.
            cut: (s,) each segment's length bucket (``model.packing: buckets``), passed on to the
                level's calls through :func:`bind_cut`; None runs every segment at m slots.

        Returns:
            The :class:`ObjectiveOutput`.
        """
        raise TypeError(f"{type(self).__name__} must define forward()")

    def noise(self, z0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Variance-preserving noise: z0 (s, k·d) at noise levels sigma (s,) -> (s, k·d)."""
        return add_noise(z0, sigma, generator=generator)

    def prior(self, s: int, dim: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
        """Pure noise at σ = 1: N(0, I) scaled to the sphere (§9.1)."""
        return to_sphere(torch.randn(s, dim, device=device, generator=generator))

    def step(self, z: Tensor, sigma: float, sigma_next: float, denoise: DenoiseFn, compress: CompressFn) -> tuple[Tensor, DenoiseOutput]:
        """One deterministic (DDIM-like) sampler step from σ to σ_next.

        Denoise, re-compress with existence weighting to an estimate of the clean latent, and move
        to σ_next along the implied noise direction.

        Args:
            z: (s, k·d) latents at noise level sigma.
            sigma: the current noise level.
            sigma_next: the level to move to (0: return the clean estimate).
            denoise: the level's denoiser.
            compress: the level's compressor.

        Returns:
            (z at σ_next (s, k·d), the denoiser output at σ).
        """
        s = z.shape[0]
        out = denoise(z, z.new_full((s,), sigma))
        z0_hat = recompress(compress, out)
        if sigma_next <= 0:
            return z0_hat, out
        eps = (z - math.sqrt(1 - sigma) * z0_hat) / math.sqrt(max(sigma, 1e-6))
        return math.sqrt(1 - sigma_next) * z0_hat + math.sqrt(sigma_next) * eps, out
