"""Sliding-window probabilistic attention: every query reads only the keys within ``window`` positions.

The scores are those of :func:`zonkey.core.nn.attention.probabilistic_attention` (§3): the existence
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

from zonkey.core.nn.attention import check_inputs, split_existence, zero_padded_queries

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
    # existence of the keys on the padded axis (positions outside the sequence count as hard padding)
    # and of the queries (the last block's filler: 0)
    safe_k = F.pad(safe, (window, nq - n + right))
    pad_k = F.pad(pad, (window, nq - n + right), value=True)
    safe_q = F.pad(safe, (0, nq - n))
    # what depends only on the query-key offset is the same in every block
    rel = torch.arange(band, device=q.device)[None, :] - window - torch.arange(blk, device=q.device)[:, None]
    future = rel > 0  # (blk, band)
    far = (rel.abs() > window) | future if causal else rel.abs() > window
    not_self = rel != 0
    group = max(1, GROUP_ELEMENTS // max(1, bsz * h * blk * band))
    scale = 1.0 / math.sqrt(dh)
    outs = []
    for j0 in range(0, nb, group):
        j1 = min(nb, j0 + group)
        g = j1 - j0
        keys = slice(j0 * blk, j0 * blk + (g - 1) * blk + band)
        qg = qp[:, :, j0 * blk:j1 * blk].reshape(bsz, h, g, blk, dh)
        kg = kp[:, :, keys].unfold(2, band, blk).transpose(-1, -2)  # (b, h, g, band, dh)
        vg = vp[:, :, keys].unfold(2, band, blk).transpose(-1, -2)
        sk = safe_k[:, keys].unfold(1, band, blk)  # (b, g, band)
        pk = pad_k[:, keys].unfold(1, band, blk)
        sq = safe_q[:, j0 * blk:j1 * blk].reshape(bsz, g, blk)
        # the existence bias log p_k − log p_q on keys after the query; −inf on keys out of the window
        # and on padded keys (a padded query keeps its own key, so its row stays finite; its output is 0)
        bias = torch.where(future, sk[:, :, None, :] - sq[:, :, :, None], 0.0)  # (b, g, blk, band)
        bias = bias.masked_fill((pk[:, :, None, :] & not_self) | far, float("-inf")).to(q.dtype)
        # (b, h, g, ·, dh) -> (b·g, h, ·, dh): every block is one attention call of the batch
        qf = qg.transpose(1, 2).reshape(bsz * g, h, blk, dh)
        kf = kg.transpose(1, 2).reshape(bsz * g, h, band, dh)
        vf = vg.transpose(1, 2).reshape(bsz * g, h, band, dh)
        of = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=bias.reshape(bsz * g, 1, blk, band), scale=scale)
        outs.append(of.reshape(bsz, g, h, blk, dh).transpose(1, 2).reshape(bsz, h, g * blk, dh))
    out = torch.cat(outs, dim=2)[:, :, :n] if len(outs) > 1 else outs[0][:, :, :n]
    return zero_padded_queries(out, log_existence)
