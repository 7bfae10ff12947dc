"""How a model generates, chosen once: through a level's sequence prior or segment by segment.

Two strategies generate texts from noise and fill gaps between a prefix and a suffix:

- :class:`PriorStrategy` (``zonkey.core.generate.prior``): a level's sequence prior draws whole
  rows of that level's latents jointly, so the order of the pieces is modelled;
- :class:`PerSegmentStrategy` (``zonkey.core.generate.segment``): the paper's §9.1 and §9.2 loops
  over one level's own per-segment denoiser, whose latents are drawn independently.

Both hand their latents to the same walk down to bytes (``zonkey.core.generate.descent``).
:func:`strategy_for` picks one from the model and the caller's explicit choices; ``sample`` and
``infill_many`` validate their arguments, call it once and hand the work over. Nothing below the
choice branches on the strategy again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from zonkey.core.contracts.outputs import InfillResult, SampleResult
from zonkey.core.generate.descent import ProgressFn
from zonkey.core.generate.prior import infill_with_prior, prior_level, sample_with_prior
from zonkey.core.generate.segment import default_level, infill_per_segment, sample_per_segment
from zonkey.core.model.network import ZonkeyModel

__all__ = ["GenerationStrategy", "PerSegmentStrategy", "PriorStrategy", "gap_lengths", "strategy_for"]


def gap_lengths(model: ZonkeyModel, level: int, gap: tuple[int, int] | int | None = None, *,
                prior: bool = False) -> list[int]:
    """The searched gap lengths.

    ``gap`` (an int or an inclusive (lo, hi) range), else the recipe's ``sample.infill_gap_bytes``
    at level 0 and ``sample.infill_gap`` above. A sequence prior (``prior``) counts latents of its
    level at every level, so it always takes ``sample.infill_gap``.

    Raises:
        ValueError: a range that is empty or starts below 1.
    """
    cfg = model.recipe.sample
    if gap is None:
        gap = cfg.infill_gap_bytes if level == 0 and not prior else cfg.infill_gap
    lo, hi = (gap, gap) if isinstance(gap, int) else (int(gap[0]), int(gap[1]))
    if lo < 1 or hi < lo:
        raise ValueError(f"gap length range ({lo}, {hi}) must satisfy 1 <= lo <= hi")
    return list(range(lo, hi + 1))


class GenerationStrategy(Protocol):
    """One way of generating with a model: it samples texts from noise and fills gaps.

    The caller (``sample``, ``infill_many``) has already filled in the recipe's defaults for
    ``steps``, ``epsilon`` and ``segments`` and checked every argument; what is left as None
    (``length``, ``gap``, ``span``) takes the strategy's own default. A strategy ignores the
    arguments that do not apply to it (``segments`` and ``span`` through a prior, ``length``
    segment by segment).
    """

    def sample(self, n: int, *, steps: int, seed: int, segments: int, length: int | None, epsilon: float,
               trace: bool = False, progress: ProgressFn | None = None) -> SampleResult:
        """``n`` texts from noise; all noise from one generator seeded with ``seed``."""
        ...

    def infill(self, pairs: Sequence[tuple[str, str]], *, gap: tuple[int, int] | int | None, steps: int, seed: int,
               epsilon: float, span: int | None = None, trace: bool = False,
               progress: ProgressFn | None = None) -> list[InfillResult]:
        """The gap of every (prefix, suffix) pair filled, one result per pair in order."""
        ...


@dataclass(frozen=True)
class PriorStrategy:
    """Generation through the sequence prior of ``level``: a position is one level-``level`` latent.

    Sampling draws ``length`` latents per text jointly (``sample.length`` by default); infilling
    searches gaps of ``sample.infill_gap`` latents (a word each at level 0) with the context given as
    known positions, and decodes only the gap.
    """

    model: ZonkeyModel
    level: int  # a level with a sequence prior

    def sample(self, n: int, *, steps: int, seed: int, segments: int, length: int | None, epsilon: float,
               trace: bool = False, progress: ProgressFn | None = None) -> SampleResult:
        """``n`` texts drawn by the prior and decoded down to bytes (``segments`` is not used)."""
        cfg = self.model.recipe.sample
        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        return sample_with_prior(self.model, n, level=self.level, steps=steps,
                                 length=cfg.length if length is None else length, eta=cfg.eta, epsilon=epsilon,
                                 generator=gen, progress=progress, trace=trace)

    def infill(self, pairs: Sequence[tuple[str, str]], *, gap: tuple[int, int] | int | None, steps: int, seed: int,
               epsilon: float, span: int | None = None, trace: bool = False,
               progress: ProgressFn | None = None) -> list[InfillResult]:
        """Every pair's gap drawn by the prior (``span`` and ``trace`` are not used)."""
        gen = torch.Generator(device=self.model.table.device).manual_seed(seed)
        lengths = gap_lengths(self.model, self.level, gap, prior=True)
        return infill_with_prior(self.model, pairs, level=self.level, gaps=lengths, steps=steps,
                                 eta=self.model.recipe.sample.eta, epsilon=epsilon, generator=gen, progress=progress)


