"""The contract of every component kind, written as a ``typing.Protocol``.

A level calls its components only through these signatures, so a registered component (built-in
or from a plugin) fits a level exactly when it fulfils its kind's protocol. Shapes use the axis
letters of :mod:`zonkey.core.contracts.shapes`.

Each config registered in :mod:`zonkey.core.contracts.registry` builds its module with one signature per
kind (:data:`BUILD_SIGNATURES`, checked when the config is registered):

* level components (splitter, compressor, denoiser, objective, stitcher, prior): ``build(ctx)`` with the
  :class:`~zonkey.core.contracts.shapes.LevelContext` of their level;
* attention backends: ``build()``. The backend is built once per model, before any level exists,
  and is itself part of every ``LevelContext`` (``ctx.attention``); it has no context to receive.

The protocols are ``runtime_checkable``: ``isinstance`` checks that the methods exist (not their
signatures), which is how a level tells a compressor with per-slot states apart. The sequence
prior's protocols (and its vocabulary head's) are in :mod:`zonkey.core.contracts.prior`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import DenoiseOutput, ObjectiveOutput, SplitOutput, StitchOutput
from zonkey.core.contracts.prior import Prior, PriorBank, PriorSettings

CompressFn = Callable[[Tensor, Tensor], Tensor]  # (x (s, m, d), log_existence (s, m)) -> z (s, k·d)

def packs_slots(module: object) -> bool:
    """Whether a built component runs segments cut to their length bucket with the same result.

    A component declares it with a ``packs_slots`` attribute (``model.packing: buckets`` needs it
    of every level's compressor, denoiser and objective); one that does not declare it does not.
    """
    return bool(getattr(module, "packs_slots", False))


def packs_rows(module: object) -> bool:
    """Whether a built compressor or denoiser computes each segment at its own length in one call.

    A component declares it with a ``packs_rows`` attribute and then takes ``lengths`` (s,) in its
    call (``model.packing: varlen`` needs it of every level's compressor and denoiser).
    """
    return bool(getattr(module, "packs_rows", False))


LEVEL_KINDS: tuple[str, ...] = ("splitter", "compressor", "denoiser", "objective", "stitcher", "prior")

# The parameters of ``build`` after ``self``, per kind.
BUILD_SIGNATURES: dict[str, tuple[str, ...]] = {"attention": (), **{kind: ("ctx",) for kind in LEVEL_KINDS}}


class DenoiseFn(Protocol):
    """A level's denoise call as an objective sees it (the level's denoiser, or a wrapper of it)."""

    def __call__(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None) -> DenoiseOutput:
        """Denoise z (s, k·d) at noise levels sigma (s,), optionally self-conditioned on cond (s, k·d)."""
        ...


@runtime_checkable
class Attention(Protocol):
    """Probabilistic self-attention (§3): a parameter-free callable module."""

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, causal: bool = False) -> Tensor:
        """Attend with existence probabilities.

        Args:
            q: (b, h, n, dh) queries.
            k: (b, h, n, dh) keys.
            v: (b, h, n, dh) values.
            log_existence: (b, n) log existence of every position (0 certain, −inf hard padding).
            causal: mask keys after the query as well.

        Returns:
            (b, h, n, dh); rows of hard-padded queries are exactly 0.
        """
        ...


@runtime_checkable
class Splitter(Protocol):
    """Chooses the BOS positions of a level's sequence and cuts it into segments (§4)."""

    def __call__(self, x: Tensor, valid: Tensor, *, sample: bool | None = None, tokens: Tensor | None = None,
                 generator: torch.Generator | None = None) -> SplitOutput:
        """Split a batch.

        Args:
            x: (b, n, d) the level's input vectors.
            valid: (b, n) bool, False on padding.
            sample: sample the BOS decisions (training) or threshold them (default: ``training``).
            tokens: (b, n) byte values (level 0; only rule-based baselines read them).
            generator: random source of the sampled decisions.

        Returns:
            The :class:`SplitOutput` with its segments (s, m, d).
        """
        ...


@runtime_checkable
class FitsTrainingText(Protocol):
    """A component with a part fitted to the training text before training (not learned by gradient).

    The trainer calls :meth:`fit` once, on a fresh run, with the training split's chunks; what it
    fits lives in the module's buffers (saved with the model) and its report in the run directory.
    The ``entropy`` splitter's byte n-gram is one.
    """

    def fit(self, chunks: Sequence[bytes]) -> dict[str, Any]:
        """Fit on the training split.

        Args:
            chunks: the training split's chunks, as the batches hold them.

        Returns:
            What the fit measured (JSON-able).
        """
        ...


@runtime_checkable
class Compressor(Protocol):
    """Compresses each segment to ``k`` latent vectors on the sphere (§5)."""

    def __call__(self, x: Tensor, log_existence: Tensor) -> Tensor:
        """Compress.

        Args:
            x: (s, m, d) segment vectors.
            log_existence: (s, m) log existence of each slot.

        Returns:
            (s, k·d) latents on the sphere.
        """
        ...


@runtime_checkable
class SlotStatesCompressor(Compressor, Protocol):
    """A compressor that also exposes its encoder's state at every slot (masked prediction, §5.2)."""

    def encode(self, x: Tensor, log_existence: Tensor) -> tuple[Tensor, Tensor]:
        """Compress and keep the encoder's slot states.

        Args:
            x: (s, m, d) segment vectors.
            log_existence: (s, m) log existence of each slot.

        Returns:
            (latents (s, k·d) on the sphere, slot states (s, m, d)).
        """
        ...


@runtime_checkable
class Denoiser(Protocol):
    """Decompresses a noisy latent back to segment vectors with existence (§6)."""

    def __call__(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None) -> DenoiseOutput:
        """Denoise.

        Args:
            z: (s, k·d) noisy latents.
            sigma: (s,) noise levels in [0, 1] (0 clean).
            cond: (s, k·d) an optional self-conditioning estimate of the clean latents.

        Returns:
            The :class:`DenoiseOutput` with slots (s, m, d).
        """
        ...


@runtime_checkable
class Objective(Protocol):
    """How latents are noised, what the denoiser learns, and the matching sampler step (§6, §9.1)."""

    def __call__(self, z0: Tensor, denoise: DenoiseFn, compress: CompressFn, *,
                 generator: torch.Generator | None = None, clean_only: bool = False,
                 cut: Tensor | None = None) -> ObjectiveOutput:
        """Training pass.

        Args:
            z0: (s, k·d) clean latents on the sphere.
            denoise: the level's denoiser.
            compress: the level's compressor.
            generator: random source of the noise draws.
            clean_only: run the clean pass alone (loss 0, no dirty output, no extra latents).
            cut: (s,) each segment's length bucket (``model.packing: buckets``): the level's calls
                take it as a keyword (``denoise(z, sigma, cut=...)``, ``compress(x, le, cut=...)``)
                for the rows they are given; None (packing off) runs every segment at m slots.

        Returns:
            The :class:`ObjectiveOutput`.
        """
        ...

    def noise(self, z0: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noise clean latents along the objective's own path.

        Args:
            z0: (s, k·d) clean latents.
            sigma: (s,) noise levels in [0, 1].
            generator: random source of the noise.

        Returns:
            (s, k·d) the latents at noise level sigma.
        """
        ...

    def prior(self, s: int, dim: int, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> Tensor:
        """Pure noise at σ = 1.

        Args:
            s: number of latents.
            dim: width of one latent (k·d).
            device: where to draw it.
            generator: random source.

        Returns:
            (s, dim).
        """
        ...

    def step(self, z: Tensor, sigma: float, sigma_next: float, denoise: DenoiseFn,
             compress: CompressFn) -> tuple[Tensor, DenoiseOutput]:
        """One sampler step from σ to σ_next.

        Args:
            z: (s, k·d) latents at noise level sigma.
            sigma: the current noise level.
            sigma_next: the noise level to move to (0: the clean estimate).
            denoise: the level's denoiser.
            compress: the level's compressor.

        Returns:
            (z at σ_next (s, k·d), the denoiser output at σ).
        """
        ...


@runtime_checkable
class Stitcher(Protocol):
    """Lays overlapping decoded segments back onto document positions (§7)."""

    #: whether a training call (with ``true_starts``) returns losses; without any, the level does
    #: not call the stitcher in training at all
    has_losses: bool

    def __call__(self, segments: Tensor, log_existence: Tensor, doc: Tensor, b: int,
                 true_starts: Tensor | None = None) -> StitchOutput:
        """Stitch.

        Args:
            segments: (s, m, d) decoded segment vectors.
            log_existence: (s, m) log existence of each slot.
            doc: (s,) long document of each segment, sorted by (document, start).
            b: number of documents.
            true_starts: (s,) true first positions (training: gives the stitcher's losses).

        Returns:
            The :class:`StitchOutput` (b, n, d).
        """
        ...


__all__ = ["PROTOCOLS", "Attention", "Compressor", "DenoiseFn", "Denoiser", "FitsTrainingText", "Objective", "Prior",
           "PriorBank", "PriorSettings", "SlotStatesCompressor", "Splitter", "Stitcher"]

PROTOCOLS: dict[str, type] = {
    "attention": Attention,
    "splitter": Splitter,
    "compressor": Compressor,
    "denoiser": Denoiser,
    "objective": Objective,
    "stitcher": Stitcher,
    "prior": Prior,
}
