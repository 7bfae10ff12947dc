"""Inference helpers shared by evaluation, the Python API and the CLI: deterministic splits of raw
text, and decoding level-0 latents back to bytes through the tied embedding table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from zonkey.core.outputs import SplitOutput
from zonkey.core.sphere import atanh_cos_logits
from zonkey.data import Batch, encode_texts


@dataclass
class TextSplit:
    """The level-0 segmentation of one text."""

    text: str
    segments: list[str]  # own spans (start to next BOS), decoded with errors="replace"
    p_bos: list[float]  # one value per UTF-8 byte
    starts: list[int]  # byte offsets of the BOS positions
    levels: list[dict[str, Any]] | None = None  # per level: {segments, p_bos} (level l >= 1 groups level l−1 units)

    def as_dict(self) -> dict[str, Any]:
        d = {"text": self.text, "segments": self.segments, "p_bos": self.p_bos, "starts": self.starts}
        if self.levels is not None:
            d["levels"] = self.levels
        return d


@torch.no_grad()
def split_batch(model: Any, batch: Batch) -> SplitOutput:
    """Deterministic (p > 0.5) level-0 split of a batch."""
    x = model.embed_bytes(batch.tokens, batch.valid)
    return model.levels[0].split(x, batch.valid, sample=False, tokens=batch.tokens)


@torch.no_grad()
def split_texts(model: Any, texts: Sequence[str]) -> list[TextSplit]:
    """Split raw texts at level 0 (deterministic)."""
    model.eval()
    batch = encode_texts(list(texts)).to(next(model.parameters()).device)
    # one pass up the hierarchy when there are levels above; level 0's split is its first step
    passes = list(climb(model, batch)) if len(model.levels) > 1 else []
    out = passes[0].split if passes else split_batch(model, batch)
    res = []
    for i, text in enumerate(texts):
        raw = text.encode("utf-8")
        n = len(raw)
        starts = out.bos[i, :n].nonzero().flatten().tolist()
        bounds = starts + [n]
        segs = [raw[a:b].decode("utf-8", errors="replace") for a, b in zip(bounds[:-1], bounds[1:])]
        pb = [round(float(p), 6) for p in out.p_bos[i, :n]]
        res.append(TextSplit(text, segs, pb, starts, levels=[{"segments": segs, "p_bos": pb}] if len(model.levels) > 1 else None))
    if passes:
        _add_upper_levels(passes[1:], res)
    return res


def _add_upper_levels(passes: list["LevelPass"], res: list[TextSplit]) -> None:
    """Deterministic splits of levels >= 1 (their ``climb`` passes): each level groups the units
    of the level below."""
    units = [list(r.segments) for r in res]  # per text: the strings of the current level's units
    for p in passes:
        for i, r in enumerate(res):
            k = len(units[i])
            starts = p.split.bos[i, :k].nonzero().flatten().tolist() + [k]
            groups = ["".join(units[i][a:b]) for a, b in zip(starts[:-1], starts[1:])]
            r.levels.append({"segments": groups, "p_bos": [round(float(q), 6) for q in p.split.p_bos[i, :k]]})
            units[i] = groups


@dataclass
class LevelPass:
    """One level of a deterministic inference pass up the hierarchy (see ``climb``)."""

    index: int
    split: SplitOutput  # deterministic split (p > 0.5)
    latents: Tensor  # (s, k·d) clean latents of its segments
    above: Any  # LevelSequence: the latents in BOS order, the next level's input (with .position)


def climb(model: Any, batch: Batch, upto: int | None = None) -> Any:
    """Yield a ``LevelPass`` for levels 0 .. upto−1 (default: all): split deterministically,
    compress, arrange the latents as the next level's sequence. The inference path of
    ``model.forward``; callers wrap it in ``torch.no_grad()`` where they need to."""
    from zonkey.core.hierarchy import latents_to_sequence

    x, valid = model.embed_bytes(batch.tokens, batch.valid), batch.valid
    for i, level in enumerate(model.levels[:upto]):
        sp = level.split(x, valid, sample=False, tokens=batch.tokens if i == 0 else None)
        z = level.compress(sp.segments.vectors, sp.segments.log_existence)
        above = latents_to_sequence(z, sp.segments.doc, batch.tokens.shape[0])
        yield LevelPass(i, sp, z, above)
        x, valid = above.x, above.valid


def decode_bytes_from_slots(x_hat: Tensor, table: Tensor) -> Tensor:
    """(s, m, d) denoised slots -> (s, m) byte values: argmax of 2·atanh(cos) against the table."""
    return atanh_cos_logits(x_hat, table).argmax(-1)


@torch.no_grad()
def denoise_from(level: Any, z0: Tensor, sigma: float, steps: int, generator: torch.Generator | None = None) -> Any:
    """Noise clean latents to ``sigma`` and run the level's objective sampler back to 0 in ``steps``
    linearly spaced steps; returns the final denoiser output (decoded at σ = 0)."""
    s = z0.shape[0]
    z = z0
    if sigma > 0:
        noise = torch.randn(z0.shape, generator=generator, device=z0.device)
        z = math.sqrt(1 - sigma) * z0 + math.sqrt(sigma) * noise
        sigmas = torch.linspace(sigma, 0.0, steps + 1).tolist()
        for a, b in zip(sigmas[:-1], sigmas[1:]):
            z, _ = level.objective.step(z, a, b, level.denoise, level.compress)
    return level.denoise(z, z.new_zeros(s))


@torch.no_grad()
def decode_own_spans(model: Any, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Any]:
    """Level 0 at t = 0 on a batch, as ``recon_acc`` scores it: split deterministically, compress,
    decode each segment from its clean latent. Returns (pred (s, m) decoded bytes, targets (s, m)
    input bytes, own (s, m) bool: the segment's own span, the segments)."""
    seg = split_batch(model, batch).segments
    level = model.levels[0]
    z0 = level.compress(seg.vectors, seg.log_existence)
    pred = decode_bytes_from_slots(denoise_from(level, z0, 0.0, 1).x_hat, model.table)
    targets = batch.tokens[seg.doc[:, None], seg.positions]
    return pred, targets, seg.own_span, seg


@torch.no_grad()
def reconstruct_texts(model: Any, texts: Sequence[str], *, sigma: float = 0.0, steps: int = 4, seed: int = 0) -> list[str]:
    """Round trip through level 0: split, compress, (noise to σ and denoise back,) decode each
    segment's own span and concatenate in document order."""
    model.eval()
    device = next(model.parameters()).device
    batch = encode_texts(list(texts)).to(device)
    split = split_batch(model, batch)
    seg = split.segments
    level = model.levels[0]
    z0 = level.compress(seg.vectors, seg.log_existence)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = denoise_from(level, z0, sigma, steps, gen)
    pred = decode_bytes_from_slots(out.x_hat, model.table)  # (s, m)
    buf = torch.zeros_like(batch.tokens)
    own = seg.own_span
    buf[seg.doc[:, None].expand_as(own)[own], seg.positions[own]] = pred[own]
    return [bytes(buf[i, : len(t.encode("utf-8"))].tolist()).decode("utf-8", errors="replace") for i, t in enumerate(texts)]
