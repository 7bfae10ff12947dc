"""``learned``: the Segment Stitcher of §7.1, fully vectorised over all consecutive segment pairs.

1. Soft offset inference: for each pair (A, B) of consecutive segments of a document and each
   candidate offset o ∈ [1, m] (B starts o slots after A), a score = log P(A's span has length o)
   from A's existence (the existence drop) + a learned scale × the mean cosine of A[o:] and
   B[:m−o] in a d/4 projection. softmax over o gives a distribution; its mean is the continuous
   expected offset.
2. Learned refinement: A's slots attend (one cross-attention layer, existence-weighted keys) to B's
   slots, added back through a small learned gate (starts at 0.1), so the overlap can correct A.
3. Weighted accumulation: every document position averages the segments covering it, weighted by
   their existence there; the result is scaled to the expected Gaussian norm.

Training losses with the true offsets: offset regression ((ô − o)/m)² and overlap reconstruction
1 − cos(A[o:], B[:m−o]) over the true overlap.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zonkey.components.stitcher.base import chain_starts, kept_lengths
from zonkey.core.contracts.outputs import StitchOutput
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.losses import log1mexp
from zonkey.core.nn.sphere import to_sphere


class LearnedStitcher(nn.Module):
    """Soft offsets between consecutive segments, a learned refiner, existence-weighted accumulation."""

    has_losses = True  # the offset and overlap terms with the true offsets

    def __init__(self, ctx: LevelContext) -> None:
        super().__init__()
        d, self.m = ctx.d_model, ctx.max_segment
        self.proj = nn.Linear(d, max(d // 4, 1), bias=False)
        self.sim_scale = nn.Parameter(torch.tensor(1.0))
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.norm = nn.LayerNorm(d)
        self.gate = nn.Parameter(torch.tensor(0.1))

    def offset_scores(self, a: Tensor, b: Tensor, le_a: Tensor) -> Tensor:
        """Scores of offsets 1..m for pairs: a, b (p, m, d), le_a (p, m) -> (p, m)."""
        p, m, _ = a.shape
        pa, pb = F.normalize(self.proj(a), dim=-1), F.normalize(self.proj(b), dim=-1)
        cos = torch.einsum("pid,pjd->pij", pa, pb)  # (p, m, m): A slot i vs B slot j
        i = torch.arange(m, device=a.device)
        o = torch.arange(1, m + 1, device=a.device)
        # overlap of offset o pairs A slot i with B slot i − o, for i >= o
        mask = (i[None, :, None] - o[:, None, None]) == i[None, None, :]  # (o, i, j)
        sums = torch.einsum("pij,oij->po", cos, mask.to(cos.dtype))
        counts = mask.sum((1, 2)).clamp_min(1).to(cos.dtype)  # (o,)
        sim = sums / counts  # (p, m); offset m has no overlap: 0
        # log P(A's span ends exactly at o) = log(e[o−1] − e[o]) (e[m] = 0)
        le_next = torch.cat([le_a[:, 1:], torch.full_like(le_a[:, :1], float("-inf"))], dim=1)
        drop = le_a + log1mexp((le_next - le_a).clamp(max=-1e-6))
        return drop.clamp_min(-30.0) + self.sim_scale * sim

    def refine(self, a: Tensor, b: Tensor, le_b: Tensor) -> Tensor:
        """A's slots attend to B's: (p, m, d) -> (p, m, d)."""
        q = self.q(self.norm(a))
        k, v = self.kv(self.norm(b)).chunk(2, dim=-1)
        att = torch.einsum("pid,pjd->pij", q, k) / math.sqrt(q.shape[-1]) + le_b.clamp_min(-30.0)[:, None, :]
        return a + self.gate * torch.einsum("pij,pjd->pid", att.softmax(-1), v)

    def forward(self, segments: Tensor, log_existence: Tensor, doc: Tensor, b: int,
                true_starts: Tensor | None = None) -> StitchOutput:
        """Stitch segments back onto document positions.

        Args:
            segments: (s, m, d) decoded segment vectors.
            log_existence: (s, m) log existence of each slot.
            doc: (s,) long document of each segment, sorted by (document, start).
            b: number of documents.
            true_starts: (s,) true first positions (training: gives the offset and overlap losses).

        Returns:
            The :class:`StitchOutput` (b, n, d).
        """
        s, m, d = segments.shape
        log_existence = log_existence.clamp_min(-30.0)  # hard zeros (−inf) become tiny but finite
        pair = torch.zeros(s, dtype=torch.bool, device=segments.device)
        pair[1:] = doc[1:] == doc[:-1]  # segment i has a predecessor i−1 in its document
        idx_b = pair.nonzero().flatten()
        idx_a = idx_b - 1
        a, bb = segments[idx_a], segments[idx_b]
        scores = self.offset_scores(a, bb, log_existence[idx_a])  # (p, m)
        probs = scores.softmax(-1)
        o = torch.arange(1, m + 1, device=segments.device, dtype=segments.dtype)
        expected = (probs * o).sum(-1)  # (p,)
        offsets = torch.zeros(s, dtype=segments.dtype, device=segments.device)
        offsets[idx_b] = expected
        refined = segments.clone()
        refined[idx_a] = self.refine(a, bb, log_existence[idx_b])
        losses: dict[str, Tensor] = {}
        if true_starts is not None:
            true_o = (true_starts[idx_b] - true_starts[idx_a]).clamp(1, m)
            losses["stitch_offset"] = ((expected - true_o.to(expected.dtype)) / m).pow(2).mean() if len(idx_b) else segments.new_zeros(())
            j = torch.arange(m, device=segments.device)
            ov = (j[None, :] + true_o[:, None]) < m  # (p, m): B slot j overlaps A slot j + o
            a_al = refined[idx_a].gather(1, (j[None, :] + true_o[:, None]).clamp(max=m - 1)[..., None].expand(-1, -1, d))
            cosv = F.cosine_similarity(a_al, bb, dim=-1)  # (p, m)
            w = ov.to(cosv.dtype) * log_existence[idx_b].exp()
            losses["stitch_overlap"] = ((1 - cosv) * w).sum() / w.sum().clamp_min(1e-8)
            starts = true_starts
        else:
            step = (probs.argmax(-1) + 1)  # (p,) hard offsets for placement
            lengths = torch.full((s,), m, dtype=torch.long, device=segments.device)
            lengths[idx_a] = step
            # the last segment of each document keeps its slots up to its existence cut
            last = torch.ones(s, dtype=torch.bool, device=segments.device)
            last[idx_a] = False
            alive = kept_lengths(log_existence, 0.5)
            lengths[last] = alive[last]
            starts = chain_starts(lengths, doc)
        # weighted accumulation of every covering slot by its existence
        pos = starts[:, None] + torch.arange(m, device=segments.device)[None, :]  # (s, m)
        w = log_existence.exp()  # (s, m)
        if true_starts is None:
            end = (starts + lengths)[:, None]
            w = w * (pos < torch.maximum(end, starts[:, None] + 1)).to(w.dtype)
        n = int(pos.max()) + 1 if s else 1
        key = rearrange(doc[:, None] * n + pos, "s m -> (s m)")
        num = segments.new_zeros(b * n, d).index_add(0, key, rearrange(refined * w[..., None], "s m d -> (s m) d"))
        den = segments.new_zeros(b * n).index_add(0, key, rearrange(w, "s m -> (s m)"))
        valid = (den > 1e-6).view(b, n)
        x = to_sphere(num / den.clamp_min(1e-6)[:, None]).view(b, n, d).masked_fill(~valid[..., None], 0.0)
        return StitchOutput(x=x, valid=valid, starts=starts, offsets=offsets, losses=losses)


@register("stitcher", "learned")
class LearnedStitcherConfig(ComponentConfig):
    """Soft offsets from existence drop + projected similarity, refiner, weighted accumulation (§7.1)."""

    name: Literal["learned"] = "learned"

    def build(self, ctx: LevelContext) -> LearnedStitcher:
        """The module of this config for the level that ``ctx`` describes."""
        return LearnedStitcher(ctx)
