"""Inference on raw text, read from the encoder walk (``ZonkeyModel.encode``).

Deterministic splits at every level, the level-0 round trip text -> latents -> text, and decoding
level-0 slots back to bytes through the tied embedding table.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zonkey.core.model import ZonkeyModel
from zonkey.core.outputs import LevelPass, Segments, SplitOutput, TextSplit
from zonkey.core.sphere import atanh_cos_logits
from zonkey.data import Batch, encode_texts

__all__ = ["TextSplit", "decode_bytes_from_slots", "decode_own_spans", "reconstruct_texts", "split_batch",
           "split_texts"]


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
    batch = encode_texts(list(texts)).to(_device(model))
    passes = model.encode(batch.tokens, batch.valid)
    out = passes[0].split
    many = len(model.levels) > 1
    res = []
    for i, text in enumerate(texts):
        raw = text.encode("utf-8")
        n = len(raw)
        starts = out.bos[i, :n].nonzero().flatten().tolist()
        bounds = starts + [n]
        segs = [raw[a:b].decode("utf-8", errors="replace") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        pb = [round(float(p), 6) for p in out.p_bos[i, :n]]
        res.append(TextSplit(text, segs, pb, starts, levels=[{"segments": segs, "p_bos": pb}] if many else None))
    if many:
        _add_upper_levels(passes[1:], res)
    return res


def _add_upper_levels(passes: list[LevelPass], res: list[TextSplit]) -> None:
    """Deterministic splits of levels >= 1: each level groups the units of the level below."""
    units = [list(r.segments) for r in res]  # per text: the strings of the current level's units
    for p in passes:
        for i, r in enumerate(res):
            k = len(units[i])
            starts = p.split.bos[i, :k].nonzero().flatten().tolist() + [k]
            groups = ["".join(units[i][a:b]) for a, b in zip(starts[:-1], starts[1:], strict=True)]
            assert r.levels is not None
            r.levels.append({"segments": groups, "p_bos": [round(float(q), 6) for q in p.split.p_bos[i, :k]]})
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
    batch = encode_texts(list(texts)).to(device)
    p0 = model.encode(batch.tokens, batch.valid, upto=1)[0]
    seg = p0.split.segments
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.levels[0].decode(p0.latents, sigma=sigma, steps=steps, generator=gen)
    pred = decode_bytes_from_slots(out.x_hat, model.table)  # (s, m)
    buf = torch.zeros_like(batch.tokens)
    own = seg.own_span
    buf[seg.doc[:, None].expand_as(own)[own], seg.positions[own]] = pred[own]
    return [bytes(buf[i, : len(t.encode("utf-8"))].tolist()).decode("utf-8", errors="replace") for i, t in enumerate(texts)]


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
    batch = encode_texts([texts[i] for i in idx]).to(device)
    if level == 0:
        x, valid = model.embed_bytes(batch.tokens, batch.valid), batch.valid
    else:
        top = model.encode(batch.tokens, batch.valid, upto=level)[-1].above
        assert top is not None
        x, valid = top.x, top.valid
    for j, i in enumerate(idx):
        out[i] = x[j][valid[j]]
    return out
