"""Evaluation that turns the paper's qualitative claims into numbers, on the held-out split.

Level 0 (this module's first version):
 * ``recon_acc``: byte reconstruction accuracy at t = 0 — every byte of each segment's own span
   (start to next BOS) decoded from its clean latent and compared with the input;
 * ``recon_acc_noise``: the same after noising the latents to σ ∈ {0.1, 0.3, 0.5} and running the
   objective's sampler back to 0;
 * ``mean_segment_bytes``, ``segment_cv`` (std / mean of the own-span lengths), ``bos_entropy``
   (mean binary entropy of p_bos over real positions after the first);
 * ``boundary``: precision / recall / F1 of the deterministic BOS positions (document starts
   excluded) against word starts. Gold ``word``: a byte that is not whitespace after one that is;
   gold ``space``: a whitespace byte after one that is not (the whitespace starts the segment).
   ``*_tol1`` count a boundary within ±1 byte as a match. ``boundary_f1`` is the better strict F1.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from zonkey.core.data import Batch, ByteBatches
from zonkey.core.inference import decode_bytes_from_slots, denoise_from, split_batch

WHITESPACE = (9, 10, 11, 12, 13, 32)
NOISE_LEVELS = (0.1, 0.3, 0.5)


def gold_boundaries(tokens: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """(b, n) bool gold boundary masks ``word`` and ``space`` (position 0 excluded)."""
    ws = torch.isin(tokens, torch.tensor(WHITESPACE, device=tokens.device))
    prev = torch.cat([torch.ones_like(ws[:, :1]), ws[:, :-1]], dim=1)
    first = torch.zeros_like(ws)
    first[:, 0] = True
    word = ~ws & prev & valid & ~first
    space = ws & ~prev & valid & ~first
    return {"word": word, "space": space}


def _dilate(mask: Tensor, tol: int) -> Tensor:
    if tol == 0:
        return mask
    out = mask.clone()
    for k in range(1, tol + 1):
        out[:, k:] |= mask[:, :-k]
        out[:, :-k] |= mask[:, k:]
    return out


class BoundaryCounter:
    """Accumulates true/false positives and false negatives of boundary predictions."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def add(self, name: str, pred: Tensor, gold: Tensor, tol: int = 0) -> None:
        tp_p = int((pred & _dilate(gold, tol)).sum())  # predicted boundaries near a gold one
        tp_g = int((gold & _dilate(pred, tol)).sum())  # gold boundaries near a predicted one
        c = self.counts.setdefault(name, [0, 0, 0, 0])
        c[0] += tp_p
        c[1] += int(pred.sum())
        c[2] += tp_g
        c[3] += int(gold.sum())

    def result(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, (tp_p, n_pred, tp_g, n_gold) in self.counts.items():
            p = tp_p / n_pred if n_pred else 0.0
            r = tp_g / n_gold if n_gold else 0.0
            f = 2 * p * r / (p + r) if p + r else 0.0
            out[name] = {"p": round(p, 4), "r": round(r, 4), "f1": round(f, 4)}
        return out


def bos_entropy(p_bos: Tensor, valid: Tensor) -> Tensor:
    """Sum of binary entropies (nats) over real positions after the first, and their count."""
    mask = valid.clone()
    mask[:, 0] = False
    p = p_bos.clamp(1e-6, 1 - 1e-6)
    h = -(p * p.log() + (1 - p) * (1 - p).log())
    return (h * mask).sum(), mask.sum()


@torch.no_grad()
def evaluate_level0(model: Any, batches: Sequence[Batch] | ByteBatches, *, noise_levels: Sequence[float] = NOISE_LEVELS,
                    steps: int = 4, seed: int = 0, max_batches: Optional[int] = None, progress: Any = None) -> dict[str, Any]:
    """Level-0 metrics over batches of held-out text (see the module docstring)."""
    model.eval()
    device = next(model.parameters()).device
    level = model.levels[0]
    table = model.table
    gen = torch.Generator(device=device).manual_seed(seed)
    n_batches = len(batches) if max_batches is None else min(len(batches), max_batches)
    correct = {0.0: 0, **{s: 0 for s in noise_levels}}
    total = 0
    spans: list[Tensor] = []
    ent_sum, ent_n = 0.0, 0
    bc = BoundaryCounter()
    for i in range(n_batches):
        batch = (batches.batch(i) if isinstance(batches, ByteBatches) else batches[i]).to(device)
        split = split_batch(model, batch)
        seg = split.segments
        targets = batch.tokens[seg.doc[:, None], seg.positions]  # (s, m)
        own = seg.own_span
        z0 = level.compress(seg.vectors, seg.log_existence)
        total += int(own.sum())
        for sigma in correct:
            out = denoise_from(level, z0, sigma, steps, gen)
            pred = decode_bytes_from_slots(out.x_hat, table)
            correct[sigma] += int(((pred == targets) & own).sum())
        spans.append(seg.span.float())
        e, n = bos_entropy(split.p_bos, batch.valid)
        ent_sum += float(e)
        ent_n += int(n)
        pred_b = split.bos.clone()
        pred_b[:, 0] = False
        gold = gold_boundaries(batch.tokens, batch.valid)
        for name, g in gold.items():
            bc.add(name, pred_b, g, 0)
            bc.add(f"{name}_tol1", pred_b, g, 1)
        if progress is not None:
            progress(i + 1, n_batches)
    span = torch.cat(spans) if spans else torch.zeros(1)
    boundary = bc.result()
    return {
        "recon_acc": correct[0.0] / max(total, 1),
        "recon_acc_noise": {f"{s:g}": correct[s] / max(total, 1) for s in noise_levels},
        "mean_segment_bytes": float(span.mean()),
        "segment_cv": float(span.std() / span.mean()) if span.numel() > 1 else 0.0,
        "bos_entropy": ent_sum / max(ent_n, 1),
        "boundary": boundary,
        "boundary_f1": max(boundary.get("word", {}).get("f1", 0.0), boundary.get("space", {}).get("f1", 0.0)),
        "eval_bytes": total,
    }


def evaluate(model: Any, corpus: Any, *, batch_bytes: int, seed: int = 0, max_batches: Optional[int] = None,
             steps: int = 4, progress: Any = None) -> dict[str, Any]:
    """All metrics on the held-out split of ``corpus``."""
    batches = corpus.batches("heldout", seed=seed, batch_bytes=batch_bytes)
    res = evaluate_level0(model, batches, steps=steps, seed=seed, max_batches=max_batches, progress=progress)
    res["heldout_chunks"] = batches.num_chunks
    return res
