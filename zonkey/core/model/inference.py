"""Inference on raw text, read from the encoder walk (``ZonkeyModel.encode``).

Deterministic splits at every level, the level-0 round trip text -> latents -> text, and decoding
level-0 slots back to bytes through the tied embedding table.

Documents of any length: texts are encoded in batches of at most :data:`BATCH_BYTES` padded bytes
(a longer text goes alone), every splitter's attention is local and computed piece by piece,
segments are compressed and decoded :data:`~zonkey.core.model.level.SEGMENT_BATCH` at a time. Memory then
grows with the document only through the per-position results themselves (the sequence of each
level, its segments and latents), time linearly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import Segments, SplitOutput, TextSplit
from zonkey.core.model.level import SEGMENT_BATCH
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.sphere import atanh_cos_logits
from zonkey.data import Batch, encode_texts

__all__ = ["BATCH_BYTES", "TextSplit", "decode_bytes_from_slots", "decode_own_spans", "reconstruct_texts",
           "split_batch", "split_texts", "text_batches"]

#: texts are encoded together while rows × the longest text stays within this many bytes
BATCH_BYTES = 1 << 16


def text_batches(texts: Sequence[str]) -> list[list[int]]:
    """Group texts into batches of at most :data:`BATCH_BYTES` padded bytes.

    All texts form one batch when they fit; otherwise they are taken shortest first, so that little
    padding is encoded, and a text longer than the budget forms a batch of its own.

    Args:
        texts: the texts.

    Returns:
        the indices of the texts of every batch.
    """
    lengths = [len(t.encode("utf-8")) for t in texts]
    if not lengths or len(lengths) * max(lengths) <= BATCH_BYTES:
        return [list(range(len(texts)))]
    groups: list[list[int]] = []
    current: list[int] = []
    for i in sorted(range(len(texts)), key=lambda j: lengths[j]):
        if current and (len(current) + 1) * lengths[i] > BATCH_BYTES:
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    return groups


def decode_bytes_from_slots(x_hat: Tensor, table: Tensor) -> Tensor:
    """(s, m, d) denoised slots -> (s, m) byte values: argmax of 2·atanh(cos) against the (256, d) table."""
    return atanh_cos_logits(x_hat, table).argmax(-1)


def _device(model: ZonkeyModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def split_batch(model: ZonkeyModel, batch: Batch) -> SplitOutput:
    """Deterministic (p > 0.5) level-0 split of a batch (the first pass of the walk)."""
    return model.encode(batch.tokens, batch.valid, upto=1)[0].split


@torch.no_grad()
def split_texts(model: ZonkeyModel, texts: Sequence[str]) -> list[TextSplit]:
    """Split raw texts at every level (deterministic); with one level, ``levels`` is None."""
    model.eval()
    texts = list(texts)
    encode_texts(texts)  # refuses bad input (an empty text, a non-string) before any work
    res: list[TextSplit | None] = [None] * len(texts)
    for group in text_batches(texts):
        for i, r in zip(group, _split_batch_texts(model, [texts[i] for i in group]), strict=True):
            res[i] = r
    return [r for r in res if r is not None]


def _split_batch_texts(model: ZonkeyModel, texts: list[str]) -> list[TextSplit]:
    """:func:`split_texts` of texts encoded in one batch."""
    batch = encode_texts(texts).to(_device(model))
    # only each level's decisions and probabilities are kept: the rest of a pass is freed before the
    # walk runs the next level (hence the ``del``: a loop variable would hold it until then)
    passes = []
    for p in model.walk(batch.tokens, batch.valid):
        passes.append(_Decisions(p.split.bos, p.split.p_bos))
        del p
    out = passes[0]
    many = len(model.levels) > 1
    res = []
    for i, text in enumerate(texts):
        raw = text.encode("utf-8")
        n = len(raw)
        starts = out.bos[i, :n].nonzero().flatten().tolist()
        bounds = starts + [n]
        segs = [raw[a:b].decode("utf-8", errors="replace") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        pb = [round(p, 6) for p in out.p_bos[i, :n].tolist()]
        res.append(TextSplit(text, segs, pb, starts, levels=[{"segments": segs, "p_bos": pb}] if many else None))
    if many:
        _add_upper_levels(passes[1:], res)
    return res


@dataclass
class _Decisions:
    """What a split keeps of one level's pass: its BOS decisions and probabilities, both (b, n)."""

    bos: Tensor
    p_bos: Tensor


