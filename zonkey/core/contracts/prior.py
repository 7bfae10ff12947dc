"""The protocols of a level's sequence prior (generation and infilling) and of its vocabulary head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


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
               mode: str = "mean", temperature: float = 1.0, other_scale: float = 1.0,
               order: str = "confidence") -> Tensor:
        """Draw (b, n, D) latent sequences; ``known`` positions are given as ``known_z``.

        ``mode``, ``temperature``, ``other_scale`` and ``order``: how a vocabulary head steps
        (``mean``, ``draw``, ``commit``), how much of its "other" class it draws and in which order
        ``commit`` fixes positions; a prior without one steps with its estimate whatever they are.
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
