"""A byte n-gram's next-byte entropy, as fixed-size tables: what the ``entropy`` splitter reads.

BLT's patching rule puts a boundary where a small byte model is unsure of the next byte. The model
here is a byte n-gram counted on the training split, with the conventions of the judge
(:mod:`zonkey.core.evaluate.judge`): symbols are the 256 bytes and a start symbol, every chunk is preceded
by ``order − 1`` start symbols, contexts are packed 9 bits a symbol, the newest in the low bits.

Model. For a context h of c bytes (c = 0 … order − 1) the next-byte distribution interpolates
absolute discounting with the distribution of h's suffix h' (h without its oldest symbol):

    P_c(w | h) = max(n(h w) − D_c, 0) / n(h) + D_c · N(h) / n(h) · P_{c−1}(w | h'),   P_{−1} uniform,

with n the counts, N(h) the distinct bytes seen after h and D_c = n1 / (n1 + 2 n2) from the
counts of counts of order c. Only contexts seen at least ``min_count`` times are kept, the
``capacity`` most frequent of each order, and only when their suffix is kept too; each kept
context stores the entropy (bits) of its P_c. A position's entropy is that of its longest kept
context (every position has the empty one).

Tables. ``keys`` (order, capacity) int64, sorted per row and padded with :data:`PAD_KEY`;
``entropy`` (order, capacity) int32, in units of 2^-16 bits (:data:`ENTROPY_SCALE`). Integers so
that a checkpoint's weight average leaves them exactly as they were fitted. Lookups are
``torch.searchsorted`` per order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from zonkey.core.nn.existence import force_bos_in_gaps

BITS = 9  # bits per packed symbol: 256 bytes + the start symbol (as the judge)
START = 256
MAX_ORDER = 7  # a context of 6 symbols and the next byte fit in 63 bits
PAD_KEY = torch.iinfo(torch.int64).max  # sorts after every packed context
ENTROPY_SCALE = 2 ** 16  # stored entropy = round(bits × scale)


@dataclass
class EntropyTables:
    """The fitted tables and what the fit measured.

    Attributes:
        keys: (order, capacity) int64 kept contexts, sorted per row, :data:`PAD_KEY` after the kept ones.
        entropy: (order, capacity) int32 entropy of each kept context, in 2^-16 bits.
        kept: contexts kept per order (context length 0 … order − 1).
        discounts: D of every order.
        train_bytes: bytes counted.
    """

    keys: Tensor
    entropy: Tensor
    kept: list[int]
    discounts: list[float]
    train_bytes: int


def symbol_rows(tokens: Tensor, order: int) -> Tensor:
    """Byte rows (b, n) with ``order − 1`` start symbols in front: (b, n + order − 1) int64."""
    pad = torch.full((tokens.shape[0], order - 1), START, dtype=torch.int64, device=tokens.device)
    return torch.cat([pad, tokens.long()], dim=1)


def context_keys(sym: Tensor, order: int) -> list[Tensor]:
    """The packed context of every position, for context lengths 0 … ``order − 1``.

    Args:
        sym: (b, L) int64 symbols.
        order: the n-gram order.

    Returns:
        ``order`` tensors (b, L): entry c holds the c symbols before each position (0 for c = 0);
        meaningful where at least c symbols precede the position.
    """
    keys = [torch.zeros_like(sym)]
    prev = torch.zeros_like(sym)
    for _ in range(1, order):
        k = torch.zeros_like(sym)
        k[:, 1:] = (prev[:, :-1] << BITS) | sym[:, :-1]
        keys.append(k)
        prev = k
    return keys


def _discount(counts: Tensor) -> float:
    n1 = float((counts == 1).sum())
    n2 = float((counts == 2).sum())
    if n1 == 0 or n1 + 2 * n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2 * n2), 0.05), 0.95)


def _entropy_bits(p: Tensor) -> Tensor:
    """(K, 256) distributions -> (K,) entropy in bits."""
    return -(p * torch.log2(p.clamp_min(1e-30))).sum(dim=1)


def _stream(chunks: Sequence[bytes], order: int) -> tuple[Tensor, Tensor]:
    """All chunks as one (1, L) symbol row, each preceded by start symbols, and its (L,) real mask."""
    pad = np.full(order - 1, START, dtype=np.int64)
    parts: list[np.ndarray] = []
    for c in chunks:
        if c:
            parts += [pad, np.frombuffer(bytes(c), dtype=np.uint8).astype(np.int64)]
    if not parts:
        raise ValueError("the entropy splitter has no training text (every chunk is empty)")
    sym = torch.from_numpy(np.concatenate(parts))[None]
    return sym, sym[0] < START


def fit_tables(chunks: Sequence[bytes], *, order: int, capacity: int, min_count: int) -> EntropyTables:
    """Count the n-grams of ``chunks`` and keep the entropy of every frequent context.

    Args:
        chunks: training text, each chunk its own row (as the trainer's batches hold them).
        order: the n-gram order (contexts of up to ``order − 1`` bytes), 1 … 7.
        capacity: contexts kept per order at most.
        min_count: a context seen fewer times is not kept.

    Returns:
        The :class:`EntropyTables`.

    Raises:
        ValueError: an order outside 1 … 7, or no text.
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"entropy splitter order must be between 1 and {MAX_ORDER} (got {order})")
    sym, real = _stream(chunks, order)
    nxt = sym[0][real]
    keys_out = torch.full((order, capacity), PAD_KEY, dtype=torch.int64)
    ent_out = torch.zeros((order, capacity), dtype=torch.int32)
    kept: list[int] = []
    discounts: list[float] = []
    prev_keys = torch.zeros(1, dtype=torch.int64)
    prev_p = torch.full((1, 256), 1.0 / 256)  # the uniform distribution below order 0
    for c, ck in enumerate(context_keys(sym, order)):
        ctx = ck[0][real]
        pairs, pcount = torch.unique((ctx << BITS) | nxt, return_counts=True)  # sorted by (context, byte)
        pctx, pbyte = pairs >> BITS, pairs & (2 ** BITS - 1)
        uctx, inverse, types = torch.unique_consecutive(pctx, return_inverse=True, return_counts=True)
        totals = torch.zeros(len(uctx), dtype=torch.int64).index_add_(0, inverse, pcount)
        d = _discount(pcount)
        discounts.append(d)
        # the suffix of a context (its c − 1 newest symbols) must be kept for it to back off to
        suffix = uctx & ((1 << (BITS * (c - 1))) - 1) if c > 1 else torch.zeros_like(uctx)
        sidx = torch.searchsorted(prev_keys, suffix).clamp(max=len(prev_keys) - 1)
        ok = (totals >= min_count) & (prev_keys[sidx] == suffix)
        cand = torch.nonzero(ok).squeeze(1)
        if len(cand) > capacity:  # the most frequent, ties by key (uctx is sorted)
            order_ = torch.sort(totals[cand], descending=True, stable=True).indices[:capacity]
            cand = torch.sort(cand[order_]).values
        k = len(cand)
        row_of = torch.full((len(uctx),), -1, dtype=torch.int64)
        row_of[cand] = torch.arange(k)
        tot = totals[cand].double()
        lam = (d * types[cand].double() / tot).float()  # (k,)
        p = lam[:, None] * prev_p[sidx[cand]]  # (k, 256) the backed-off mass
        rows = row_of[inverse]
        sel = rows >= 0
        mass = ((pcount[sel].double() - d).clamp_min(0.0) / tot[rows[sel]]).float()
        p.index_put_((rows[sel], pbyte[sel]), mass, accumulate=True)
        keys_out[c, :k] = uctx[cand]
        ent_out[c, :k] = torch.round(_entropy_bits(p) * ENTROPY_SCALE).to(torch.int32)
        kept.append(k)
        prev_keys, prev_p = uctx[cand], p
    return EntropyTables(keys_out, ent_out, kept, discounts, int(real.sum()))


