"""Packing: run each segment at the length its objective reads, not at ``max_segment``.

A segment's slots past its own span have existence 0 under ``straight_through`` existence; the
losses read them only up to the first one that does not exist (its BOS and existence are trained).
So a segment needs ``min(m, span + 1)`` slots. Segments are grouped into a few buckets of equal
length (each segment in the shortest bucket that holds it), and every slot-wise module runs once
per bucket at that bucket's length. A segment's *cut* is the length of its bucket.

The bucket lengths are chosen per batch to minimise the total number of slots computed, with at
most ``max_buckets`` distinct lengths: fewer buckets mean fewer (larger) module calls.

``varlen`` needs no buckets: a segment's cut is its need, and every slot-wise module runs once on
the whole batch, its linear layers on the kept positions alone (gathered into one matrix) and its
attention on the padded layout with the positions left out masked (:class:`Encoder`'s ``keep``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

#: how a level computes its segments: at max_segment slots, in length buckets, or each at its own length
Packing = Literal["off", "buckets", "varlen"]
PACKING: tuple[Packing, ...] = ("off", "buckets", "varlen")

#: the most distinct bucket lengths of one batch (measured in benchmarks/README.md)
MAX_BUCKETS = 3


def needed_slots(span: Tensor, m: int) -> Tensor:
    """(s,) slots each segment needs: its own span plus the first slot past it, at most ``m``."""
    return (span + 1).clamp(max=m)


def bucket_edges(need: Tensor, m: int, max_buckets: int = MAX_BUCKETS) -> list[int]:
    """The bucket lengths that cover ``need`` with the fewest slots in all.

    A small dynamic programme over the histogram of needed lengths (1 .. m): the longest needed
    length is always an edge, and every other edge is placed where it saves the most slots.

    Args:
        need: (s,) long, needed slots of each segment, in 1 .. m.
        m: the level's max segment length.
        max_buckets: the most edges.

    Returns:
        the edges, ascending (empty when there are no segments).
    """
    if need.numel() == 0:
        return []
    counts = torch.bincount(need.clamp(1, m), minlength=m + 1).tolist()  # counts[L] for L in 0..m
    top = max(length for length in range(m + 1) if counts[length])
    prefix = [0]
    for length in range(1, m + 1):
        prefix.append(prefix[-1] + counts[length])
    inf = float("inf")
    # best[b][i]: fewest slots covering every need <= i with b buckets, the last ending at i
    best = [[inf] * (m + 1) for _ in range(max_buckets + 1)]
    back = [[0] * (m + 1) for _ in range(max_buckets + 1)]
    best[0][0] = 0
    for b in range(1, max_buckets + 1):
        for i in range(1, top + 1):
            for j in range(0, i):
                if best[b - 1][j] == inf:
                    continue
                cost = best[b - 1][j] + (prefix[i] - prefix[j]) * i
                if cost < best[b][i]:
                    best[b][i], back[b][i] = cost, j
    b = min(range(1, max_buckets + 1), key=lambda k: (best[k][top], k))
    edges, i = [], top
    while b > 0 and i > 0:
        edges.append(i)
        i, b = back[b][i], b - 1
    return sorted(edges)


def bucket_cut(need: Tensor, m: int, max_buckets: int = MAX_BUCKETS) -> Tensor:
    """(s,) long: each segment's bucket length (the shortest edge >= its need)."""
    edges = bucket_edges(need, m, max_buckets)
    if not edges:
        return need.clone()
    e = torch.tensor(edges, device=need.device, dtype=need.dtype)
    return e[torch.searchsorted(e, need)]


def keep_mask(cut: Tensor, m: int) -> Tensor:
    """(s, m) bool: the slots each segment computes (those before its cut)."""
    return torch.arange(m, device=cut.device)[None, :] < cut[:, None]


def groups(cut: Tensor) -> list[tuple[int, Tensor]]:
    """The buckets of ``cut``: (length, rows) for each distinct length, ascending."""
    lengths = torch.unique(cut).tolist()  # the one host sync of a bucketed call
    return [(int(length), (cut == length).nonzero(as_tuple=True)[0]) for length in lengths]


def run_bucketed(cut: Tensor, fn: Callable[[Tensor, int], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """``fn(rows, length)`` for every bucket, its results back in the order of the rows.

    Args:
        cut: (s,) bucket length of each row.
        fn: the rows of one bucket and its length -> tensors whose first axis is those rows (the
            same number of tensors, of the same shape past the first axis, for every bucket).

    Returns:
        each of ``fn``'s results for all rows, in row order.
    """
    parts = groups(cut)
    if len(parts) == 1:
        return fn(parts[0][1], parts[0][0])
    outs = [fn(rows, length) for length, rows in parts]
    order = torch.cat([rows for _, rows in parts])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return tuple(torch.cat(col)[inverse] for col in zip(*outs, strict=True))


def pad_slots(x: Tensor, m: int, value: float) -> Tensor:
    """``x`` (s, L, ...) padded with ``value`` to (s, m, ...) along the slot axis."""
    length = x.shape[1]
    if length == m:
        return x
    fill = x.new_full((x.shape[0], m - length, *x.shape[2:]), value)
    return torch.cat([x, fill], dim=1)
