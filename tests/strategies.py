"""Shared hypothesis strategies for zonkey's property tests (STYLE.md, test tier 3).

Shapes are small and bounded, so a law checked on 50 examples stays well under a second. Values a
law is *about* (BOS probabilities, log existences, BOS layouts, document lengths) are drawn element
by element so that hypothesis can shrink a counterexample to the few numbers that matter; inputs
whose values are incidental (q, k, v) come from a drawn seed and a drawn scale.

Axis letters follow ``zonkey/core/contracts/shapes.py``: b documents, n positions, s segments, m max segment
length, h heads, dh head width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch import Tensor

P_MIN = 1e-6  # the paper's ε: p_bos lives in [ε, 1 − ε] (§4)
P_MAX = 1.0 - 1e-6
LOG_P_MIN = math.log(P_MIN)  # the smallest existence probability the gradients must survive
VERY_NEGATIVE = -1e4  # a finite log existence whose exp underflows to exactly 0 (even in float64)
NEG_INF = float("-inf")

MAX_B = 3
MAX_N = 12


# ---------------------------------------------------------------------------------------- scalars


def probabilities() -> st.SearchStrategy[float]:
    """BOS probabilities in [ε, 1 − ε], with the two extremes drawn often."""
    return st.one_of(
        st.sampled_from([P_MIN, P_MAX, 0.5]),
        st.floats(P_MIN, P_MAX, allow_nan=False, allow_infinity=False),
    )


def log_probabilities() -> st.SearchStrategy[float]:
    """Log existence probabilities in [log ε, 0], extremes drawn often."""
    return st.one_of(
        st.sampled_from([0.0, LOG_P_MIN, math.log(0.5)]),
        st.floats(LOG_P_MIN, 0.0, allow_nan=False, allow_infinity=False),
    )


# ------------------------------------------------------------------------------ documents, layouts


def valid_from_lengths(lengths: list[int], n: int) -> Tensor:
    """(b, n) bool, True on the first ``lengths[i]`` positions of row i (documents are left-aligned)."""
    return torch.arange(n)[None, :] < torch.tensor(lengths, dtype=torch.long)[:, None]


@st.composite
def document_lengths(draw: st.DrawFn, b: int, n: int, *, min_len: int = 1) -> list[int]:
    """One length in [min_len, n] per document; often one of them fills the row, as in a batch
    padded to its longest document."""
    lengths = draw(st.lists(st.integers(min_len, n), min_size=b, max_size=b))
    if n >= min_len and draw(st.booleans()):
        lengths[draw(st.integers(0, b - 1))] = n
    return lengths


@dataclass(frozen=True)
class BosBatch:
    """A batch of documents with per-position BOS probabilities and sampled BOS decisions."""

    p_bos: Tensor  # (b, n) in [ε, 1 − ε], arbitrary on padding
    bos: Tensor  # (b, n) bool, "sampled": any layout, also True on padding (which must be ignored)
    valid: Tensor  # (b, n) bool, left-aligned real positions
    m: int  # max segment length

    @property
    def lengths(self) -> Tensor:  # (b,)
        return self.valid.sum(dim=1)


@st.composite
def bos_batches(
    draw: st.DrawFn, *, max_b: int = MAX_B, max_n: int = MAX_N, max_m: int = 6, min_len: int = 0
) -> BosBatch:
    """Documents (possibly empty when ``min_len`` is 0), p_bos, a raw BOS layout and a window m."""
    b = draw(st.integers(1, max_b))
    n = draw(st.integers(1, max_n))
    lengths = draw(document_lengths(b, n, min_len=min_len))
    p = draw(st.lists(probabilities(), min_size=b * n, max_size=b * n))
    bos = draw(st.lists(st.booleans(), min_size=b * n, max_size=b * n))
    m = draw(st.integers(1, max_m))
    return BosBatch(
        p_bos=torch.tensor(p, dtype=torch.float32).reshape(b, n),
        bos=torch.tensor(bos, dtype=torch.bool).reshape(b, n),
        valid=valid_from_lengths(lengths, n),
        m=m,
    )


@dataclass(frozen=True)
class SegmentLayout:
    """Overlapping fixed-length segments cut out of a batch (§4 item 1)."""

    p_bos: Tensor  # (b, n)
    valid: Tensor  # (b, n) bool
    doc: Tensor  # (s,) long
    start: Tensor  # (s,) long, distinct (doc, start) pairs on real positions
    m: int


@st.composite
def segment_layouts(draw: st.DrawFn, *, max_b: int = MAX_B, max_n: int = MAX_N, max_m: int = 8) -> SegmentLayout:
    """Segments start at position 0 of every non-empty document and at any other real positions;
    nothing forces them to cover every position, so laws about coverage must hold either way."""
    batch = draw(bos_batches(max_b=max_b, max_n=max_n, max_m=max_m, min_len=0))
    starts = batch.bos.clone()
    starts[:, 0] = True
    doc, start = (starts & batch.valid).nonzero(as_tuple=True)
    return SegmentLayout(p_bos=batch.p_bos, valid=batch.valid, doc=doc, start=start, m=batch.m)


# ------------------------------------------------------------------------------- existence profiles

PROFILE_KINDS = ("zero", "decaying", "arbitrary", "sharp_drop", "sharp_drop_finite")


@st.composite
def log_existence_row(draw: st.DrawFn, n: int, real: int, *, kinds: tuple[str, ...] = PROFILE_KINDS) -> list[float]:
    """One row of log existence: ``real`` finite positions followed by −inf padding.

    Kinds of the finite part:
        zero: certain everywhere (plain attention).
        decaying: cumulative Σ log(1 − p_bos), non-increasing as a splitter produces.
        arbitrary: any value in [log ε, 0], not monotone (the bias must not assume monotonicity).
        sharp_drop: 0 then −inf from a drawn position on (inside the real part: a hard cut).
        sharp_drop_finite: 0 then −1e4 (finite, but exp underflows to 0).
    """
    if real == 0:
        return [NEG_INF] * n
    kind = draw(st.sampled_from(kinds))
    if kind == "zero":
        row = [0.0] * real
    elif kind == "decaying":
        steps = draw(st.lists(probabilities(), min_size=real, max_size=real))
        row = list(torch.tensor([0.0] + [math.log1p(-p) for p in steps[1:]], dtype=torch.float64).cumsum(0).tolist())
    elif kind == "arbitrary":
        row = draw(st.lists(log_probabilities(), min_size=real, max_size=real))
    else:
        cut = draw(st.integers(1, real))
        low = NEG_INF if kind == "sharp_drop" else VERY_NEGATIVE
        row = [0.0] * cut + [low] * (real - cut)
    return row + [NEG_INF] * (n - real)


@st.composite
def log_existence_profiles(
    draw: st.DrawFn, b: int, n: int, *, min_real: int = 1, padding: bool = True, kinds: tuple[str, ...] = PROFILE_KINDS
) -> Tensor:
    """(b, n) float64 log existence. With ``padding`` every row ends in a −inf tail of drawn length
    (at least ``min_real`` positions stay real); without it every entry is finite unless a
    ``sharp_drop`` kind puts −inf inside."""
    rows = []
    for _ in range(b):
        real = draw(st.integers(min(min_real, n), n)) if padding else n
        rows.append(draw(log_existence_row(n, real, kinds=kinds)))
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------- attention inputs


def qkv(shape: tuple[int, int, int, int], seed: int, *, scale: float = 1.0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Deterministic q, k, v of ``shape`` (b, h, n, dh) from a seed."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(shape, generator=gen, dtype=dtype) * scale for _ in range(3))  # type: ignore[return-value]


@dataclass(frozen=True)
class AttentionCase:
    """Inputs of probabilistic attention."""

    q: Tensor  # (b, h, n, dh)
    k: Tensor  # (b, h, n, dh)
    v: Tensor  # (b, h, n, dh)
    log_existence: Tensor  # (b, n)

    @property
    def real(self) -> Tensor:  # (b, n) bool, not hard padding
        return ~torch.isneginf(self.log_existence)

    def to(self, dtype: torch.dtype) -> AttentionCase:
        return AttentionCase(self.q.to(dtype), self.k.to(dtype), self.v.to(dtype), self.log_existence.to(dtype))

    def inputs(self, *, requires_grad: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fresh leaf copies of (q, k, v, log_existence)."""
        return tuple(t.detach().clone().requires_grad_(requires_grad) for t in (self.q, self.k, self.v, self.log_existence))  # type: ignore[return-value]


