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
   ``*_tol1`` count a boundary within ±1 byte as a match. ``boundary_f1`` is the better strict F1.
 * ``length_acc``: share of segments whose decoded length (leading slots with existence >= 0.5
   from the denoiser's own BOS head, t = 0) equals the true span; ``roundtrip0_char_acc``
   (1 − edit distance / input bytes), ``roundtrip0_acc`` (strict, same offset) and
   ``roundtrip0_acc_aligned``: the text rebuilt from level-0 latents alone, every segment cut at
   its decoded length and concatenated. These separate level 0's own length errors
   from level 1's in ``roundtrip_acc``.

Level 1 (two or more levels): ``l1_sentence_boundary`` / ``l1_sentence_f1`` (level-1 BOS over the
level-0 segments against the segments holding a sentence's first byte), ``l1_recon_acc`` (top-1
retrieval of each level-0 latent from the decoded level-1 slots among the batch's),
``l1_length_acc`` (share of level-1 segments whose decoded count of level-0 latents, leading slots
with existence >= 0.5, equals the true one) and ``roundtrip_acc`` (text → level-1 latents → as many
level-0 latents as level 1's existence keeps → bytes, byte by byte at the same offset, so one
dropped byte or latent costs everything after it) with ``roundtrip_acc_aligned`` beside it
(matching bytes of the best alignment, difflib, over the longer of the two) and
``roundtrip_char_acc``, the headline figure: 1 − edit distance / input bytes (1 − CER), which
charges a dropped, added or wrong byte one byte wherever it falls (see :class:`RoundTrip`). Nothing in the round
trip is read from the input but the text itself: every count and length is decoded.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from zonkey.core.existence import kept_mask
from zonkey.core.inference import climb, decode_bytes_from_slots, denoise_from, split_batch
from zonkey.core.sphere import to_sphere
from zonkey.data import Batch, ByteBatches

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


def boundary_stats(p_bos: Tensor, tokens: Tensor, valid: Tensor) -> dict[str, float]:
    """Cheap boundary statistics of one batch (logged by the trainer; measurement only, nothing
    here reaches the model): strict F1 of ``p_bos > 0.5`` against both gold variants, and the mean
    BOS probability at gold word edges (the better-aligned variant) versus at all other positions
    after the first."""
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
    rt = RoundTrip()
    len_ok = n_segs = 0
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
        "eval_bytes": total,
        "length_acc": len_ok / max(n_segs, 1),
        "roundtrip0_acc": rt.strict,
        "roundtrip0_acc_aligned": rt.aligned,
        "roundtrip0_char_acc": rt.char_acc,
    }


def levenshtein(a: bytes, b: bytes) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two byte strings.

    One row of the dynamic programme at a time, vectorised over the row: with ``c[j]`` the best
    cost reaching cell j by substitution/match or deletion, insertions chain along the row as
    ``row[j] = min_{i <= j} (c[i] + j − i)``, a running minimum of ``c − j`` plus j."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b, dtype=np.uint8)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        c = np.empty_like(row)
        c[0] = i
        c[1:] = np.minimum(row[:-1] + (bb != ch), row[1:] + 1)
        row = np.minimum.accumulate(c - idx) + idx
    return int(row[-1])


class RoundTrip:
    """Byte accuracy of texts rebuilt from decoded segments: each document's kept bytes are
    concatenated in segment order (hard stitching) and compared with the input three ways:

    * ``strict``: at the same offset, over max(len(output), len(input)) bytes: one wrong length
      shifts everything after it, so the figure depends on where in a document the first slip
      falls (shorter documents score higher for the same model);
    * ``aligned``: matching bytes of difflib's alignment over the same denominator;
    * ``char_acc``: 1 − (edit distance / input bytes), the character accuracy of OCR and speech
      evaluation (1 − CER): each dropped, added or wrong byte costs one, wherever it falls.
      Summed over documents; below 0 only if the output is mostly garbage (clamped at 0)."""

    def __init__(self) -> None:
        self.same = self.matched = self.total = self.edits = self.ref_bytes = 0

    def add(self, batch: Batch, pred: Tensor, keep: Tensor, doc: Tensor) -> None:
        """pred (r, m) decoded bytes, keep (r, m) bool kept slots, doc (r,) document of each row
        (rows in document order)."""
        for d in range(batch.tokens.shape[0]):
            rows = (doc == d).nonzero().flatten().tolist()
            out = b"".join(bytes(pred[r][keep[r]].tolist()) for r in rows)
            ref = bytes(batch.tokens[d][batch.valid[d]].tolist())
            self.same += sum(1 for a, c in zip(out, ref) if a == c)
            self.matched += sum(blk.size for blk in SequenceMatcher(None, out, ref, autojunk=False).get_matching_blocks())
            self.total += max(len(out), len(ref))
            self.edits += levenshtein(out, ref)
            self.ref_bytes += len(ref)

    @property
    def strict(self) -> float:
        return self.same / max(self.total, 1)

    @property
    def aligned(self) -> float:
        return self.matched / max(self.total, 1)

    @property
    def char_acc(self) -> float:
        return max(0.0, 1.0 - self.edits / max(self.ref_bytes, 1))


def evaluate(model: Any, corpus: Any, *, batch_bytes: int, seed: int = 0, max_batches: Optional[int] = None,
             steps: int = 4, progress: Any = None) -> dict[str, Any]:
    """All metrics on the held-out split of ``corpus``."""
    batches = corpus.batches("heldout", seed=seed, batch_bytes=batch_bytes)
    res = evaluate_level0(model, batches, steps=steps, seed=seed, max_batches=max_batches, progress=progress)
    if len(model.levels) > 1:
        res.update(evaluate_level1(model, batches, seed=seed, max_batches=max_batches))
    res["heldout_chunks"] = batches.num_chunks
    return res


# --- level 1 (the hierarchy) ----------------------------------------------------------------

SENTENCE_END = (46, 33, 63)  # . ! ?


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


@torch.no_grad()
def evaluate_level1(model: Any, batches: Any, *, seed: int = 0, max_batches: Optional[int] = None) -> dict[str, Any]:
    """Level-1 metrics: sentence-start boundary P/R/F1 over level-0 segments, level-1 reconstruction
    (top-1 retrieval of each level-0 latent among the batch's), and the full round trip
    text → level-1 latents → level-0 latents → bytes, compared byte by byte."""
    from zonkey.core.losses import contrastive_recon_loss

    model.eval()
    device = next(model.parameters()).device
    l0, l1 = model.levels[0], model.levels[1]
    n_batches = len(batches) if max_batches is None else min(len(batches), max_batches)
    bc = BoundaryCounter()
    hit = tot = len_hit = len_tot = 0
    rt = RoundTrip()
    for i in range(n_batches):
        batch = (batches.batch(i) if isinstance(batches, ByteBatches) else batches[i]).to(device)
        p0, p1 = climb(model, batch, upto=2)
        seg0, seq = p0.split.segments, p0.above
        s1, seg1 = p1.split, p1.split.segments
        # gold: a level-0 segment whose own span holds a sentence's first byte
        starts_b = sentence_starts(batch.tokens, batch.valid)
        span_pos = seg0.start[:, None] + torch.arange(seg0.valid.shape[1], device=device)[None, :]
        holds = (starts_b[seg0.doc[:, None], span_pos.clamp(max=batch.tokens.shape[1] - 1)] & seg0.own_span).any(1)
        gold = torch.zeros_like(seq.valid)
        gold[seg0.doc, seq.position] = holds
        gold[:, 0] = False
        pred = s1.bos.clone()
        pred[:, 0] = False
        bc.add("sentence", pred & seq.valid, gold & seq.valid, 0)
        z1 = p1.latents
        out1 = l1.denoise(z1, z1.new_zeros(z1.shape[0]))
        _, correct = contrastive_recon_loss(out1.x_hat, seg1.doc, seg1.positions, seg1.own_span.float(), seq.x, seq.valid)
        hit += int((correct & seg1.own_span).sum())
        tot += int(seg1.own_span.sum())
        # round trip: level 1's decoded existence says how many level-0 latents each of its
        # segments holds (hard stitching); each of them -> bytes of its decoded length
        kept1 = kept_mask(out1.log_existence, 0.5)
        len_hit += int((kept1.sum(1) == seg1.span).sum())
        len_tot += seg1.num
        lat0 = to_sphere(out1.x_hat[kept1])
        docs = seg1.doc[:, None].expand_as(kept1)[kept1]
        dec0 = l0.denoise(lat0, lat0.new_zeros(lat0.shape[0]))
        bytes0 = decode_bytes_from_slots(dec0.x_hat, model.table)  # (s', m0)
        rt.add(batch, bytes0, kept_mask(dec0.log_existence, 0.5), docs)
    sent = bc.result().get("sentence", {"p": 0.0, "r": 0.0, "f1": 0.0})
    return {
        "l1_sentence_boundary": sent,
        "l1_sentence_f1": sent["f1"],
        "l1_recon_acc": hit / max(tot, 1),
        "l1_length_acc": len_hit / max(len_tot, 1),
        "roundtrip_acc": rt.strict,
        "roundtrip_acc_aligned": rt.aligned,
        "roundtrip_char_acc": rt.char_acc,
    }
