"""From BOS decisions to overlapping segments with existence and shares (§4 items 1, 3, 7).

Shared by every splitter (learned or rule-based), so a baseline differs from the learned splitter
only in where its BOS probabilities come from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import Segments, SplitOutput
from zonkey.core.nn.existence import (
    average_bos,
    bos_probability_with_start,
    existence_shares,
    force_bos_in_gaps,
    gather_segments,
    log_existence_from_log_not_bos,
    log_not_bos,
    long_segment_probability,
    segment_lengths,
    short_segment_probability,
)


def decide_bos(p_bos: Tensor, valid: Tensor, m: int, *, sample: bool, generator: torch.Generator | None = None) -> Tensor:
    """BOS decisions: sampled (u < p) in training, p > 0.5 at inference.

    Position 0 is always a BOS, and a BOS is forced inside any gap of m positions.

    Args:
        p_bos: (b, n) BOS probabilities.
        valid: (b, n) bool real positions.
        m: segment length.
        sample: draw the decisions (training) instead of thresholding.
        generator: source of the draws.

    Returns:
        (b, n) bool.
    """
    if sample:
        u = torch.rand(p_bos.shape, device=p_bos.device, generator=generator)
        bos = u < p_bos.detach()
    else:
        bos = p_bos.detach() > 0.5
    return force_bos_in_gaps(bos & valid, valid, m)


def make_split(x: Tensor, valid: Tensor, p_bos: Tensor, bos: Tensor, m: int, k: int, *,
               existence: str = "soft") -> SplitOutput:
    """Cut segments at ``bos`` and attach existence, shares and the regularisation statistics.

    Args:
        x: (b, n, d) the level's sequence.
        valid: (b, n) bool.
        p_bos: (b, n) BOS probabilities (differentiable).
        bos: (b, n) bool decisions.
        m: segment length.
        k: compression vectors (defines "short").
        existence: ``soft`` (§4: e_j = Π(1 − p_bos)) or ``straight_through``: the forward pass uses
            the hard existence of the chosen BOS decisions (1 on each segment's own span, 0 after
            the next BOS, so every position is covered by exactly one segment with share 1) while
            gradients flow through the soft existence and shares.
    """
    b, n = valid.shape
    p_full = bos_probability_with_start(p_bos, valid)  # (b, n)
    doc, start = bos.nonzero(as_tuple=True)  # the one host sync of a split
    seg_x, seg_valid, positions = gather_segments(x, doc, start, m, valid)  # (s, m, d)
    lnb = log_not_bos(p_full)[doc[:, None], positions]  # (s, m)
    log_e = log_existence_from_log_not_bos(lnb, seg_valid)  # (s, m)
    shares = existence_shares(log_e, doc, positions, seg_valid, b, n)  # (s, m)
    spans = segment_lengths(bos, valid)[doc, start].clamp(max=m)  # (s,)
    if existence == "straight_through":
        own = (torch.arange(m, device=x.device)[None, :] < spans[:, None]) & seg_valid  # (s, m)
        log_e = torch.where(own, log_e - log_e.detach(), torch.full_like(log_e, float("-inf")))
        shares = own.to(shares.dtype) + shares - shares.detach()
    elif existence != "soft":
        raise ValueError(f"unknown existence mode {existence!r}; use 'soft' or 'straight_through'")
    segments = Segments(
        vectors=seg_x,
        valid=seg_valid,
        log_existence=log_e,
        shares=shares,
        doc=doc,
        start=start,
        positions=positions,
        span=spans,
        n_docs=b,
        seq_len=n,
    )
    return SplitOutput(
        p_bos=p_full,
        bos=bos,
        segments=segments,
        avg_bos=average_bos(p_full, valid),
        p_long=long_segment_probability(p_full, valid, m),
        p_short=short_segment_probability(p_full, valid, k),
    )