@st.composite
def attention_shapes(draw: st.DrawFn, *, max_b: int = 2, max_h: int = 2, max_n: int = 9, max_dh: int = 6) -> tuple[int, int, int, int]:
    """(b, h, n, dh)."""
    return (
        draw(st.integers(1, max_b)),
        draw(st.integers(1, max_h)),
        draw(st.integers(1, max_n)),
        draw(st.integers(1, max_dh)),
    )


@st.composite
def attention_cases(
    draw: st.DrawFn,
    *,
    max_b: int = 2,
    max_h: int = 2,
    max_n: int = 9,
    max_dh: int = 6,
    min_real: int = 1,
    padding: bool = True,
    kinds: tuple[str, ...] = PROFILE_KINDS,
    dtype: torch.dtype = torch.float64,
) -> AttentionCase:
    """q, k, v at a drawn scale (softmax from flat to nearly one-hot) and a log-existence profile."""
    b, h, n, dh = draw(attention_shapes(max_b=max_b, max_h=max_h, max_n=max_n, max_dh=max_dh))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    q, k, v = qkv((b, h, n, dh), seed, scale=scale, dtype=dtype)
    log_e = draw(log_existence_profiles(b, n, min_real=min_real, padding=padding, kinds=kinds)).to(dtype)
    return AttentionCase(q, k, v, log_e)