@dataclass(frozen=True)
class PerSegmentStrategy:
    """Generation segment by segment with one level's own denoiser (§9.1, §9.2).

    ``level`` is None for each operation's default. Sampling draws ``segments`` independent latents
    of ``level`` (default: the top level). Infilling works in ``level``'s input sequence (default:
    level 1 when the model has it, else 0): its positions are bytes at level 0 and latents of the
    level below above it, so the gap is counted in bytes at level 0.
    """

    model: ZonkeyModel
    level: int | None = None

    def sample(self, n: int, *, steps: int, seed: int, segments: int, length: int | None, epsilon: float,
               trace: bool = False, progress: ProgressFn | None = None) -> SampleResult:
        """``n`` texts of ``segments`` latents each (``length`` is not used)."""
        level = len(self.model.levels) - 1 if self.level is None else self.level
        gen = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        return sample_per_segment(self.model, n, level=level, steps=steps, segments=segments, epsilon=epsilon,
                                  generator=gen, trace=trace, progress=progress)

    def infill(self, pairs: Sequence[tuple[str, str]], *, gap: tuple[int, int] | int | None, steps: int, seed: int,
               epsilon: float, span: int | None = None, trace: bool = False,
               progress: ProgressFn | None = None) -> list[InfillResult]:
        """Every pair's gap filled by the clamped denoising loop."""
        level = default_level(self.model) if self.level is None else self.level
        gen = torch.Generator(device=self.model.table.device).manual_seed(seed)
        lengths = gap_lengths(self.model, level, gap)
        return infill_per_segment(self.model, pairs, level=level, gaps=lengths, steps=steps, epsilon=epsilon,
                                  generator=gen, span=span, trace=trace, progress=progress)


def strategy_for(model: ZonkeyModel, level: int | None = None, *, per_segment: bool = False,
                 prior: bool = False) -> PriorStrategy | PerSegmentStrategy:
    """The one strategy that samples and infills with ``model``.

    The prior strategy where the chosen level has a sequence prior, else the per-segment one:

    - ``level`` None: the highest level with a prior; without one, per segment at each operation's
      default level;
    - ``level`` given: its prior where it has one, else per segment at that level;
    - ``per_segment``: per segment at ``level`` even where it has a prior;
    - ``prior``: the prior, and an error where there is none to use.

    What ``level`` means depends on the strategy chosen:

    - through a prior, the level whose latents the prior draws, for sampling and infilling alike:
      one position is one segment of that level (a word-like segment at level 0), and gap lengths
      count those segments;
    - per segment, for sampling, the level whose latents are drawn from noise and decoded down
      (default: the top level); for infilling, the level whose input sequence holds the gap
      (default: 1 when the model has it, else 0), whose positions are bytes at level 0 and latents
      of the level below above it. So ``level=1`` per segment infills in the same word-like
      positions as ``level=0`` through a prior.

    Args:
        model: the model.
        level: the level asked for, or None.
        per_segment: use the per-segment strategy even where the level has a prior.
        prior: use the prior strategy, or fail.

    Returns:
        the chosen strategy.

    Raises:
        ValueError: a level that does not exist, ``per_segment`` together with ``prior``, or ``prior``
            where the level asked for (or, without one, every level) has no sequence prior.
    """
    n_levels = len(model.levels)
    if level is not None and not 0 <= level < n_levels:
        raise ValueError(f"level {level} does not exist (the model has {n_levels} level(s))")
    if per_segment and prior:
        raise ValueError("per_segment and prior exclude each other: choose one strategy")
    if per_segment:
        return PerSegmentStrategy(model, level)
    with_prior = prior_level(model, level)
    if with_prior is not None:
        return PriorStrategy(model, with_prior)
    if prior and level is None:
        raise ValueError("no level of the model has a trained sequence prior")
    if prior:
        raise ValueError(f"level {level} has no trained sequence prior")
    return PerSegmentStrategy(model, level)
