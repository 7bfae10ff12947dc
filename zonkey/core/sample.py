"""Generation from noise (§9.1), top-down.

At the top level a latent is drawn from N(0, I) on the sphere and denoised over T steps with the
level objective's own sampler step (decompress conditioned on the noise level, denoise, predict
existence, re-compress weighted by existence). The final decoded sequence is truncated where
existence < ε. Going down, every kept vector is a latent of the level below, decoded there with its
own short denoising loop from a small noise level, and the segments are joined in order (for now
by concatenating each segment's slots up to its existence cut: the `hard` stitching of §7). At
level 0 slots become bytes through the tied embedding table. All segments of a level are decoded in
one batched pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from zonkey.core.existence import kept_mask
from zonkey.core.inference import decode_bytes_from_slots
from zonkey.core.sphere import to_sphere


@dataclass
class SampleResult:
    texts: list[str]
    lengths: list[int] = field(default_factory=list)  # bytes per sample
    trace: list[list[str]] = field(default_factory=list)  # per top-level step: decoded texts (if traced)


@torch.no_grad()
def _decode_down(model: Any, level_idx: int, x: Tensor, keep: Tensor, steps: int, epsilon: float,
                 start_sigma: float, gen: torch.Generator) -> list[bytes]:
    """Decode kept slot vectors of ``level_idx`` (n, m, d) down to bytes per row."""
    if level_idx == 0:
        pred = decode_bytes_from_slots(x, model.table)  # (n, m)
        return [bytes(pred[i][keep[i]].tolist()) for i in range(pred.shape[0])]
    below = model.levels[level_idx - 1]
    rows, slots = keep.nonzero(as_tuple=True)
    z = to_sphere(x[rows, slots])  # (s, k·d_below): each kept vector is a latent of the level below
    if start_sigma > 0 and steps > 0:
        z = math.sqrt(1 - start_sigma) * z + math.sqrt(start_sigma) * torch.randn(z.shape, generator=gen, device=z.device)
        sig = torch.linspace(start_sigma, 0.0, steps + 1).tolist()
        for a, b in zip(sig[:-1], sig[1:]):
            z, _ = below.objective.step(z, a, b, below.denoise, below.compress)
    out = below.denoise(z, z.new_zeros(z.shape[0]))
    pieces = _decode_down(model, level_idx - 1, out.x_hat, kept_mask(out.log_existence, epsilon), steps, epsilon, start_sigma, gen)
    res: list[bytes] = [b"" for _ in range(x.shape[0])]
    for r, piece in zip(rows.tolist(), pieces):
        res[r] += piece
    return res


@torch.no_grad()
def sample(model: Any, n: int = 4, *, steps: Optional[int] = None, seed: int = 0, level: Optional[int] = None,
           epsilon: Optional[float] = None, trace: bool = False) -> SampleResult:
    """Generate ``n`` texts from noise, starting at ``level`` (default: the top level)."""
    model.eval()
    cfg = model.recipe.sample
    steps = cfg.steps if steps is None else steps
    epsilon = cfg.epsilon if epsilon is None else epsilon
    top = len(model.levels) - 1 if level is None else level
    if not 0 <= top < len(model.levels):
        raise ValueError(f"level {top} does not exist (the model has {len(model.levels)} levels)")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    lvl = model.levels[top]
    z = lvl.objective.prior(n, lvl.latent_dim, device=device, generator=gen)
    sigmas = torch.linspace(cfg.sigma_max, cfg.sigma_min, steps + 1).tolist()
    traces: list[list[str]] = []
    for a, b in zip(sigmas[:-1], sigmas[1:]):
        z, out = lvl.objective.step(z, a, b, lvl.denoise, lvl.compress)
        if trace:
            pieces = _decode_down(model, top, out.x_hat, kept_mask(out.log_existence, epsilon), cfg.level_steps, epsilon, 0.0, gen)
            traces.append([p.decode("utf-8", errors="replace") for p in pieces])
    out = lvl.denoise(z, z.new_zeros(n))
    pieces = _decode_down(model, top, out.x_hat, kept_mask(out.log_existence, epsilon), cfg.level_steps, epsilon, 0.1, gen)
    texts = [p.decode("utf-8", errors="replace") for p in pieces]
    return SampleResult(texts=texts, lengths=[len(p) for p in pieces], trace=traces)
