"""Evaluation that turns the paper's qualitative claims into numbers, on the held-out split.

Level 0:
 * ``recon_acc``: byte reconstruction accuracy at t = 0 — every byte of each segment's own span
   (start to next BOS) decoded from its clean latent and compared with the input;
 * ``recon_acc_noise``: the same after noising the latents to σ ∈ {0.1, 0.3, 0.5} and running the
   objective's sampler back to 0;
 * ``mean_segment_bytes``, ``segment_cv`` (std / mean of the own-span lengths), ``bos_entropy``
   (mean binary entropy of p_bos over real positions after the first);
 * ``boundary``: precision / recall / F1 of the deterministic BOS positions (document starts
   excluded) against word starts. Gold ``word``: a byte that is not whitespace after one that is;
   gold ``space``: a whitespace byte after one that is not (the whitespace starts the segment).
   ``*_tol1`` count a boundary within ±1 byte as a match. ``boundary_f1`` is the better strict F1,
   and ``boundary_convention`` names the convention it is under (``word`` or ``space``): a splitter
   follows one, and its F1 under the other is no measure of it.
 * ``length_acc``: share of segments whose decoded length (leading slots with existence >= 0.5
   from the denoiser's own BOS head, t = 0) equals the true span; ``roundtrip0_char_acc``
   (1 − edit distance / input bytes), ``roundtrip0_acc`` (strict, same offset) and
   ``roundtrip0_acc_aligned``: the text rebuilt from level-0 latents alone, every segment cut at
   its decoded length and concatenated. These separate level 0's own length errors
   from level 1's in ``roundtrip_acc``.

Every level l >= 1 (two or more levels), with keys ``l{l}_...``: ``l1_sentence_boundary`` /
``l1_sentence_f1`` (level-l BOS over the level-(l−1) segments against the segments holding a
sentence's first byte), ``l1_recon_acc`` (top-1 retrieval of each level-(l−1) latent from the
decoded level-l slots among the batch's), ``l1_length_acc`` (share of level-l segments whose
decoded count of level-(l−1) latents, leading slots with existence >= 0.5, equals the true one)
and ``roundtrip_acc`` (text → level-l latents → as many level-(l−1) latents as level l's
existence keeps → ... → bytes, byte by byte at the same offset, so one dropped byte or latent costs
everything after it) with ``roundtrip_acc_aligned`` beside it (matching bytes of the best
alignment, the longest common subsequence, over the longer of the two) and ``roundtrip_char_acc``, the headline figure:
1 − edit distance / input bytes (1 − CER), which charges a dropped, added or wrong byte one byte
wherever it falls (see :class:`~zonkey.core.evaluate.roundtrip.RoundTrip`). Level 1's round-trip keys have
no prefix (``roundtrip_char_acc``); level 2's are ``l2_roundtrip_char_acc`` and so on. Nothing in a
round trip is read from the input but the text itself: every count and length is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import LevelPass, ProgressFn
from zonkey.core.evaluate.roundtrip import RoundTrip, levenshtein
from zonkey.core.model.inference import decode_bytes_from_slots
from zonkey.core.model.network import ZonkeyModel, own_slot_rows
from zonkey.core.nn.boundaries import (
    CONVENTIONS,
    SENTENCE_END,
    WHITESPACE,
    BoundaryCounter,
    bos_entropy,
    boundary_stats,
    convention,
    gold_boundaries,
    sentence_starts,
)
from zonkey.core.nn.existence import kept_mask
from zonkey.core.nn.losses import contrastive_recon_loss
from zonkey.data import Batch, ByteBatches

__all__ = [
    "CONVENTIONS", "NOISE_LEVELS", "SENTENCE_END", "WHITESPACE", "BoundaryCounter", "RoundTrip", "bos_entropy",
    "boundary_stats", "evaluate", "evaluate_level0", "evaluate_level1", "evaluate_upper", "gold_boundaries", "levenshtein",
    "sentence_starts",
]

NOISE_LEVELS = (0.1, 0.3, 0.5)
Batches = Sequence[Batch] | ByteBatches


def _batch(batches: Batches, i: int) -> Batch:
    return batches.batch(i) if isinstance(batches, ByteBatches) else batches[i]


@torch.no_grad()
def evaluate_level0(model: ZonkeyModel, batches: Batches, *, noise_levels: Sequence[float] = NOISE_LEVELS,
                    steps: int = 4, seed: int = 0, max_batches: int | None = None,
                    progress: ProgressFn | None = None) -> dict[str, Any]:
    """Level-0 metrics over batches of held-out text (see the module docstring).

    Args:
        model: the model (put in eval mode).
        batches: the batches.
        noise_levels: the σ of ``recon_acc_noise``, each run back to 0 in ``steps`` steps of level
            0's own sampler.
        steps: sampler steps back from each noise level.
        seed: seed of that noise.
        max_batches: evaluate at most this many batches.
        progress: ``progress(done, total)``.

    Returns:
        the level-0 keys of the module docstring.
    """
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
    rt = RoundTrip()
    len_ok = n_segs = 0
    for i in range(n_batches):
        batch = _batch(batches, i).to(device)
        p0 = model.encode(batch.tokens, batch.valid, upto=1)[0]
        split, seg = p0.split, p0.split.segments
        targets = batch.tokens[seg.doc[:, None], seg.positions]  # (s, m)
        own = seg.own_span
        total += int(own.sum())
        for sigma in correct:
            out = level.decode(p0.latents, sigma=sigma, steps=steps, generator=gen)
            pred = decode_bytes_from_slots(out.x_hat, table)
            correct[sigma] += int(((pred == targets) & own).sum())
            if sigma == 0.0:
                # lengths come from the decoder's own existence here, as when decoding from latents alone
                keep = kept_mask(out.log_existence, 0.5)
                len_ok += int((keep.sum(1) == seg.span).sum())
                n_segs += seg.num
                rt.add(batch, pred, keep, seg.doc)
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
        "boundary_convention": convention({k: boundary.get(k, {}).get("f1", 0.0) for k in CONVENTIONS}),
        "eval_bytes": total,
        "length_acc": len_ok / max(n_segs, 1),
        "roundtrip0_acc": rt.strict,
        "roundtrip0_acc_aligned": rt.aligned,
        "roundtrip0_char_acc": rt.char_acc,
    }


def evaluate(model: ZonkeyModel, corpus: Any, *, batch_bytes: int, seed: int = 0, max_batches: int | None = None,
             steps: int = 4, progress: ProgressFn | None = None) -> dict[str, Any]:
    """All metrics of every level on the held-out split of ``corpus`` (see the module docstring).

    Args:
        model: the model.
        corpus: a loaded corpus (``load_corpus``).
        batch_bytes: bytes per batch.
        seed: seed of the batches and of the noise.
        max_batches: evaluate at most this many batches.
        steps: sampler steps back from each noise level of ``recon_acc_noise``.
        progress: ``progress(done, total)`` over the level-0 batches.

    Returns:
        the keys of the module docstring and ``heldout_chunks``.
    """
    batches = corpus.batches("heldout", seed=seed, batch_bytes=batch_bytes)
    res = evaluate_level0(model, batches, steps=steps, seed=seed, max_batches=max_batches, progress=progress)
    if len(model.levels) > 1:
        res.update(evaluate_upper(model, batches, seed=seed, max_batches=max_batches))
    res["heldout_chunks"] = batches.num_chunks
    return res


# --- levels >= 1 (the hierarchy) ------------------------------------------------------------


def _prefix(level: int) -> str:
    return f"l{level}_"


def _roundtrip_prefix(level: int) -> str:
    return "" if level == 1 else _prefix(level)


class _UpperLevel:
    """The counts of one level l >= 1 over the evaluated batches."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.boundary = BoundaryCounter()
        self.hit = self.tot = self.len_hit = self.len_tot = 0
        self.rt = RoundTrip()

    def add(self, model: ZonkeyModel, batch: Batch, passes: list[LevelPass], holds_below: Tensor) -> None:
        """Score level l on one batch.

        Args:
            model: the model the passes come from.
            batch: the batch the walk read.
            passes: the walk's passes of levels 0..l.
            holds_below: (s_{l−1},) bool, whether each level-(l−1) segment's own span holds a
                sentence's first byte.
        """
        below, here = passes[self.level - 1], passes[self.level]
        seq = below.above
        assert seq is not None
        seg_below, seg = below.split.segments, here.split.segments
        gold = torch.zeros_like(seq.valid)
        gold[seg_below.doc, seq.position] = holds_below
        gold[:, 0] = False
        pred = here.split.bos.clone()
        pred[:, 0] = False
        self.boundary.add("sentence", pred & seq.valid, gold & seq.valid, 0)
        out = model.levels[self.level].decode(here.latents)
        _, correct = contrastive_recon_loss(out.x_hat, seg.doc, seg.positions, seg.own_span.float(), here.x, here.valid)
        self.hit += int((correct & seg.own_span).sum())
        self.tot += int(seg.own_span.sum())
        # round trip: each level's decoded existence says how many latents of the level below each
        # of its segments holds (hard stitching); down to level 0, whose slots are bytes
        docs = seg.doc
        for lvl in range(self.level, 0, -1):
            kept = kept_mask(out.log_existence, 0.5)
            if lvl == self.level:
                self.len_hit += int((kept.sum(1) == seg.span).sum())
                self.len_tot += seg.num
            docs = docs[:, None].expand_as(kept)[kept]
            out = model.levels[lvl - 1].decode(out.x_hat[kept])
        bytes0 = decode_bytes_from_slots(out.x_hat, model.table)  # (s', m0)
        self.rt.add(batch, bytes0, kept_mask(out.log_existence, 0.5), docs)

    def result(self) -> dict[str, Any]:
        """This level's keys (see the module docstring)."""
        p, r = _prefix(self.level), _roundtrip_prefix(self.level)
        sent = self.boundary.result().get("sentence", {"p": 0.0, "r": 0.0, "f1": 0.0})
        return {
            f"{p}sentence_boundary": sent,
            f"{p}sentence_f1": sent["f1"],
            f"{p}recon_acc": self.hit / max(self.tot, 1),
            f"{p}length_acc": self.len_hit / max(self.len_tot, 1),
            f"{r}roundtrip_acc": self.rt.strict,
            f"{r}roundtrip_acc_aligned": self.rt.aligned,
            f"{r}roundtrip_char_acc": self.rt.char_acc,
        }


