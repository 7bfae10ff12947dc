"""Generation from noise (§9.1), top-down.

A level with a sequence prior (``model.levels.L.prior``) generates whole sequences of its latents
jointly (``zonkey.core.generate.prior``); the highest such level is the default starting point. The
rest of this page describes the per-segment path, used when no level has a prior.

At the top level every sample is ``segments`` latents drawn from N(0, I) on the sphere, denoised
together over T steps with a linear schedule σ_max → σ_min, each step being the level objective's
own sampler step (decompress conditioned on σ, denoise, predict existence, re-compress weighted by
existence). The final decoded slots are truncated where existence < ε and the segments of a
sample are joined by the level's stitcher (hard concatenation when the level has none). Going
down, every stitched vector is a latent of the level below; all of them, across samples, are
decoded in one batch with a short loop of their own (noised to ``level_sigma`` and denoised back in
``level_steps`` steps), truncated, stitched, and so on. At level 0 the stitched vectors become bytes
through the tied embedding table.

Length is set by existence alone: no end token. Truncation is hard: the stitcher sees existence 1
on the kept slots and 0 after the cut, so the stitched length is exactly the sum of kept lengths.
All randomness comes from one seeded generator, so a seed gives the same texts (tracing does not
draw from it).
"""

from __future__ import annotations

import torch

from zonkey.core.contracts.outputs import SampleResult
from zonkey.core.generate.descent import ProgressFn, decode_down, descend
from zonkey.core.generate.prior import prior_level, sample_with_prior
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.stitching import stitch, truncate

__all__ = ["ProgressFn", "SampleResult", "decode_down", "descend", "sample", "stitch", "truncate"]

def _texts(pieces: list[bytes]) -> list[str]:
    return [p.decode("utf-8", errors="replace") for p in pieces]


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
            from the level's own per-segment denoiser.
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
    top = len(model.levels) - 1 if level is None else level
    if not 0 <= top < len(model.levels):
        raise ValueError(f"level {top} does not exist (the model has {len(model.levels)} level(s))")
    for name, v in (("n", n), ("steps", steps), ("segments", segments)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1 (got {v})")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    with_prior = None if per_segment else prior_level(model, level)
    if with_prior is not None:
        return sample_with_prior(model, n, level=with_prior, steps=steps, length=cfg.length if length is None else length,
                                 eta=cfg.eta, epsilon=epsilon, generator=gen, progress=progress, trace=trace)
    lvl = model.levels[top]
    doc = torch.arange(n, device=device).repeat_interleave(segments)  # (s,) sample of each top latent
    z = lvl.objective.prior(n * segments, lvl.latent_dim, device=device, generator=gen)  # (s, k·d)
    sigmas = torch.linspace(cfg.sigma_max, cfg.sigma_min, steps + 1).tolist()
    traces: list[list[str]] = []
    for i, (a, b) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        z, out = lvl.objective.step(z, a, b, lvl.denoise, lvl.compress)
        if trace:
            pieces = decode_down(model, top, out.x_hat, out.log_existence, doc, n, steps=0, sigma=0.0,
                                 epsilon=epsilon, generator=None)
            traces.append(_texts(pieces))
        if progress is not None:
            progress(i + 1, steps)
    out = lvl.denoise(z, z.new_zeros(z.shape[0]))
    pieces = decode_down(model, top, out.x_hat, out.log_existence, doc, n, steps=cfg.level_steps,
                         sigma=cfg.level_sigma, epsilon=epsilon, generator=gen)
    return SampleResult(texts=_texts(pieces), lengths=[len(p) for p in pieces], trace=traces,
                        sigmas=sigmas[:-1] if trace else [], raw=pieces)

