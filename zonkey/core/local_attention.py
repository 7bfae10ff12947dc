"""Sliding-window probabilistic attention: every query reads only the keys within ``window`` positions.

The scores are those of :func:`zonkey.core.attention.probabilistic_attention` (§3): the existence
bias ``log p_k − log p_q`` for k > q, padded keys masked for real queries, padded queries attending
without bias and giving exact zero rows. On top of that, a key further than ``window`` positions
from its query is masked (and, with ``causal``, every key after it).

The work is O(n · window), never O(n²): the queries are cut into blocks of ``block`` positions and
each block is scored only against the band of keys its window can reach (``block + 2·window`` keys,
``block + window`` when causal), gathered as overlapping views of the key sequence. Blocks are run
in groups whose score tensors stay under a fixed number of elements, so the memory is bounded too.
When the window covers the whole sequence the band is the whole sequence and the result equals full
attention up to floating-point summation order (the parity tests check both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from zonkey.core.attention import check_inputs, split_existence, zero_padded_queries

#: scores per group of blocks (b · blocks · h · block · band elements) before a new group starts
GROUP_ELEMENTS = 1 << 23


def default_block(window: int) -> int:
    """The query block of a window: a quarter of it, between 8 and 256 positions.

    A block reads ``block + 2·window`` keys for the ``2·window + 1`` its queries need; a quarter
    keeps the extra work near an eighth (a quarter when causal) without many tiny blocks.
    """
    return max(8, min(256, window // 4))


def local_attention(q: Tensor, k: Tensor, v: Tensor, log_existence: Tensor, *, window: int, causal: bool = False,
                    block: int | None = None) -> Tensor:
    """Probabilistic attention restricted to keys within ``window`` positions of each query.

    Args:
        q: (b, h, n, dh) queries.
        k: (b, h, n, dh) keys.
        v: (b, h, n, dh) values.
        log_existence: (b, n) log existence (−inf: hard padding).
        window: the largest query-key distance attended (>= 1); ``window >= n − 1`` is full attention.
        causal: mask keys after the query as well.
        block: query positions per block (default: :func:`default_block`).

    Returns:
        (b, h, n, dh); rows of padded queries are exactly 0.

    Raises:
        ValueError: shapes disagree, or window or block below 1.
    """
    check_inputs(q, k, v, log_existence)
    if window < 1:
        raise ValueError(f"window must be at least 1 (got {window})")
    bsz, h, n, dh = q.shape
    blk = default_block(window) if block is None else block
    if blk < 1:
        raise ValueError(f"block must be at least 1 (got {blk})")
    blk = min(blk, max(n, 1))
    nb = -(-n // blk)  # blocks
    right = 0 if causal else window  # keys after the last query a block can reach
    band = blk + window + right  # keys scored per block
    nq = nb * blk
    # keys and values padded so that block j's band is rows [j·blk, j·blk + band) of the padded tensor
    kp = F.pad(k, (0, 0, window, nq - n + right))
    vp = F.pad(v, (0, 0, window, nq - n + right))
    qp = F.pad(q, (0, 0, 0, nq - n))
    safe, pad = split_existence(log_existence)  # (b, n)
    safe = safe.to(q.dtype) if q.dtype == torch.float64 else safe.float()
    group = max(1, GROUP_ELEMENTS // max(1, bsz * h * blk * band))
    scale = 1.0 / math.sqrt(dh)
    offs_q = torch.arange(blk, device=q.device)
    offs_k = torch.arange(band, device=q.device)
    outs = []
    for j0 in range(0, nb, group):
        j1 = min(nb, j0 + group)
        g = j1 - j0
        starts = torch.arange(j0, j1, device=q.device)[:, None] * blk  # (g, 1)
        qpos = starts + offs_q  # (g, blk)
        kpos = starts - window + offs_k  # (g, band)
        qg = qp[:, :, j0 * blk:j1 * blk].reshape(bsz, h, g, blk, dh)
        kg = kp[:, :, j0 * blk:j0 * blk + (g - 1) * blk + band].unfold(2, band, blk).transpose(-1, -2)
        vg = vp[:, :, j0 * blk:j0 * blk + (g - 1) * blk + band].unfold(2, band, blk).transpose(-1, -2)
        bias = _band_bias(safe, pad, qpos, kpos, n, window, causal).to(q.dtype)  # (b, g, blk, band)
        # (b, h, g, ·, dh) -> (b·g, h, ·, dh): every block is one attention call of the batch
        qf = qg.transpose(1, 2).reshape(bsz * g, h, blk, dh)
        kf = kg.transpose(1, 2).reshape(bsz * g, h, band, dh)
        vf = vg.transpose(1, 2).reshape(bsz * g, h, band, dh)
        of = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=bias.reshape(bsz * g, 1, blk, band), scale=scale)
        outs.append(of.reshape(bsz, g, h, blk, dh).transpose(1, 2).reshape(bsz, h, g * blk, dh))
    out = torch.cat(outs, dim=2)[:, :, :n] if len(outs) > 1 else outs[0][:, :, :n]
    return zero_padded_queries(out, log_existence)


def _band_bias(safe: Tensor, pad: Tensor, qpos: Tensor, kpos: Tensor, n: int, window: int, causal: bool) -> Tensor:
    """The additive bias of a group of blocks against their key bands.

    Args:
        safe: (b, n) finite log existence (0 on padding).
        pad: (b, n) bool hard padding.
        qpos: (g, blk) query positions (>= n: the filler of the last block).
        kpos: (g, band) key positions (outside [0, n): the bands' edges).
        n: sequence length.
        window: the largest distance attended.
        causal: mask keys after the query.

    Returns:
        (b, g, blk, band): the probabilistic-attention bias with −inf on masked keys. Filler query
        rows get no mask at all (their output is dropped), so no row is entirely −inf.
    """
    inside_k = (kpos >= 0) & (kpos < n)  # (g, band)
    real_q = qpos < n  # (g, blk)
    sk = safe[:, kpos.clamp(0, n - 1)]  # (b, g, band)
    pk = pad[:, kpos.clamp(0, n - 1)]
    sq = safe[:, qpos.clamp(max=n - 1)]  # (b, g, blk)
    pq = pad[:, qpos.clamp(max=n - 1)] | ~real_q[None]
    rel = kpos[:, None, :] - qpos[:, :, None]  # (g, blk, band) = key − query
    future = rel > 0
    diff = sk[:, :, None, :] - sq[:, :, :, None]  # (b, g, blk, band) = log p_k − log p_q
    bias = torch.where(future[None], diff, torch.zeros_like(diff))
    bias = bias.masked_fill(pq[..., None], 0.0)  # padded query rows: no bias
    far = ~inside_k[:, None, :] | (rel.abs() > window)  # (g, blk, band)
    if causal:
        far = far | future
    masked = (pk[:, :, None, :] & ~pq[..., None]) | far[None]
    masked = masked & real_q[None, :, :, None]
    return bias.masked_fill(masked, float("-inf"))
