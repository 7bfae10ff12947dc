"""A level's training losses (§5.2, §8), computed on top of its encoding.

:class:`~zonkey.core.model.level.Level` keeps thin methods (:meth:`~zonkey.core.model.level.Level.losses`,
:meth:`~zonkey.core.model.level.Level.mlm_loss`) that call the functions here with the level as their first
argument; the functions read the level's components and recipe block and call its methods, so wrapping a
level's methods (profiling, tests) reaches the calls made from here as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import DecodeLossFn, LevelOutput, Segments, SplitOutput
from zonkey.core.nn.existence import log_existence_from_bos_logits
from zonkey.core.nn.losses import collapse_loss, contrastive_recon_loss, existence_bce, token_loss
from zonkey.core.nn.packing import keep_mask

if TYPE_CHECKING:
    from zonkey.core.model.level import Level


def level_losses(level: Level, x: Tensor, valid: Tensor, split: SplitOutput, z0: Tensor, *,
                 tokens: Tensor | None = None, table: Tensor | None = None, generator: torch.Generator | None = None,
                 scales: dict[str, float] | None = None) -> LevelOutput:
    """The level's loss terms on top of its encoding (:meth:`~zonkey.core.model.level.Level.encode`).

    Args:
        level: the level whose terms are computed.
        x: (b, n, d) the level's sequence.
        valid: (b, n) bool.
        split: the split of x.
        z0: (s, k·d) its segments' clean latents.
        tokens: (b, n) byte values (level 0 only: targets of the token loss).
        table: (256, d) tied byte embedding table on the sphere (level 0 only).
        generator: source of the objective's and the masked prediction's randomness.
        scales: curriculum multipliers of this level's terms (``{"diffusion": 0.5}``).

    Returns:
        the unweighted terms, their weighted sum, statistics, the clean decoding and the
        ``decode_loss`` closure the level above reads.
    """
    seg = split.segments
    w = level.cfg.losses
    scales = scales or {}
    # a curriculum that weighs both the objective's loss and the dirty reconstruction at 0 skips
    # their extra denoiser passes; the collapse term then sees the clean latents alone
    mixed = any(getattr(w, k) * scales.get(k, 1.0) != 0 for k in ("diffusion", "recon_dirty"))
    # under packing every slot-wise pass runs a segment at its length bucket (``cut``), and the
    # losses read only the slots in front of it (``keep``)
    cut = level.segment_cut(seg)
    keep = None if cut is None else keep_mask(cut, level.cfg.max_segment)
    packed = {} if cut is None else {"cut": cut}
    obj = level.objective(z0, level.denoise, level.compress, generator=generator, clean_only=not mixed, **packed)
    terms: dict[str, Tensor] = {"diffusion": obj.loss} if mixed else {}
    stats: dict[str, float] = {}
    r = obj.dirty_rows
    sel = (lambda t: t) if r is None else (lambda t: t[r])
    if level.index == 0:
        assert tokens is not None and table is not None
        targets = tokens[seg.doc[:, None], seg.positions]  # (s, m)
        shares = byte_weighted(level, seg.shares, targets)
        terms["token"], correct = level_token_loss(level, obj.clean.x_hat, targets, table, shares, keep)
        if obj.dirty is not None:
            terms["recon_dirty"], _ = level_token_loss(level, obj.dirty.x_hat, sel(targets), table, sel(shares),
                                                       None if keep is None else sel(keep))
        own = seg.own_span
        stats["train_byte_acc"] = float((correct & own).sum()) / max(int(own.sum()), 1)
    else:
        kept_shares = seg.shares if keep is None else seg.shares * keep
        terms["recon_clean"], correct = contrastive_recon_loss(obj.clean.x_hat, seg.doc, seg.positions, kept_shares,
                                                              x, valid, same_tol=level.same_tol)
        if obj.dirty is not None:
            terms["recon_dirty"], _ = contrastive_recon_loss(obj.dirty.x_hat, sel(seg.doc), sel(seg.positions),
                                                             sel(kept_shares), x, valid,
                                                             same_tol=level.same_tol)
        own = seg.own_span
        stats["train_recon_acc"] = float((correct & own).sum()) / max(int(own.sum()), 1)
    if keep is not None:
        stats["packed_slots"] = float(keep.sum()) / max(keep.numel(), 1)
    if w.mlm > 0:
        # through the level's method, so a wrapper on it (the profiler's) sees this call
        terms["mlm"] = level.mlm_loss(seg, x, valid, generator, cut=cut)
    if level.stitcher is not None and level.stitcher.has_losses and (w.stitch_offset or w.stitch_overlap):
        # the stitcher's own terms, given the true offsets (§7.1), on the clean decoded segments
        st = level.stitcher(obj.clean.x_hat, obj.clean.log_existence, seg.doc, seg.n_docs, true_starts=seg.start)
        terms.update(st.losses)
    tail = level.packing_tail
    terms["bos"] = existence_bce(obj.clean.log_existence, seg.log_existence, keep, tail)
    if obj.clean.rough_bos_logits is not None:
        terms["bos"] = terms["bos"] + existence_bce(log_existence_from_bos_logits(obj.clean.rough_bos_logits),
                                                    seg.log_existence, keep, tail)
    rate = getattr(level.splitter, "target_rate", None)
    if rate is not None:
        # penalised on both sides: the rate stays close to its target, reconstruction picks the places
        terms["avg_bos"] = ((split.avg_bos - rate) / rate).pow(2)
    terms["long"] = split.p_long
    terms["short"] = split.p_short
    docs = seg.doc if obj.dirty_rows is None else seg.doc[obj.dirty_rows]
    terms["collapse"] = collapse_loss(z0, seg.doc) + sum((collapse_loss(z, docs) for z in obj.extra_latents),
                                                         z0.new_zeros(()))
    weights = {k: getattr(w, k) * scales.get(k, 1.0) for k in terms}
    loss = sum((weights[k] * v for k, v in terms.items() if weights[k] != 0), z0.new_zeros(()))
    stats["segments"] = float(seg.num)
    stats["avg_bos"] = float(split.avg_bos.detach())
    stats["mean_segment"] = float(valid.sum()) / max(seg.num, 1)
    return LevelOutput(split=split, latents=z0, terms=terms, loss=loss, stats=stats, decoded=obj.clean.x_hat,
                       decode_loss=decode_loss_fn(level, seg, x, valid, tokens, table, cut))


def mlm_loss(level: Level, seg: Segments, x: Tensor, valid: Tensor, generator: torch.Generator | None = None,
             rate: float = 0.15, cut: Tensor | None = None) -> Tensor:
    """Masked prediction (§5.2), a scalar loss.

    About ``rate`` of the real slots, drawn with a bias toward high existence, are swapped for the
    level's learned mask vector; from the compressor's state at each such slot the level's head has
    to single out the original vector among every input vector of the batch (2·atanh(cos) logits,
    no false negatives), each target weighted by its existence share.

    Args:
        level: the level (its compressor has slot states, which its constructor checks).
        seg: the level's segments.
        x: (b, n, d) the level's sequence (the candidates).
        valid: (b, n) bool.
        generator: source of the masking draws.
        rate: the share of real slots masked.
        cut: (s,) length buckets (``model.packing``): slots from a segment's cut on are left out.
    """
    e = seg.log_existence.detach().exp() * seg.valid  # (s, m)
    prob = (rate * e / e.sum().clamp_min(1e-8) * seg.valid.sum()).clamp(max=1.0)
    masked = (torch.rand(prob.shape, device=prob.device, generator=generator) < prob) & seg.valid
    if cut is not None:
        masked = masked & keep_mask(cut, masked.shape[1])
    if not bool(masked.any()):
        return x.new_zeros(())
    inp = torch.where(masked[..., None], level.mask_vector.expand_as(seg.vectors), seg.vectors)
    _, states = level.compress_states(inp, seg.log_existence, cut=cut)  # (s, m, d)
    pred = level.mlm_head(states)
    loss, _ = contrastive_recon_loss(pred, seg.doc, seg.positions, seg.shares * masked, x, valid,
                                     same_tol=level.same_tol)
    return loss


def byte_weighted(level: Level, weights: Tensor, targets: Tensor) -> Tensor:
    """Level 0's token-loss weights: ``weights`` (existence shares), times each target byte's balance weight.

    Without ``model.byte_loss.balance`` the weights come back unchanged.
    """
    if not level.byte_loss.balance:
        return weights
    return weights * level.byte_weights[targets]


def level_token_loss(level: Level, x_hat: Tensor, targets: Tensor, table: Tensor, weights: Tensor,
                     keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """Level 0's byte loss (:func:`~zonkey.core.nn.losses.token_loss`) under its ``byte_loss.focal`` setting.

    Given ``keep`` (s, m), only the slots it marks are scored, and the logits against the byte table
    are computed for those slots alone; the per-slot hits come back in (s, m), False elsewhere.
    """
    if keep is None:
        return token_loss(x_hat, targets, table, weights, level.byte_loss.focal)
    loss, hit = token_loss(x_hat[keep][:, None], targets[keep][:, None], table, weights[keep][:, None],
                           level.byte_loss.focal)
    correct = torch.zeros_like(keep)
    correct[keep] = hit[:, 0]
    return loss, correct


def decode_loss_fn(level: Level, seg: Segments, x: Tensor, valid: Tensor, tokens: Tensor | None,
                   table: Tensor | None, cut: Tensor | None = None) -> DecodeLossFn:
    """The closure with which the level above scores the latents it decodes into this level's segments.

    The closure takes latents z (r, k·d) and the segments ``rows`` (r,) they stand for, and returns
    (loss, top-1 accuracy on the own spans). Its loss is this level's clean reconstruction of those
    segments' targets plus the existence BCE against their true lengths; no gradient reaches the
    targets or their weights.
    """

    def loss_fn(z: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        rows_cut = None if cut is None else cut[rows]
        keep = None if rows_cut is None else keep_mask(rows_cut, level.cfg.max_segment)
        out = level.denoise(z, z.new_zeros(z.shape[0]), cut=rows_cut)
        own = seg.own_span[rows]
        w = seg.shares[rows].detach()
        if level.index == 0:
            assert tokens is not None and table is not None  # the training pass of level 0 gives both
            targets = tokens[seg.doc[rows][:, None], seg.positions[rows]]
            loss, correct = level_token_loss(level, out.x_hat, targets, table, byte_weighted(level, w, targets), keep)
        else:
            loss, correct = contrastive_recon_loss(out.x_hat, seg.doc[rows], seg.positions[rows],
                                                   w if keep is None else w * keep, x, valid,
                                                   same_tol=level.same_tol)
        loss = loss + existence_bce(out.log_existence, seg.log_existence[rows].detach(), keep, level.packing_tail)
        acc = (correct & own).sum() / own.sum().clamp_min(1)
        return loss, acc.detach()

    return loss_fn
