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
signatures), which is how a level tells a compressor with per-slot states apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import DenoiseOutput, ObjectiveOutput, SplitOutput, StitchOutput

CompressFn = Callable[[Tensor, Tensor], Tensor]  # (x (s, m, d), log_existence (s, m)) -> z (s, k·d)

def packs_slots(module: object) -> bool:
    """Whether a built component runs segments cut to their length bucket with the same result.

    A component declares it with a ``packs_slots`` attribute (``model.packing: buckets`` needs it
    of every level's compressor, denoiser and objective); one that does not declare it does not.
    """
    return bool(getattr(module, "packs_slots", False))


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


class PriorSettings(Protocol):
    """What the level code and the trainer read of a prior's configuration."""

    @property
    def bank_every(self) -> int:
        """Steps between rebuilds of the bank (0: built once, when the prior starts)."""
        ...

    @property
    def bank_refresh(self) -> int:
        """Steps between encodings of the bank's kept segments by the current encoder (0: never)."""
        ...

    @property
    def bank_texts(self) -> int:
        """Training chunks whose segments are counted to choose the bank."""
        ...

    @property
    def lr_start(self) -> int:
        """The step at which the prior starts training."""
        ...

    @property
    def max_len(self) -> int:
        """The longest sequence the prior reads."""
        ...

    @property
    def shift(self) -> float:
        """The log-SNR shift of its noise schedule (:func:`zonkey.core.nn.schedule.sigma_at`)."""
        ...


@runtime_checkable
class Prior(Protocol):
    """A diffusion model of the sequence of a level's latents (generation, infilling)."""

    @property
    def cfg(self) -> PriorSettings:
        """The prior's configuration: its longest sequence and its schedule's shift."""
        ...

    def __call__(self, z: Tensor, sigma: Tensor, known: Tensor, valid: Tensor, cond: Tensor | None = None) -> Tensor:
        """The clean estimate of every position.

        Args:
            z: (b, n, D) latents: noised at σ where not known, clean where known.
            sigma: (b,) noise share of each row.
            known: (b, n) bool, positions given as context (clean).
            valid: (b, n) bool, real positions.
            cond: optional (b, n, D) previous clean estimate (self-conditioning).

        Returns:
            (b, n, D) clean estimates on the sphere (0 on padding).
        """
        ...

    def loss(self, z0: Tensor, valid: Tensor, generator: torch.Generator | None = None,
             classes: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """Training loss.

        Args:
            z0: (b, n, D) clean latent sequences (detached).
            valid: (b, n) bool real positions.
            generator: source of the noise.
            classes: (b, n) each position's class in the vocabulary head, where the caller knows
                it (a prior without one ignores it).

        Returns:
            the scalar loss and statistics.
        """
        ...

    def sample(self, b: int, n: int, *, steps: int, eta: float = 0.0, generator: torch.Generator | None = None,
               known_z: Tensor | None = None, known: Tensor | None = None, valid: Tensor | None = None,
               device: torch.device | str = "cpu", on_step: Callable[[int, Tensor], None] | None = None,
               mode: str = "mean", temperature: float = 1.0, other_scale: float = 1.0) -> Tensor:
        """Draw (b, n, D) latent sequences; ``known`` positions are given as ``known_z``.

        ``mode``, ``temperature`` and ``other_scale``: how a vocabulary head steps (``mean``,
        ``draw``, ``commit``) and how much of its "other" class it draws; a prior without one
        steps with its estimate whatever they are.
        """
        ...

    @property
    def bank(self) -> PriorBank | None:
        """The prior's vocabulary head, which the trainer fills from the encoder, or None."""
        ...

    def position_log_probs(self, z0: Tensor, valid: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Log p(class) at position ``target`` of each row given every other one clean (vocabulary head).

        Returns (b, K + 1) log-probabilities and (b,) the true classes; a prior without a
        vocabulary head raises ValueError.
        """
        ...


@runtime_checkable
class PriorBank(Protocol):
    """A prior's head over the level's emergent vocabulary (:mod:`zonkey.core.model.bank`)."""

    @property
    def size(self) -> int:
        """K, the entries the head predicts besides "other"."""
        ...

    @property
    def ready(self) -> bool:
        """Whether a bank was set."""
        ...

    def classes(self, z0: Tensor) -> Tensor:
        """The class of each clean latent (..., D) -> (...): its bank entry, or K ("other")."""
        ...

    def set_bank(self, latents: Tensor, log_freq: Tensor, other_log_freq: float,
                 strings: Sequence[bytes] | None = None) -> None:
        """Put the bank in place: (k, D) latents, their log-frequencies and, optionally, the segments."""
        ...

    def strings(self) -> list[bytes]:
        """The segments of the entries, in order (empty when none were kept)."""
        ...

    def set_latents(self, latents: Tensor) -> None:
        """Replace the latents of the first entries (the same segments, encoded anew)."""
        ...

    def lookup(self, segments: Sequence[bytes]) -> Tensor:
        """(s,) each segment's entry by its bytes, or K ("other")."""
        ...

    def has_segments(self) -> bool:
        """Whether the bank keeps its entries' segments (banks set without them do not)."""
        ...


PROTOCOLS: dict[str, type] = {
    "attention": Attention,
    "splitter": Splitter,
    "compressor": Compressor,
    "denoiser": Denoiser,
    "objective": Objective,
    "stitcher": Stitcher,
    "prior": Prior,
}
