"""Laying decoded segments end to end: the tensor helpers every stitcher and the sampler share.

A level's decoder returns each segment's slots with their existence; going down the hierarchy (§9.1)
each segment is cut where its existence falls below ε and the kept slots of a document's segments
are placed one after the other (or by the level's learned stitcher, which predicts the offsets).
"""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import StitchOutput
from zonkey.core.contracts.protocols import Stitcher
from zonkey.core.nn.existence import NEG_INF, kept_mask


def chain_starts(lengths: Tensor, doc: Tensor) -> Tensor:
    """Starts of consecutive segments of each document laid end to end.

    Args:
        lengths: (s,) kept length of each segment.
        doc: (s,) non-decreasing document index.

    Returns:
        (s,) long: each segment's first position in its document.
    """
    if lengths.numel() == 0:
        return lengths
    excl = torch.cumsum(lengths, 0) - lengths  # exclusive running sum over all segments
    counts = torch.bincount(doc)
    first = torch.cumsum(counts, 0) - counts  # index of each document's first segment
    return excl - excl[first[doc]]


def place(segments: Tensor, keep: Tensor, doc: Tensor, starts: Tensor, b: int) -> tuple[Tensor, Tensor]:
    """Scatter kept slots to document positions.

    A later segment overwrites the tail of an earlier one where they overlap (each position keeps
    the segment that starts closest before it).

    Args:
        segments: (s, m, d) slots, sorted by (document, start).
        keep: (s, m) bool, the slots to place.
        doc: (s,) document of each segment.
        starts: (s,) first position of each segment.
        b: number of documents.

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


def truncate(log_existence: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
    """Cut every decoded segment where its existence first falls below ``epsilon``.

    Args:
        log_existence: (s, m) predicted log existence (0 at slot 0).
        epsilon: the existence threshold.

    Returns:
        keep (s, m) bool (leading slots, at least slot 0) and the hard log existence the stitcher
        reads: 0 on kept slots, −inf after the cut.
    """
    keep = kept_mask(log_existence, epsilon)
    keep[:, 0] = True  # a segment always holds its first slot (its BOS)
    hard = torch.zeros_like(log_existence, dtype=torch.float32).masked_fill(~keep, NEG_INF)
    return keep, hard


def stitch(stitcher: Stitcher | None, x_hat: Tensor, log_existence: Tensor, doc: Tensor, b: int,
           epsilon: float) -> StitchOutput:
    """Truncate decoded segments at ``epsilon`` and join each document's segments in order.

    Args:
        stitcher: the level's stitcher; None (``stitcher: null``) concatenates the kept slots
            (:func:`chain_starts` + :func:`place`).
        x_hat: (s, m, d) decoded segments, sorted by document.
        log_existence: (s, m) their predicted log existence.
        doc: (s,) document of each segment.
        b: number of documents.
        epsilon: the truncation threshold.

    Returns:
        the stitched sequence x (b, n, d) with its mask (b, n) and each segment's start (s,).
    """
    keep, hard = truncate(log_existence, epsilon)
    if stitcher is not None:
        return stitcher(x_hat, hard, doc, b)
    starts = chain_starts(keep.sum(1), doc)
    x, valid = place(x_hat, keep, doc, starts, b)
    return StitchOutput(x=x, valid=valid, starts=starts)