def _holds_sentence_start(batch: Batch, passes: list[LevelPass]) -> list[Tensor]:
    """Per level of ``passes``, whether each segment's own span holds a sentence's first byte.

    Level 0: one of its bytes; level l: one of its level-(l−1) segments.

    Returns:
        Per level l, (s_l,) bool.
    """
    seg0 = passes[0].split.segments
    starts_b = sentence_starts(batch.tokens, batch.valid)
    span_pos = seg0.start[:, None] + torch.arange(seg0.valid.shape[1], device=seg0.start.device)[None, :]
    holds = [(starts_b[seg0.doc[:, None], span_pos.clamp(max=batch.tokens.shape[1] - 1)] & seg0.own_span).any(1)]
    for below, here in zip(passes[:-1], passes[1:], strict=True):
        seg = here.split.segments
        own = seg.own_span
        owner = torch.arange(seg.num, device=own.device)[:, None].expand_as(own)[own]
        hit = holds[-1][own_slot_rows(seg, below.split.segments)].float()
        holds.append(torch.zeros(seg.num, device=own.device).index_add(0, owner, hit) > 0)
    return holds


@torch.no_grad()
def evaluate_upper(model: ZonkeyModel, batches: Batches, *, levels: Sequence[int] | None = None, seed: int = 0,
                   max_batches: int | None = None) -> dict[str, Any]:
    """The metrics of levels >= 1 (see the module docstring), one walk up the hierarchy per batch.

    Args:
        model: the model.
        batches: the batches.
        levels: the levels to score (default: every level >= 1).
        seed: unused (the metrics draw no noise); kept for a uniform signature.
        max_batches: evaluate at most this many batches.

    Returns:
        the ``l{l}_...`` keys of every level asked for (level 1's round trip without a prefix).

    Raises:
        ValueError: a level below 1 or above the model's top level.
    """
    levels = list(range(1, len(model.levels))) if levels is None else sorted(set(levels))
    for lvl in levels:
        if not 1 <= lvl < len(model.levels):
            raise ValueError(f"level {lvl} cannot be scored (levels 1..{len(model.levels) - 1} can)")
    if not levels:
        return {}
    model.eval()
    device = next(model.parameters()).device
    n_batches = len(batches) if max_batches is None else min(len(batches), max_batches)
    acc = [_UpperLevel(lvl) for lvl in levels]
    for i in range(n_batches):
        batch = _batch(batches, i).to(device)
        passes = model.encode(batch.tokens, batch.valid, upto=levels[-1] + 1)
        holds = _holds_sentence_start(batch, passes)
        for a in acc:
            a.add(model, batch, passes, holds[a.level - 1])
    res: dict[str, Any] = {}
    for a in acc:
        res.update(a.result())
    return res


def evaluate_level1(model: ZonkeyModel, batches: Batches, *, seed: int = 0,
                    max_batches: int | None = None) -> dict[str, Any]:
    """Level 1's metrics alone (:func:`evaluate_upper` with ``levels=[1]``)."""
    return evaluate_upper(model, batches, levels=[1], seed=seed, max_batches=max_batches)
