"""Existence math of the Segment Splitter (§4 of the paper), all in float32 log space.

A segment starting at position i of a document assigns to its j-th position the probability that
the segment has not ended before it::

    e_j = Π_{i < k <= j} (1 - p_bos_k)        (e_i = 1; hard 0 past the document's end)

Existence *shares* divide, for every real document position, the existence of each overlapping
segment covering it by the sum over all covering segments, so each position contributes exactly 1 to
a position-wise loss however many segments overlap it (§4 item 7). The long- and short-segment
probabilities and the average BOS probability are the splitter's regularisation targets (§4 items
4-6).

Everything here is vectorised: no Python loop over documents or segments, and the only host sync
in a splitter forward is the one ``nonzero`` that turns sampled BOS positions into segments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

P_EPS = 1e-6  # p_bos lives in (P_EPS, 1 - P_EPS), §4
# log(1 − p_bos) for p_bos in [P_EPS, 1 − P_EPS], as exact Python floats (rounded once into the
# tensor's dtype by clamp)
LOG_NOT_BOS_MIN = math.log(P_EPS)
LOG_NOT_BOS_MAX = math.log1p(-P_EPS)
NEG_INF = float("-inf")


def _f32(x: Tensor) -> Tensor:
    return x.float() if x.dtype != torch.float64 else x


def float32_logits(head: nn.Linear, h: Tensor) -> Tensor:
    """A BOS head's logits in float32 (float64 stays float64), whatever autocast is on.

    Under bf16 autocast a head's output would be rounded to bf16, and the probabilities near 1
    that existence depends on with it (bf16 rounds 1 − 1e-4 to 1.0). The head is one row of
    weights, so running it in float32 costs nothing.

    Args:
        head: a linear layer ``d -> out``.
        h: (..., d) its input, any float dtype.

    Returns:
        (..., out) float32 logits.
    """
    dtype = torch.float64 if h.dtype == torch.float64 else torch.float32
    with torch.autocast(h.device.type, enabled=False):
        bias = None if head.bias is None else head.bias.to(dtype)
        return F.linear(h.to(dtype), head.weight.to(dtype), bias)


def clamp_p(p_bos: Tensor) -> Tensor:
    """Clamp BOS probabilities into (ε, 1 − ε) so every log below is finite."""
    return p_bos.clamp(P_EPS, 1.0 - P_EPS)


def log_not_bos(p_bos: Tensor) -> Tensor:
    """log(1 − p_bos), computed as log1p(−p) in float32 (float64 stays float64)."""
    return torch.log1p(-clamp_p(_f32(p_bos)))


def log_existence_from_log_not_bos(log_nb: Tensor, valid: Tensor | None = None) -> Tensor:
    """Existence of each position of segments whose first element is the segment start.

    Args:
        log_nb: (s, m) log(1 − p_bos) at each position of each segment; column 0 is ignored (the
            start always exists).
        valid: (s, m) bool, False past the document's end (hard 0 there: −inf in log space).

    Returns:
        (s, m) log existence, non-increasing along m, 0 at column 0.
    """
    steps = torch.cat([torch.zeros_like(log_nb[:, :1]), log_nb[:, 1:]], dim=1)
    log_e = torch.cumsum(steps, dim=1)  # (s, m)
    if valid is not None:
        log_e = log_e.masked_fill(~valid, NEG_INF)
    return log_e


def log_existence_from_bos_logits(bos_logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Existence from BOS logits (denoiser heads): log(1 − σ(x)) = logsigmoid(−x), stable for any x.

    Args:
        bos_logits: (s, m) logits; column 0 is ignored.
        valid: optional (s, m) bool mask of positions that can exist at all.
    """
    # the same (ε, 1 − ε) bounds as ``clamp_p``: log(1 − p) ∈ [log ε, log(1 − ε)]
    log_nb = torch.nn.functional.logsigmoid(-_f32(bos_logits)).clamp(LOG_NOT_BOS_MIN, LOG_NOT_BOS_MAX)
    return log_existence_from_log_not_bos(log_nb, valid)


