"""Gold boundaries and their scoring.

Word and sentence starts of a byte batch, and precision / recall / F1 of predicted boundaries
against them (``zonkey eval``'s boundary figures and the trainer's cheap per-batch boundary
statistics; measurement only, nothing here reaches the model).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CONVENTIONS", "BoundaryCounter", "SENTENCE_END", "WHITESPACE", "bos_entropy", "boundary_stats",
           "convention", "gold_boundaries", "sentence_starts"]

WHITESPACE = (9, 10, 11, 12, 13, 32)
SENTENCE_END = (46, 33, 63)  # . ! ?

#: the two ways a splitter can mark word edges (the gold masks of :func:`gold_boundaries`)
CONVENTIONS = {"word": "a BOS on each word's first byte", "space": "a BOS on the whitespace before each word"}


def convention(f1: dict[str, float]) -> str:
    """The convention a model follows: the one of ``word`` and ``space`` it scores higher under.

    Ties go to ``word``. Its F1 under the other says nothing about it and is not reported beside it.

    Args:
        f1: ``{"word": F1, "space": F1}``.
    """
    return "space" if f1.get("space", 0.0) > f1.get("word", 0.0) else "word"


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
    """(b, n) bool mask widened by ``tol`` positions on both sides."""
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
        """Count one batch of predictions against gold boundaries under ``name``.

        A boundary within ``tol`` positions of one on the other side counts as a match.

        Args:
            name: the figure the counts add to.
            pred: (b, n) bool predicted boundaries.
            gold: (b, n) bool gold boundaries.
            tol: positions a match may be off by.
        """
        tp_p = int((pred & _dilate(gold, tol)).sum())  # predicted boundaries near a gold one
        tp_g = int((gold & _dilate(pred, tol)).sum())  # gold boundaries near a predicted one
        c = self.counts.setdefault(name, [0, 0, 0, 0])
        c[0] += tp_p
        c[1] += int(pred.sum())
        c[2] += tp_g
        c[3] += int(gold.sum())

    def result(self) -> dict[str, dict[str, float]]:
        """Per name ``{p, r, f1}``, rounded to 4 digits (0.0 where a count is empty)."""
        out = {}
        for name, (tp_p, n_pred, tp_g, n_gold) in self.counts.items():
            p = tp_p / n_pred if n_pred else 0.0
            r = tp_g / n_gold if n_gold else 0.0
            f = 2 * p * r / (p + r) if p + r else 0.0
            out[name] = {"p": round(p, 4), "r": round(r, 4), "f1": round(f, 4)}
        return out


def boundary_stats(p_bos: Tensor, tokens: Tensor, valid: Tensor) -> dict[str, float]:
    """Cheap boundary statistics of one batch.

    Logged by the trainer; measurement only, nothing here reaches the model: strict F1 of
    ``p_bos > 0.5`` against both gold variants, and the mean BOS probability at gold word edges
    (the better-aligned variant) versus at all other positions after the first.
    """
    gold = gold_boundaries(tokens, valid)
    pred = (p_bos > 0.5) & valid
    pred[:, 0] = False
    bc = BoundaryCounter()
    for name, g in gold.items():
        bc.add(name, pred, g)
    out: dict[str, float] = {f"{name}_f1": v["f1"] for name, v in bc.result().items()}
    rest = valid.clone()
    rest[:, 0] = False
    edge_means = []
    for g in gold.values():
        edge_means.append(float(p_bos[g].mean()) if bool(g.any()) else 0.0)
        rest &= ~g
    out["p_bos_edge"] = max(edge_means)
    out["p_bos_other"] = float(p_bos[rest].mean()) if bool(rest.any()) else 0.0
    return out


def bos_entropy(p_bos: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of binary entropies (nats) of p_bos (b, n) over real positions after the first, and their count."""
    mask = valid.clone()
    mask[:, 0] = False
    p = p_bos.clamp(1e-6, 1 - 1e-6)
    h = -(p * p.log() + (1 - p) * (1 - p).log())
    return (h * mask).sum(), mask.sum()


def sentence_starts(tokens: Tensor, valid: Tensor) -> Tensor:
    """(b, n) bool: first byte of every word that follows ``.``, ``!`` or ``?`` and whitespace."""
    ws = torch.isin(tokens, torch.tensor(WHITESPACE, device=tokens.device))
    end = torch.isin(tokens, torch.tensor(SENTENCE_END, device=tokens.device))
    word = gold_boundaries(tokens, valid)["word"]
    b, n = tokens.shape
    idx = torch.arange(n, device=tokens.device).expand(b, n)
    last_non_ws = torch.where(~ws & valid, idx, torch.full_like(idx, -1)).cummax(1).values  # last non-ws at <= i
    prev = torch.cat([torch.full_like(last_non_ws[:, :1], -1), last_non_ws[:, :-1]], dim=1)  # before i
    prev_is_end = torch.gather(end, 1, prev.clamp_min(0)) & (prev >= 0)
    return word & prev_is_end
