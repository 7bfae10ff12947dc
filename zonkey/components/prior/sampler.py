"""Drawing latent sequences from a sequence prior: the diffusion sampler and its vocabulary-head modes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from zonkey.core.nn import schedule
from zonkey.core.nn.sphere import to_sphere

if TYPE_CHECKING:
    from zonkey.components.prior.sequence import SequencePrior

SamplerMode = Literal["mean", "draw", "commit"]
CommitOrder = Literal["confidence", "random"]


@torch.no_grad()
def draw(prior: SequencePrior, b: int, n: int, *, steps: int, eta: float = 0.0, generator: torch.Generator | None = None,
         known_z: Tensor | None = None, known: Tensor | None = None, valid: Tensor | None = None,
         device: torch.device | str = "cpu", on_step: Callable[[int, Tensor], None] | None = None,
         mode: SamplerMode = "mean", temperature: float = 1.0, other_scale: float = 1.0,
         order: CommitOrder = "confidence") -> Tensor:
    """Draw latent sequences, optionally with some positions given.

    Each step takes a clean estimate of the unknown positions and moves them to the next noise
    level (a DDIM step, or ancestral with ``eta`` 1). With the bank head, ``mode`` says what
    the estimate is:

    * ``mean``: the expectation of the head's distribution (score interpolation); the last
      step commits every position to its most probable class;
    * ``draw``: one entry drawn from the distribution (at ``temperature``) at every step;
      the last draw is the output;
    * ``commit``: as ``mean``, and after step t the most confident of the still unknown
      positions (by the probability of an entry drawn for them; "other" never commits
      early) are fixed to their drawn entry and given as clean context from then on, so that
      about ``(t + 1)/steps`` of each row is fixed; the last step fixes the rest to their
      most probable class. ``order`` says which positions are fixed first: ``confidence`` the
      most confident (the probability of their drawn entry), ``random`` a uniformly random
      order, the ancestral order of a masked model (exact for a perfect model, and unbiased
      towards the easy, frequent words that confidence fixes first).

    The MSE head has only its estimate: every mode steps with it.

    Args:
        prior: the sequence prior (its head, estimate and schedule).
        b: rows.
        n: positions.
        steps: sampler steps (u from 1 to 0, shifted schedule).
        eta: 0 deterministic steps, 1 ancestral (fresh noise each step).
        generator: source of the noise.
        known_z: (b, n, D) clean latents at the known positions (ignored elsewhere).
        known: (b, n) bool, the given positions.
        valid: (b, n) bool real positions (default all).
        device: where the latents are drawn.
        on_step: called as ``on_step(i, estimate)`` after every step with the clean estimate
            (b, n, D), known positions filled in.
        mode: ``mean``, ``draw`` or ``commit`` (above).
        temperature: of the draws (``draw``, ``commit``).
        other_scale: multiplies the probability of the "other" class (segments outside the
            bank) wherever the sampler reads the distribution; 1 samples as the model says,
            below 1 draws fewer of them (they stay possible).
        order: ``commit``'s order of fixing positions: ``confidence`` or ``random`` (above).

    Returns:
        (b, n, D) latents on the sphere; known positions are exactly ``known_z``.
    """
    shape = (b, n, prior.dim)
    given = torch.zeros(b, n, dtype=torch.bool, device=device) if known is None else known
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=device)
    known = given.clone()
    base = known_z.clone() if known_z is not None else torch.zeros(shape, device=device)
    z = torch.randn(shape, device=device, generator=generator)
    sig = schedule.sampler_sigmas(steps, prior.cfg.shift)
    bank = prior.bank
    free = (valid & ~given).sum(1)  # (b,) positions each row draws
    cond = None
    z_hat = z
    logits = other = None
    for i, (s, s_next) in enumerate(zip(sig[:-1], sig[1:], strict=True)):
        inp = torch.where(known[..., None], base, z)
        sigma = torch.full((b,), s, device=device)
        z_hat, logits, other = prior.predict(inp, sigma, known, valid, cond)
        if bank is not None and logits is not None and other is not None and other_scale != 1.0:
            logits = logits.clone()
            logits[..., -1] += math.log(other_scale)
            z_hat = bank.estimate(logits, other).masked_fill(~valid[..., None], 0.0)
        if bank is not None and logits is not None and other is not None and mode != "mean":
            drawn, cls = bank.draw(logits, other, temperature, generator)
            if mode == "draw":
                z_hat = drawn
            else:
                if order == "random":
                    p = torch.rand(cls.shape, device=device, generator=generator)
                else:
                    p = torch.softmax(logits.float() / temperature, dim=-1).gather(-1, cls[..., None])[..., 0]
                open_ = valid & ~known & (cls < bank.size)
                conf = p.masked_fill(~open_, -1.0)
                quota = torch.ceil(free.float() * (i + 1) / steps).long() - (known & ~given).sum(1)
                ranked = conf.argsort(dim=1, descending=True)
                rank = torch.empty_like(ranked).scatter_(1, ranked, torch.arange(n, device=device).expand(b, n))
                take = open_ & (rank < quota[:, None])
                base = torch.where(take[..., None], drawn, base)
                known = known | take
        z_hat = torch.where(known[..., None], base, z_hat)
        cond = z_hat
        if on_step is not None:
            on_step(i, z_hat)
        z = schedule.step(z, z_hat, s, s_next, eta=eta, generator=generator)
    final = z_hat
    if bank is not None and logits is not None and other is not None and mode != "draw":
        final, _ = bank.commit(logits, other)
    return torch.where(known[..., None], base, to_sphere(final))
