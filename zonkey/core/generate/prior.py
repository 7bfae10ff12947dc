"""Generation and infilling through a level's sequence prior (§9.1, §9.2).

A level with a ``prior`` models the order of its latents: a sample is a sequence of ``length``
level-L latents drawn jointly from the prior (every position attends to every other, so the
pieces of a sample are not independent) and decoded down the levels to bytes (``descend``). An
infill encodes the prefix and the suffix to level-L latents, gives them to the prior as known
positions with ``g`` unknown positions between them, draws the gap, and decodes only the gap:
the prefix and suffix come back byte for byte. Every gap length of the searched range runs in one
batch. The kept candidate is the most likely filled row where the prior scores rows (the context
prior's pseudo-log-likelihood, Σ_i log p(segment_i | the others), which also charges every extra
position); otherwise the one whose filled sequence best explains its context (the prior's clean
estimate of the context, noised, with the gap given, compared by cosine with the true context
latents: a score in [−1, 1]).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from zonkey.core.contracts.outputs import InfillResult, SampleResult
from zonkey.core.contracts.protocols import Prior
from zonkey.core.generate.descent import ProgressFn, descend
from zonkey.core.model.inference import encode_to_level
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn import schedule

SCORE_TIMES = (0.35, 0.55, 0.75)  # schedule times at which a candidate's context agreement is measured
#: an infill takes the most probable fill (MAP), not a draw: the commit sampler with argmax commits,
#: the most confident gap position first, each then given to the rest as context
GREEDY = 1e-4


def prior_level(model: ZonkeyModel, level: int | None = None) -> int | None:
    """The level that generates with its sequence prior.

    A prior with a vocabulary head whose bank was never built (a run stopped before the prior's
    ``lr_start``) has not trained: it does not count.

    Args:
        model: the model.
        level: the level asked for (it is used when it has a trained prior); None: the highest
            level with one.

    Returns:
        that level, or None when it (or every level) has no trained prior.
    """
    def usable(i: int) -> bool:
        prior = model.levels[i].prior
        return prior is not None and (prior.bank is None or prior.bank.ready)

    if level is not None:
        return level if usable(level) else None
    with_prior = [i for i in range(len(model.levels)) if usable(i)]
    return with_prior[-1] if with_prior else None


@torch.no_grad()
def sample_with_prior(model: ZonkeyModel, n: int, *, level: int, steps: int, length: int, eta: float,
                      epsilon: float, generator: torch.Generator, progress: ProgressFn | None = None,
                      trace: bool = False) -> SampleResult:
    """``n`` texts, each ``length`` level-``level`` latents drawn jointly and decoded to bytes.

    Args:
        model: the model.
        n: texts.
        level: a level with a prior.
        steps: prior sampler steps.
        length: latents per text.
        eta: 0 deterministic steps, 1 ancestral.
        epsilon: truncation threshold of the decoding.
        generator: the one source of noise.
        progress: called as ``progress(done, total)`` after every prior step.
        trace: record, at every step, the texts decoded from the current clean estimate.

    Returns:
        the texts with their lengths and raw bytes.
    """
    prior = model.levels[level].prior
    assert prior is not None
    device = model.table.device
    valid = torch.ones(n, length, dtype=torch.bool, device=device)
    traces: list[list[str]] = []
    sigmas = schedule.sampler_sigmas(steps, prior.cfg.shift)

    def on_step(i: int, z_hat: Tensor) -> None:
        if trace:  # a clean decode of the current estimate; draws no noise
            clean = descend(model, level + 1, z_hat, valid, steps=0, sigma=0.0, epsilon=epsilon, generator=None)
            traces.append([p.decode("utf-8", errors="replace") for p in clean])
        if progress is not None:
            progress(i + 1, steps)

    cfg = model.recipe.sample
    z = prior.sample(n, length, steps=steps, eta=eta, generator=generator, device=device, on_step=on_step,
                     mode=cfg.mode, temperature=cfg.temperature, other_scale=cfg.other_scale,
                     order=cfg.commit_order)
    pieces = descend(model, level + 1, z, valid, steps=cfg.level_steps, sigma=cfg.level_sigma, epsilon=epsilon,
                     generator=generator)
    bank = prior.bank
    other = float((bank.classes(z) == bank.size).float().mean()) if bank is not None else None
    return SampleResult(texts=[p.decode("utf-8", errors="replace") for p in pieces],
                        lengths=[len(p) for p in pieces], raw=pieces, trace=traces,
                        sigmas=sigmas[:-1] if trace else [], other_share=other)


@torch.no_grad()
def infill_with_prior(model: ZonkeyModel, pairs: Sequence[tuple[str, str]], *, level: int, gaps: Sequence[int],
                      steps: int, eta: float, epsilon: float, generator: torch.Generator,
                      progress: ProgressFn | None = None) -> list[InfillResult]:
    """Fill the gap of every (prefix, suffix) pair with the level's sequence prior.

    Args:
        model: the model.
        pairs: (prefix, suffix) texts; either may be empty (a beginning, a continuation).
        level: a level with a prior.
        gaps: the gap lengths (level-``level`` positions) searched.
        steps: the prior's sampler steps.
        eta: 0 deterministic steps, 1 ancestral.
        epsilon: truncation threshold of the decoding.
        generator: the one source of noise.
        progress: called as ``progress(done, total)`` per pair scored.

    Returns:
        one result per pair: prefix + the kept candidate's gap + suffix, and every candidate.
    """
    lv = model.levels[level]
    prior = lv.prior
    assert prior is not None
    device = model.table.device
    cap = prior.cfg.max_len
    # a prefix is encoded without its trailing whitespace: the gap's first segment carries its own space
    pre = encode_to_level(model, [p.rstrip() for p, _ in pairs], level + 1)
    suf = encode_to_level(model, [s for _, s in pairs], level + 1)
    rows: list[tuple[int, int, int, int]] = []  # (pair, gap, prefix kept, suffix kept)
    for i in range(len(pairs)):
        for g in gaps:
            room = max(cap - g, 0)
            q = min(suf[i].shape[0], room // 2 if pre[i].shape[0] > room // 2 else room - pre[i].shape[0])
            p = min(pre[i].shape[0], room - q)
            rows.append((i, g, p, q))
    n = max(p + g + q for _, g, p, q in rows)
    dim = lv.latent_dim
    known_z = torch.zeros(len(rows), n, dim, device=device)
    known = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    valid = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    gap_mask = torch.zeros(len(rows), n, dtype=torch.bool, device=device)
    for r, (i, g, p, q) in enumerate(rows):
        if p:
            known_z[r, :p] = pre[i][pre[i].shape[0] - p:]
        if q:
            known_z[r, p + g:p + g + q] = suf[i][:q]
        known[r, :p] = True
        known[r, p + g:p + g + q] = True
        valid[r, :p + g + q] = True
        gap_mask[r, p:p + g] = True
    cfg = model.recipe.sample
    z = prior.sample(len(rows), n, steps=steps, eta=eta, generator=generator, known_z=known_z, known=known,
                     mode="commit", temperature=GREEDY, other_scale=cfg.other_scale,
                     valid=valid, device=device)
    # a prior that scores whole rows (the context prior's pseudo-log-likelihood) ranks the candidates
    # by how likely the filled row is; any other by how well the filled gap explains its context
    row_score = getattr(prior, "row_log_likelihood", None)
    scores = row_score(z, valid) if row_score is not None else _agreement(prior, z, known, valid, generator)
    gap_z = torch.zeros(len(rows), max(gaps), dim, device=device)
    gap_valid = torch.zeros(len(rows), max(gaps), dtype=torch.bool, device=device)
    for r, (_, g, p, _) in enumerate(rows):
        gap_z[r, :g] = z[r, p:p + g]
        gap_valid[r, :g] = True
    pieces = descend(model, level + 1, gap_z, gap_valid, steps=cfg.level_steps, sigma=cfg.level_sigma,
                     epsilon=epsilon, generator=generator)
    results = []
    for i, (prefix, suffix) in enumerate(pairs):
        mine = [r for r, row in enumerate(rows) if row[0] == i]
        cands = []
        for r in mine:
            raw = pieces[r]
            text = raw.decode("utf-8", errors="replace")
            if prefix[-1:].isspace() or not prefix:
                text = text.lstrip()  # the prefix brings its own space (or there is none to keep)
            cands.append({"gap_len": rows[r][1], "gap": text, "bytes": len(raw), "score": float(scores[r])})
        best = max(range(len(mine)), key=lambda c: cands[c]["score"])
        r = mine[best]
        _, g, p, q = rows[r]
        gap = cands[best]["gap"]
        results.append(InfillResult(
            text=prefix + gap + suffix, gap=gap, score=cands[best]["score"], gap_len=g, level=level,
            candidates=sorted(cands, key=lambda c: -c["score"]), prefix_vectors=pre[i], suffix_vectors=suf[i],
            slots=z[r, :p + g + q], raw=gap.encode("utf-8")))
        if progress is not None:
            progress(i + 1, len(pairs))
    return results


def _agreement(prior: Prior, z: Tensor, known: Tensor, valid: Tensor,
               generator: torch.Generator) -> Tensor:
    """How well each filled sequence explains its context.

    The context positions are noised at a few schedule times while the filled gap is given, and
    the prior's clean estimate of them is compared with the true context latents (mean cosine over
    context positions and times).

    Args:
        prior: the level's prior.
        z: (R, n, D) filled sequences.
        known: (R, n) the context positions.
        valid: (R, n) real positions.
        generator: source of the noise.

    Returns:
        (R,) scores in [−1, 1]; a row with no context scores 0.
    """
    ctx = known & valid
    given = valid & ~known  # the filled gap is what is given now
    total = torch.zeros(z.shape[0], device=z.device)
    for u in SCORE_TIMES:
        sigma = schedule.sigma_at(torch.full((z.shape[0],), u, device=z.device), prior.cfg.shift)
        eps = torch.randn(z.shape, device=z.device, generator=generator)
        zt = torch.where(given[..., None], z, schedule.add_noise(z, sigma, eps))
        est = prior(zt, sigma, given, valid)
        cos = F.cosine_similarity(est, z, dim=-1)  # (R, n)
        total = total + (cos * ctx).sum(1) / ctx.sum(1).clamp_min(1)
    return total / len(SCORE_TIMES)