def _add_upper_levels(passes: list[_Decisions], res: list[TextSplit]) -> None:
    """Deterministic splits of levels >= 1: each level groups the units of the level below."""
    units = [list(r.segments) for r in res]  # per text: the strings of the current level's units
    for p in passes:
        for i, r in enumerate(res):
            k = len(units[i])
            starts = p.bos[i, :k].nonzero().flatten().tolist() + [k]
            groups = ["".join(units[i][a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
            assert r.levels is not None
            r.levels.append({"segments": groups, "p_bos": [round(q, 6) for q in p.p_bos[i, :k].tolist()]})
            units[i] = groups


@torch.no_grad()
def decode_own_spans(model: ZonkeyModel, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Segments]:
    """Level 0 at t = 0 on a batch, as ``recon_acc`` scores it.

    Split deterministically, compress, decode each segment from its clean latent.

    Returns:
        pred (s, m) decoded bytes, targets (s, m) input bytes, own (s, m) bool (the segment's own
        span) and the segments.
    """
    p0 = model.encode(batch.tokens, batch.valid, upto=1)[0]
    seg = p0.split.segments
    pred = decode_bytes_from_slots(model.levels[0].decode(p0.latents).x_hat, model.table)
    targets = batch.tokens[seg.doc[:, None], seg.positions]
    return pred, targets, seg.own_span, seg


@torch.no_grad()
def reconstruct_texts(model: ZonkeyModel, texts: Sequence[str], *, sigma: float = 0.0, steps: int = 4,
                      seed: int = 0) -> list[str]:
    """Round trip through level 0, text -> latents -> text.

    Split, compress, (noise to σ along the level objective's own path and denoise back in
    ``steps`` steps,) decode each segment's own span and concatenate in document order.

    Args:
        model: the model (put in eval mode).
        texts: the texts.
        sigma: noise level in [0, 1].
        steps: sampler steps back to 0.
        seed: seed of the noise.

    Returns:
        each text as decoded from its level-0 latents (invalid UTF-8 replaced by U+FFFD).

    Raises:
        ValueError: sigma outside [0, 1] or steps below 0.
    """
    model.eval()
    device = _device(model)
    texts = list(texts)
    encode_texts(texts)  # refuses bad input before any work
    if not 0.0 <= sigma <= 1.0:
        raise ValueError(f"sigma must lie in [0, 1] (got {sigma})")
    if steps < 0:
        raise ValueError(f"steps must be at least 0 (got {steps})")
    gen = torch.Generator(device=device).manual_seed(seed)
    res = [""] * len(texts)
    for group in text_batches(texts):
        batch = encode_texts([texts[i] for i in group]).to(device)
        p0 = model.encode(batch.tokens, batch.valid, upto=1)[0]
        seg, latents = p0.split.segments, p0.latents
        # decoding needs the segments' places, not their input vectors or the level's sequence: on a
        # long document those are most of the memory, freed here before the decode (an empty tensor,
        # not a slice: a slice of the vectors would keep their whole storage alive)
        seg.vectors = seg.vectors.new_empty((0, *seg.vectors.shape[1:]))
        del p0
        buf = _decode_into(model, seg, latents, torch.zeros_like(batch.tokens), sigma=sigma, steps=steps,
                           generator=gen)
        for j, i in enumerate(group):
            res[i] = bytes(buf[j, : len(texts[i].encode("utf-8"))].tolist()).decode("utf-8", errors="replace")
    return res


def _decode_into(model: ZonkeyModel, seg: Segments, latents: Tensor, buf: Tensor, *, sigma: float, steps: int,
                 generator: torch.Generator) -> Tensor:
    """Decode level-0 latents :data:`SEGMENT_BATCH` at a time and write each segment's own span into ``buf`` (b, n).

    Own spans never overlap, so every batch's bytes go straight to their places: nothing of a batch
    outlives it (no (s, m, d) slots and no per-batch results held until the end). While they were
    held, a 1 MB document's resident memory grew by about 12 MB a batch with the memory in use flat
    (a fragmented heap: small results kept between the batches' large temporaries).
    """
    for a in range(0, seg.num, SEGMENT_BATCH):
        rows = slice(a, a + SEGMENT_BATCH)
        x_hat = model.levels[0].decode(latents[rows], sigma=sigma, steps=steps, generator=generator).x_hat
        pred = decode_bytes_from_slots(x_hat, model.table)  # (r, m)
        del x_hat
        span, valid, positions = seg.span[rows], seg.valid[rows], seg.positions[rows]
        own = (torch.arange(valid.shape[1], device=valid.device)[None, :] < span[:, None]) & valid
        buf[seg.doc[rows, None].expand_as(own)[own], positions[own]] = pred[own].to(buf.dtype)
    return buf


@torch.no_grad()
def encode_to_level(model: ZonkeyModel, texts: Sequence[str], level: int) -> list[Tensor]:
    """Each text as the input sequence of ``level``: (n_i, d_level) per text (n_i = 0 for "").

    Level 0: the byte embeddings. Level l >= 1: deterministic splits and compression through
    levels 0..l−1 (the encoder walk), each level's latents in BOS order.

    Args:
        model: the model.
        texts: the texts ("" allowed).
        level: the level whose input sequence is wanted (``len(model.levels)``: the top level's latents).

    Returns:
        per text, its vectors (n_i, d_level) in order.
    """
    # level l's input is level l-1's latents; level == len(levels) gives the top level's latents
    d = model.levels[level - 1].latent_dim if level > 0 else model.levels[0].cfg.d_model
    device = model.table.device
    out = [torch.zeros(0, d, device=device) for _ in texts]
    idx = [i for i, t in enumerate(texts) if t]
    if not idx:
        return out
    for group in text_batches([texts[i] for i in idx]):
        rows = [idx[g] for g in group]
        batch = encode_texts([texts[i] for i in rows]).to(device)
        if level == 0:
            x, valid = model.embed_bytes(batch.tokens, batch.valid), batch.valid
        else:
            top = model.encode(batch.tokens, batch.valid, upto=level)[-1].above
            assert top is not None
            x, valid = top.x, top.valid
        for j, i in enumerate(rows):
            out[i] = x[j][valid[j]]
    return out