def position_entropy(tokens: Tensor, keys: Tensor, entropy: Tensor) -> Tensor:
    """The next-byte entropy at every position of byte rows, from its longest kept context.

    Args:
        tokens: (b, n) byte values; each row is read as a chunk of its own (start symbols before it).
        keys: (order, capacity) int64 sorted kept contexts.
        entropy: (order, capacity) int32 their entropy in 2^-16 bits.

    Returns:
        (b, n) int32 entropy in 2^-16 bits (values on padding are meaningless).
    """
    order = keys.shape[0]
    sym = symbol_rows(tokens, order)
    n = tokens.shape[1]
    out = torch.zeros(tokens.shape, dtype=torch.int32, device=tokens.device)
    for c, ck in enumerate(context_keys(sym, order)):
        q = ck[:, order - 1:].contiguous()  # (b, n)
        row = keys[c]
        idx = torch.searchsorted(row, q.reshape(-1)).clamp(max=row.shape[0] - 1).reshape(q.shape)
        found = row[idx] == q
        out = torch.where(found, entropy[c][idx], out)
    assert out.shape[1] == n
    return out


def mean_segment(entropy: Tensor, valid: Tensor, threshold: int, m: int) -> float:
    """Mean segment length of the rule "BOS where entropy > threshold" (bytes per BOS).

    Position 0 of every row is a BOS and one is forced in any gap of ``m``, as the splitter does.

    Args:
        entropy: (b, n) int32 entropies.
        valid: (b, n) bool.
        threshold: θ, in the units of ``entropy``.
        m: max segment length.

    Returns:
        real bytes / BOS.
    """
    bos = force_bos_in_gaps((entropy > threshold) & valid, valid, m)
    return float(valid.sum()) / max(int(bos.sum()), 1)


def bisect_threshold(entropy: Tensor, valid: Tensor, target: float, m: int) -> tuple[int, float]:
    """The θ whose rule gives the mean segment length closest to ``target`` (bisection).

    The length grows with θ, from every byte a BOS (θ below every entropy) to only the forced ones.

    Args:
        entropy: (b, n) int32 entropies of the training text.
        valid: (b, n) bool.
        target: the target mean segment length (bytes).
        m: max segment length.

    Returns:
        (θ in the units of ``entropy``, the mean segment length it gives).
    """
    real = entropy[valid]
    lo, hi = int(real.min()) - 1, int(real.max())  # L(lo) is the shortest, L(hi) the longest
    if mean_segment(entropy, valid, hi, m) < target:
        return hi, mean_segment(entropy, valid, hi, m)
    while hi - lo > 1:  # invariant: L(lo) < target <= L(hi), or lo is the lowest θ
        mid = (lo + hi) // 2
        if mean_segment(entropy, valid, mid, m) < target:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda t: abs(mean_segment(entropy, valid, t, m) - target))
    return best, mean_segment(entropy, valid, best, m)
