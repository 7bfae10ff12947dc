"""The contract of every component kind, written as a ``typing.Protocol``.

A level calls its components only through these signatures, so a registered component (built-in
or from a plugin) fits a level exactly when it fulfils its kind's protocol. Shapes use the axis
letters of :mod:`zonkey.core.shapes`.

Each config registered in :mod:`zonkey.core.registry` builds its module with one signature per
kind (:data:`BUILD_SIGNATURES`, checked when the config is registered):

* level components (splitter, compressor, denoiser, objective, stitcher): ``build(ctx)`` with the
  :class:`~zonkey.core.shapes.LevelContext` of their level;
* attention backends: ``build()``. The backend is built once per model, before any level exists,
  and is itself part of every ``LevelContext`` (``ctx.attention``); it has no context to receive.

The protocols are ``runtime_checkable``: ``isinstance`` checks that the methods exist (not their
signatures), which is how a level tells a compressor with per-slot states apart.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from zonkey.core.outputs import DenoiseOutput, ObjectiveOutput, SplitOutput, StitchOutput

DenoiseFn = Callable[[Tensor, Tensor], DenoiseOutput]  # (z (s, k·d), sigma (s,)) -> DenoiseOutput
CompressFn = Callable[[Tensor, Tensor], Tensor]  # (x (s, m, d), log_existence (s, m)) -> z (s, k·d)

LEVEL_KINDS: tuple[str, ...] = ("splitter", "compressor", "denoiser", "objective", "stitcher")

# The parameters of ``build`` after ``self``, per kind.
BUILD_SIGNATURES: dict[str, tuple[str, ...]] = {"attention": (), **{kind: ("ctx",) for kind in LEVEL_KINDS}}


@runtime_checkable
class Attention(Protocol):
    """Probabilistic self-attention (§3): a parameter-free callable module."""

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
        """Attend with existence probabilities.

        Args:
            q: (b, h, n, dh) queries; k, v: (b, h, n, dh) keys and values.
            log_existence: (b, n) log existence of every position (0 certain, −inf hard padding).
            causal: mask keys after the query as well.

        Returns:
            (b, h, n, dh); rows of hard-padded queries are exactly 0.
        """
        ...


@runtime_checkable
class Splitter(Protocol):
    """Chooses the BOS positions of a level's sequence and cuts it into segments (§4)."""

    def __call__(self, x: Tensor, valid: Tensor, *, sample: Optional[bool] = None, tokens: Optional[Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> SplitOutput:
        """Split a batch.

        Args:
            x: (b, n, d) the level's input vectors; valid: (b, n) bool.
            sample: sample the BOS decisions (training) or threshold them (default: ``training``).
            tokens: (b, n) byte values (level 0; only rule-based baselines read them).
            generator: random source of the sampled decisions.

        Returns:
            The :class:`SplitOutput` with its segments (s, m, d).
        """
        ...


@runtime_checkable
class Compressor(Protocol):
    """Compresses each segment to ``k`` latent vectors on the sphere (§5)."""

    def __call__(self, x: Tensor, log_existence: Tensor) -> Tensor:
        """Args: x (s, m, d) segment vectors, log_existence (s, m). Returns: latents (s, k·d)."""
        ...


@runtime_checkable
class SlotStatesCompressor(Compressor, Protocol):
    """A compressor that also exposes its encoder's state at every slot (masked prediction, §5.2)."""

    def encode(self, x: Tensor, log_existence: Tensor) -> tuple[Tensor, Tensor]:
        """Args: x (s, m, d), log_existence (s, m). Returns: (latents (s, k·d), slot states (s, m, d))."""
        ...


@runtime_checkable
class Denoiser(Protocol):
    """Decompresses a noisy latent back to segment vectors with existence (§6)."""

    def __call__(self, z: Tensor, sigma: Tensor, cond: Optional[Tensor] = None) -> DenoiseOutput:
        """Args: z (s, k·d) noisy latents, sigma (s,) noise levels in [0, 1], cond (s, k·d) an optional
        self-conditioning estimate. Returns: the :class:`DenoiseOutput` (s, m, d)."""
        ...


@runtime_checkable
class Objective(Protocol):
    """How latents are noised, what the denoiser learns, and the matching sampler step (§6, §9.1)."""

    def __call__(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *,
                 generator: Optional[torch.Generator] = None, clean_only: bool = False) -> ObjectiveOutput:
        """Training pass.

        Args:
            z0: (s, k·d) clean latents on the sphere.
            denoise: the level's denoiser; compress: the level's compressor.
            generator: random source of the noise draws.
            clean_only: run the clean pass alone (loss 0, no dirty output, no extra latents).

        Returns:
            The :class:`ObjectiveOutput`.
        """
        ...

    def noise(self, z0: Tensor, sigma: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """z0 (s, k·d) clean latents, sigma (s,) -> the latents at noise level sigma (s, k·d)."""
        ...

    def prior(self, s: int, dim: int, device: torch.device | str = "cpu",
              generator: Optional[torch.Generator] = None) -> Tensor:
        """Pure noise at σ = 1: (s, dim)."""
        ...

    def step(self, z: Tensor, sigma: float, sigma_next: float, denoise: DenoiseFn,
             compress: CompressFn) -> tuple[Tensor, DenoiseOutput]:
        """One sampler step from σ to σ_next: z (s, k·d) -> (z at σ_next (s, k·d), denoiser output at σ)."""
        ...


@runtime_checkable
class Stitcher(Protocol):
    """Lays overlapping decoded segments back onto document positions (§7)."""

    def __call__(self, segments: Tensor, log_existence: Tensor, doc: Tensor, b: int,
                 true_starts: Optional[Tensor] = None) -> StitchOutput:
        """Stitch.

        Args:
            segments: (s, m, d) decoded segment vectors; log_existence: (s, m).
            doc: (s,) long document of each segment, sorted by (document, start).
            b: number of documents.
            true_starts: (s,) true first positions (training: gives the stitcher's losses).

        Returns:
            The :class:`StitchOutput` (b, n, d).
        """
        ...


PROTOCOLS: dict[str, type] = {
    "attention": Attention,
    "splitter": Splitter,
    "compressor": Compressor,
    "denoiser": Denoiser,
    "objective": Objective,
    "stitcher": Stitcher,
}