def gather_segments(x: Tensor, doc: Tensor, start: Tensor, m: int, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cut fixed-length (overlapping) segments out of a batch of sequences.

    Args:
        x: (b, n, ...) the level's sequence.
        doc: (s,) long, the document of each segment.
        start: (s,) long, the first position of each segment.
        m: segment length.
        valid: (b, n) bool, real (non-padding) positions.

    Returns:
        segments (s, m, ...), seg_valid (s, m) bool (False past the document's end),
        positions (s, m) long (document position of each slot, clamped into range).
    """
    n = x.shape[1]
    offs = torch.arange(m, device=x.device)
    pos = start[:, None] + offs[None, :]  # (s, m)
    in_range = pos < n
    pos_c = pos.clamp(max=n - 1)
    seg_valid = in_range & valid[doc[:, None], pos_c]  # (s, m)
    seg = x[doc[:, None], pos_c]  # (s, m, ...)
    return seg, seg_valid, pos_c


def existence_shares(log_existence: Tensor, doc: Tensor, positions: Tensor, seg_valid: Tensor, b: int, n: int) -> Tensor:
    """Normalised existence shares (§4 item 7), differentiable with respect to ``log_existence``.

    For each real document position covered by segments, the shares of the covering segment slots
    sum to 1; padding slots get 0. Computed as a scatter log-sum-exp, so it stays exact even when
    every covering existence underflows float32.

    Args:
        log_existence: (s, m) log existence of each segment slot.
        doc: (s,) document of each segment.
        positions: (s, m) document position of each slot.
        seg_valid: (s, m) bool, slots that are real positions.
        b: batch size of the level.
        n: sequence length of the level.

    Returns:
        (s, m) shares in [0, 1].
    """
    le = _f32(log_existence).masked_fill(~seg_valid, NEG_INF)
    flat = rearrange(doc[:, None] * n + positions, "s m -> (s m)")
    le_flat = rearrange(le, "s m -> (s m)")
    big = torch.full((b * n,), NEG_INF, dtype=le.dtype, device=le.device)
    mx = big.scatter_reduce(0, flat, le_flat.detach(), reduce="amax", include_self=True)  # (b n)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    ex = torch.exp(le_flat - mx[flat])  # (s m); 0 on padding slots
    denom = torch.zeros(b * n, dtype=le.dtype, device=le.device).index_add(0, flat, ex)
    shares = ex / denom[flat].clamp_min(torch.finfo(le.dtype).tiny)
    shares = shares.masked_fill(~rearrange(seg_valid, "s m -> (s m)"), 0.0)
    return rearrange(shares, "(s m) -> s m", m=le.shape[1])


def _window_log_no_bos(p_bos: Tensor, valid: Tensor, w: int) -> tuple[Tensor, Tensor]:
    """The log of Π_{i<k<=i+w} (1 − p_k) for every i, and whether i+w is still inside the document.

    Returns:
        (b, n) log probability, (b, n) bool window-inside-document.
    """
    b, n = p_bos.shape
    log_nb = log_not_bos(p_bos).masked_fill(~valid, 0.0)
    c = torch.cat([torch.zeros_like(log_nb[:, :1]), torch.cumsum(log_nb, dim=1)], dim=1)  # (b, n+1)
    idx = torch.arange(n, device=p_bos.device)
    end = (idx + w).clamp(max=n - 1)
    window = c[:, end + 1] - c[:, idx + 1]  # Σ_{k=i+1}^{i+w}
    inside = ((idx + w) < n)[None, :] & valid[:, end]
    return window, inside & valid


def bos_probability_with_start(p_bos: Tensor, valid: Tensor) -> Tensor:
    """p_bos with position 0 of every document set to exactly 1 (the first position is a BOS)."""
    p = clamp_p(_f32(p_bos))
    first = torch.zeros_like(valid)
    first[:, 0] = True
    return torch.where(first, torch.ones_like(p), p).masked_fill(~valid, 0.0)


def average_bos(p_bos: Tensor, valid: Tensor) -> Tensor:
    """Mean BOS probability over the real positions of the batch (§4 item 4). Scalar."""
    p = _f32(p_bos).masked_fill(~valid, 0.0)
    return p.sum() / valid.sum().clamp_min(1)


def long_segment_probability(p_bos: Tensor, valid: Tensor, m: int) -> Tensor:
    """Mean probability that a position starts a segment longer than the window of ``m`` slots.

    That is, no BOS in its next ``m`` positions (§4 item 5). Windows that run past the document's
    end cannot overflow and count as 0.

    Args:
        p_bos: (b, n) BOS probabilities.
        valid: (b, n) bool real positions.
        m: the window (max segment length).

    Returns:
        The mean, a scalar.
    """
    p = bos_probability_with_start(p_bos, valid)
    log_w, inside = _window_log_no_bos(p_bos, valid, m)
    prob = (p * torch.exp(log_w)).masked_fill(~inside, 0.0)
    return prob.sum() / valid.sum().clamp_min(1)


def short_segment_probability(p_bos: Tensor, valid: Tensor, k: int) -> Tensor:
    """Mean probability that a position starts a segment shorter than the ``k`` compression vectors.

    That is, another BOS follows within the next ``k − 1`` positions (§4 item 6). Positions past
    the document's end are not BOS.

    Args:
        p_bos: (b, n) BOS probabilities.
        valid: (b, n) bool real positions.
        k: compression vectors per segment.

    Returns:
        The mean, a scalar.
    """
    if k <= 1:
        return p_bos.new_zeros(()).float()
    p = bos_probability_with_start(p_bos, valid)
    log_w, _ = _window_log_no_bos(p_bos, valid, k - 1)
    prob = p * (-torch.expm1(log_w))  # 1 − Π(1 − p)
    return prob.masked_fill(~valid, 0.0).sum() / valid.sum().clamp_min(1)


def force_bos_in_gaps(bos: Tensor, valid: Tensor, m: int) -> Tensor:
    """Add a BOS every ``m`` positions inside any run longer than ``m`` without one, and at 0.

    Vectorised with a running maximum of the last BOS index, so no position is left uncovered by
    a segment of length ``m``.

    Args:
        bos: (b, n) bool sampled or thresholded BOS decisions.
        valid: (b, n) bool real positions.
        m: max segment length.

    Returns:
        (b, n) bool BOS with position 0 set and no gap of m or more positions.
    """
    b, n = bos.shape
    idx = torch.arange(n, device=bos.device).expand(b, n)
    bos = bos.clone()
    bos[:, 0] = True
    last = torch.where(bos, idx, torch.zeros_like(idx)).cummax(dim=1).values
    dist = idx - last
    forced = (dist > 0) & (dist % m == 0)
    return (bos | forced) & valid


def segment_lengths(bos: Tensor, valid: Tensor) -> Tensor:
    """Length of the span from each BOS to the next BOS (or the document's end), per BOS position.

    Args:
        bos: (b, n) bool BOS positions.
        valid: (b, n) bool real positions.

    Returns:
        (b, n) long: the span length at BOS positions, 0 elsewhere. Sums to each document's length.
    """
    b, n = bos.shape
    idx = torch.arange(n, device=bos.device).expand(b, n)
    length = valid.sum(dim=1, keepdim=True)  # (b, 1)
    # next BOS strictly after i: reverse running minimum of BOS indices
    cand = torch.where(bos & valid, idx, torch.full_like(idx, n))
    nxt = torch.flip(torch.cummin(torch.flip(cand, [1]), dim=1).values, [1])  # first BOS at >= i
    nxt_after = torch.cat([nxt[:, 1:], torch.full_like(nxt[:, :1], n)], dim=1)
    span = torch.minimum(nxt_after, length.expand(b, n)) - idx
    return torch.where(bos & valid, span, torch.zeros_like(span))


def kept_mask(log_existence: Tensor, threshold: float) -> Tensor:
    """The leading slots whose existence stays at or above ``threshold``.

    The cut used to truncate decoded segments (§9.1).

    Args:
        log_existence: (s, m) log existence of each slot.
        threshold: the existence (not its log) a kept slot reaches.

    Returns:
        (s, m) bool.
    """
    alive = log_existence >= math.log(threshold)
    return torch.cumprod(alive.int(), dim=1).bool()
