"""Loss terms of one level (§8).

Each returns an unweighted scalar; the level multiplies by the recipe's weight and sums (never
averages over however many terms exist).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from zonkey.core.nn.sphere import atanh_cos_logits


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """Σ w·v / Σ w (0 when all weights are 0)."""
    return (values * weights).sum() / weights.sum().clamp_min(1e-8)


def token_loss(x_hat: Tensor, targets: Tensor, table: Tensor, weights: Tensor,
               focal: float = 0.0) -> tuple[Tensor, Tensor]:
    """Level-0 byte cross-entropy with tied logits 2·atanh(cos(x̂, E_v)) (§8 "Token Loss").

    Args:
        x_hat: (s, m, d) denoised slots.
        targets: (s, m) byte values.
        table: (v, d) embedding table.
        weights: (s, m) existence shares (0 on padding).
        focal: γ of a focal loss (Lin et al. 2017): each byte's cross-entropy is scaled by
            (1 − p_target)^γ, so bytes already decoded with confidence weigh less and the rare ones
            (capitals, digits, punctuation: most of the errors) weigh more. 0 is the plain loss.

    Returns:
        (loss, per-slot correctness (s, m) bool from the argmax).
    """
    logits = atanh_cos_logits(x_hat, table)  # (s, m, v)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    if focal > 0:
        ce = ce * (1.0 - torch.exp(-ce)).clamp_min(1e-6).pow(focal)
    return weighted_mean(ce, weights), logits.argmax(-1) == targets


def byte_balance_weights(counts: Tensor, alpha: float, cap: float) -> Tensor:
    """Class-balanced byte weights (Cui et al. 2019 use the same idea with an effective number).

    w_v ∝ f_v^(−α) with f_v the frequency of byte v (add-one smoothed), normalised so that the mean
    weight over the counted bytes is 1, then capped at ``cap``.

    Args:
        counts: (256,) byte counts of the training split.
        alpha: the exponent α; 0 gives all ones.
        cap: the largest weight.

    Returns:
        (256,) float32 weights.
    """
    c = counts.double()
    if alpha == 0 or c.sum() == 0:
        return torch.ones_like(c, dtype=torch.float32)
    f = (c + 1) / (c + 1).sum()
    w = f.pow(-alpha)
    w = w / (f * w).sum()  # the frequency-weighted mean is 1: the loss keeps its scale
    return w.clamp(max=cap).float()


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x <= 0, stable on both ends."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def existence_bce(pred_log_e: Tensor, target_log_e: Tensor, keep: Tensor | None = None,
                  tail: bool = False) -> Tensor:
    """BCE of predicted existence against the splitter's existence profile, minus the target's entropy.

    So the minimum is 0. Both are (s, m) in log space; the target is not differentiated. With
    ``keep`` (s, m) bool (packing: each row's leading slots) only those slots count, still divided
    by s·m, so each slot weighs what it weighs without packing. With ``tail`` a row's last kept
    slot also stands in for the slots after it that were not computed: its term counts once for
    each of them (existence only falls along a segment, so theirs is at most its own).
    """
    t = target_log_e.detach().exp()
    p_log, q_log = pred_log_e.clamp_min(-30.0), log1mexp(pred_log_e.clamp_min(-30.0))
    bce = -(t * p_log + (1 - t) * q_log)
    tl, tq = target_log_e.detach().clamp_min(-30.0), log1mexp(target_log_e.detach().clamp_min(-30.0))
    ent = -(t * tl + (1 - t) * tq)
    if keep is None:
        return (bce - ent).mean()
    term = torch.where(keep, bce - ent, 0.0)
    if tail:
        m = keep.shape[1]
        cut = keep.sum(dim=1)  # kept slots are a leading run
        last = (cut - 1).clamp_min(0)
        weight = torch.ones_like(term).scatter(1, last[:, None], (m - cut + 1).to(term.dtype)[:, None])
        term = term * weight
    return term.sum() / keep.numel()


def collapse_loss(z: Tensor, doc: Tensor, max_rows: int = 256) -> Tensor:
    """Mean squared cosine between latents of different documents (§8 "Collapse Prevention").

    Args:
        z: (s, D) latents.
        doc: (s,) document index.
        max_rows: at most this many latents (evenly spaced) are compared.

    Returns:
        The scalar loss (0 when every latent is of one document).
    """
    if z.shape[0] > max_rows:
        idx = torch.linspace(0, z.shape[0] - 1, max_rows, device=z.device).long()
        z, doc = z[idx], doc[idx]
    zn = F.normalize(z, dim=-1)
    cos = zn @ zn.T
    other = doc[:, None] != doc[None, :]
    if not other.any():
        return z.new_zeros(())
    return cos.pow(2)[other].mean()


def contrastive_recon_loss(x_hat: Tensor, seg_doc: Tensor, positions: Tensor, weights: Tensor,
                           candidates: Tensor, cand_valid: Tensor, same_tol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Level >= 1 reconstruction (§8), contrastive over the level's input vectors of the batch.

    Every decoded slot must pick its own target vector among them, with 2·atanh(cos) logits.

    No false negatives: each document position appears once among the candidates (overlapping
    windows share their targets instead of duplicating them), and a candidate whose vector
    coincides with the target (the same lower-level unit elsewhere) is never a negative.

    Args:
        x_hat: (s, m, D) decoded slots.
        seg_doc: (s,) document of each segment.
        positions: (s, m) document position of each slot.
        weights: (s, m) existence shares (0 on padding).
        candidates: (b, n, D) the level's input sequence (targets, not differentiated here).
        cand_valid: (b, n) bool.
        same_tol: a candidate within this cosine distance of the target counts as the same unit.

    Returns:
        (weighted loss, (s, m) bool top-1 correctness).
    """
    b, n, dim = candidates.shape
    flat_index = torch.full((b * n,), -1, dtype=torch.long, device=x_hat.device)
    cv = cand_valid.flatten()
    flat_index[cv] = torch.arange(int(cv.sum()), device=x_hat.device)
    cands = candidates.flatten(0, 1)[cv].detach()  # (c, D)
    slot = weights > 0
    tgt = flat_index[(seg_doc[:, None] * n + positions)[slot]]  # (N,)
    pred = x_hat[slot]  # (N, D)
    logits = atanh_cos_logits(pred, cands)  # (N, c)
    cn = F.normalize(cands, dim=-1)
    same = (cn[tgt] @ cn.T) > 1 - same_tol  # (N, c)
    same[torch.arange(tgt.shape[0], device=tgt.device), tgt] = False
    logits = logits.masked_fill(same, float("-inf"))
    ce = F.cross_entropy(logits, tgt, reduction="none")  # (N,)
    correct = torch.zeros_like(slot)
    correct[slot] = logits.argmax(-1) == tgt
    return weighted_mean(ce, weights[slot]), correct
