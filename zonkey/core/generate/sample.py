"""Generation from noise (§9.1), top-down.

:func:`sample` checks its arguments, chooses the strategy once (``strategy_for``: the highest
level's sequence prior where the model has one, else the per-segment loop at the top level) and
hands over. The two strategies are described in ``zonkey.core.generate.prior`` and
``zonkey.core.generate.segment``; both decode their latents with the same walk down to bytes
(``zonkey.core.generate.descent``). All randomness comes from one generator seeded with ``seed``,
so a seed gives the same texts.
"""

from __future__ import annotations

import torch

from zonkey.core.contracts.outputs import SampleResult
from zonkey.core.generate.descent import ProgressFn, decode_down, descend
from zonkey.core.generate.strategy import strategy_for
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.stitching import stitch, truncate

__all__ = ["ProgressFn", "SampleResult", "decode_down", "descend", "sample", "stitch", "truncate"]


@torch.no_grad()
def sample(model: ZonkeyModel, n: int = 4, *, steps: int | None = None, seed: int = 0, level: int | None = None,
           segments: int | None = None, epsilon: float | None = None, trace: bool = False,
           progress: ProgressFn | None = None, length: int | None = None,
           per_segment: bool = False) -> SampleResult:
    """Generate ``n`` texts from noise, starting at ``level`` (default: the top level).

    Args:
        model: the model.
        n: number of texts.
        steps: denoising steps at the starting level (default ``sample.steps``).
        seed: seed of the one generator all noise is drawn from.
        level: the level whose latents are drawn from the prior (default: the highest level with a
            sequence prior, else the top level). A level with a sequence prior draws ``length``
            latents per text jointly from it; otherwise ``segments`` independent latents are drawn
            from the level's own per-segment denoiser (see ``strategy_for``).
        segments: latents per text at that level, stitched in order (default ``sample.top_segments``).
        epsilon: existence threshold of the truncation (default ``sample.epsilon``).
        trace: record, at every step, the texts decoded from the current estimate (clean decodes
            down the levels, no noise drawn: tracing does not change the result).
        progress: called as ``progress(done, total)`` after every step.
        length: latents per text drawn by a sequence prior (default ``sample.length``).
        per_segment: draw from the per-segment denoiser even where the level has a sequence prior.

    Returns:
        the texts, their byte lengths and raw bytes, and the trace if asked for.

    Raises:
        ValueError: a level that does not exist, or n, steps or segments below 1.
    """
    model.eval()
    cfg = model.recipe.sample
    steps = cfg.steps if steps is None else steps
    epsilon = cfg.epsilon if epsilon is None else epsilon
    segments = cfg.top_segments if segments is None else segments
    strategy = strategy_for(model, level, per_segment=per_segment)
    for name, v in (("n", n), ("steps", steps), ("segments", segments)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1 (got {v})")
    return strategy.sample(n, steps=steps, seed=seed, segments=segments, length=length, epsilon=epsilon,
                           trace=trace, progress=progress)
