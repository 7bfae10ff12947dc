"""The placement shared by all stitchers (what they return is :class:`zonkey.core.outputs.StitchOutput`)."""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.existence import kept_mask


def kept_lengths(log_existence: Tensor, threshold: float = 0.5) -> Tensor:
    """(s,) number of leading slots whose existence is at least ``threshold`` (>= 1)."""
    return kept_mask(log_existence, threshold).sum(1).clamp_min(1)


def chain_starts(lengths: Tensor, doc: Tensor) -> Tensor:
    """Starts of consecutive segments of each document laid end to end: (s,) long.

    Args:
        lengths: (s,) kept length of each segment. doc: (s,) non-decreasing document index.
    """
    if lengths.numel() == 0:
        return lengths
    excl = torch.cumsum(lengths, 0) - lengths  # exclusive running sum over all segments
    counts = torch.bincount(doc)
    first = torch.cumsum(counts, 0) - counts  # index of each document's first segment
    return excl - excl[first[doc]]


def place(segments: Tensor, keep: Tensor, doc: Tensor, starts: Tensor, b: int) -> tuple[Tensor, Tensor]:
    """Scatter kept slots to document positions; a later segment overwrites the tail of an earlier
    one where they overlap (each position keeps the segment that starts closest before it).

    Args:
        segments: (s, m, d). keep: (s, m) bool. doc, starts: (s,).

    Returns:
        x (b, n, d), valid (b, n) with n = the furthest kept position + 1.
    """
    s, m, d = segments.shape
    pos = starts[:, None] + torch.arange(m, device=segments.device)[None, :]  # (s, m)
    n = int((pos * keep).max()) + 1 if s else 1
    x = segments.new_zeros(b, n, d)
    valid = torch.zeros(b, n, dtype=torch.bool, device=segments.device)
    # segments come in (doc, start) order: where they overlap, the later segment wins
    rank = torch.arange(s, device=segments.device)[:, None].expand(-1, m)[keep]
    d_idx = doc[:, None].expand(-1, m)[keep]
    p_idx = pos[keep]
    vals = segments[keep]
    key = d_idx * n + p_idx
    best = torch.full((b * n,), -1, dtype=torch.long, device=segments.device).scatter_reduce(0, key, rank, reduce="amax")
    win = best[key] == rank
    x = x.index_put((d_idx[win], p_idx[win]), vals[win])
    valid[d_idx[win], p_idx[win]] = True
    return x, valid
