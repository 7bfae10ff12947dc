"""Infilling (§9.2): fill a gap between a known prefix and a known suffix.

:func:`infill_many` checks its arguments, chooses the strategy once (``strategy_for``: the
highest level's sequence prior where the model has one, else the per-segment loop at level 1, or
level 0 on a one-level model) and hands over. The prior draws the gap with the context given as
known latents (``zonkey.core.generate.prior``); the per-segment loop denoises windows of the
level with the context clamped after every step (``zonkey.core.generate.segment``). Either way the
prefix and the suffix come back byte for byte, every gap length of every pair runs in one batch,
and all randomness comes from one generator seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zonkey.core.contracts.outputs import InfillResult
from zonkey.core.generate.descent import ProgressFn
from zonkey.core.generate.segment import _Clamp as _Clamp  # the window machinery, reached into by its tests
from zonkey.core.generate.segment import _scores as _scores
from zonkey.core.generate.segment import _windows as _windows
from zonkey.core.generate.segment import default_level
from zonkey.core.generate.strategy import gap_lengths, strategy_for
from zonkey.core.model.inference import encode_to_level
from zonkey.core.model.network import ZonkeyModel

__all__ = ["InfillResult", "default_level", "encode_to_level", "gap_lengths", "infill", "infill_many"]


@torch.no_grad()
def infill_many(model: ZonkeyModel, pairs: Sequence[tuple[str, str]], *, level: int | None = None,
                gap: tuple[int, int] | int | None = None, steps: int | None = None, seed: int = 0,
                epsilon: float | None = None, span: int | None = None, trace: bool = False,
                progress: ProgressFn | None = None, per_segment: bool = False) -> list[InfillResult]:
    """Fill the gap of every (prefix, suffix) pair; all pairs and gap lengths in one batch.

    Args:
        model: the model.
        pairs: (prefix, suffix) texts; one of the two may be empty (continuation / beginning).
        level: through a sequence prior, the level whose latents fill the gap (default: the highest
            level with a prior); per segment, the level whose sequence holds the gap (default
            :func:`default_level`). ``strategy_for`` says which applies.
        gap: gap lengths searched (int or inclusive range), in positions of that level.
        steps: denoising steps (default ``sample.infill_steps``).
        seed: seed of the one generator all noise is drawn from.
        epsilon: truncation threshold when descending from level >= 1 (default ``sample.epsilon``).
        span: document positions per window of the per-segment loop (default: the level's
            ``max_segment``); the window's later slots get existence 0. Shorter spans stay closer
            to the segment lengths the level was trained on, at the price of less context per window.
        trace: record the decoded gap of every candidate at every step (per segment).
        progress: called as ``progress(done, total)`` after every step.
        per_segment: infill with the per-segment loop even where the level has a sequence prior.

    Returns:
        one result per pair, in order: the best-scoring candidate of each.

    Raises:
        ValueError: an empty pair, a level that does not exist, a bad gap range or steps < 1.
    """
    model.eval()
    cfg = model.recipe.sample
    strategy = strategy_for(model, level, per_segment=per_segment)
    steps = cfg.infill_steps if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be at least 1 (got {steps})")
    epsilon = cfg.epsilon if epsilon is None else epsilon
    for i, (p, s) in enumerate(pairs):
        if not p and not s:
            raise ValueError(f"pair {i}: the prefix and the suffix are both empty (nothing to infill around)")
    if not pairs:
        return []
    return strategy.infill(pairs, gap=gap, steps=steps, seed=seed, epsilon=epsilon, span=span, trace=trace,
                           progress=progress)


def infill(model: ZonkeyModel, prefix: str, suffix: str, **kwargs: Any) -> InfillResult:
    """Fill the gap between ``prefix`` and ``suffix`` (keywords as :func:`infill_many`)."""
    return infill_many(model, [(prefix, suffix)], **kwargs)[0]
