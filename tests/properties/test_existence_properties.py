"""Laws of the splitter's existence math (§4), checked on hypothesis-drawn batches.

Laws, not golden numbers: existence is a probability that never grows along a segment; shares
split each covered position's weight of 1 among the segments covering it; forcing BOS leaves no
gap of m; segment lengths tile each document; the regularisation probabilities are probabilities
and padding never changes any of them.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import strategies as zs
from zonkey.core.nn import existence as ex

pytestmark = pytest.mark.usefixtures("single_thread")
LAWS = settings(max_examples=50, deadline=None)


def _segment_existence(layout: zs.SegmentLayout, p_bos: torch.Tensor | None = None):
    """Cut the layout's segments and compute their log existence: (log_e, seg_valid, positions)."""
    p = layout.p_bos if p_bos is None else p_bos
    seg_p, seg_valid, positions = ex.gather_segments(p, layout.doc, layout.start, layout.m, layout.valid)  # (s, m)
    log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(seg_p), seg_valid)  # (s, m)
    return log_e, seg_valid, positions


def _per_position(values: torch.Tensor, layout: zs.SegmentLayout, positions: torch.Tensor) -> torch.Tensor:
    """Sum (s, m) slot values into (b, n) document positions."""
    b, n = layout.valid.shape
    flat = (layout.doc[:, None] * n + positions).reshape(-1)
    total = torch.zeros(b * n, dtype=values.dtype).index_add(0, flat, values.reshape(-1))
    return total.reshape(b, n)


def _with_other_padding(p_bos: torch.Tensor, valid: torch.Tensor, seed: int) -> torch.Tensor:
    """The same real probabilities, different values on padding."""
    gen = torch.Generator().manual_seed(seed)
    other = torch.rand(p_bos.shape, generator=gen).clamp(zs.P_MIN, zs.P_MAX)
    return torch.where(valid, p_bos, other)


# ------------------------------------------------------------------------------------- existence


@LAWS
@given(zs.bos_batches(max_n=16))
def test_existence_is_a_probability_non_increasing_along_the_segment(batch: zs.BosBatch) -> None:
    # each row is one segment: column 0 its start, ``valid`` False past the document's end
    log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(batch.p_bos), batch.valid)  # (s, m)
    e = log_e.exp()
    assert ((e >= 0) & (e <= 1)).all()
    assert (log_e[:, 1:] <= log_e[:, :-1]).all()
    assert torch.equal(torch.isneginf(log_e), ~batch.valid)  # hard 0 exactly past the end
    starts = batch.valid[:, 0]
    assert (log_e[starts, 0] == 0).all()  # the start always exists


@LAWS
@given(zs.bos_batches(max_n=16))
def test_existence_is_the_product_of_not_bos_probabilities(batch: zs.BosBatch) -> None:
    p = batch.p_bos.double().clamp(zs.P_MIN, zs.P_MAX)
    steps = torch.cat([torch.ones_like(p[:, :1]), 1 - p[:, 1:]], dim=1)
    log_expected = torch.cumprod(steps, dim=1).log()  # float64 product, the definition in §4 item 3
    log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(batch.p_bos), batch.valid)
    real = batch.valid
    # float32 log space: absolute error grows with the number of summed terms
    torch.testing.assert_close(log_e[real].double(), log_expected[real], rtol=1e-5, atol=1e-4)


@LAWS
@given(zs.bos_batches(max_n=16))
def test_existence_from_logits_matches_existence_from_probabilities(batch: zs.BosBatch) -> None:
    p = batch.p_bos.double().clamp(zs.P_MIN, zs.P_MAX)
    logits = torch.log(p) - torch.log1p(-p)
    from_logits = ex.log_existence_from_bos_logits(logits, batch.valid)
    from_p = ex.log_existence_from_log_not_bos(ex.log_not_bos(p), batch.valid)
    assert torch.equal(torch.isneginf(from_logits), torch.isneginf(from_p))
    real = batch.valid
    torch.testing.assert_close(from_logits[real], from_p[real], rtol=1e-9, atol=1e-9)
    assert (from_logits[:, 1:] <= from_logits[:, :-1]).all()


@LAWS
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=2, max_size=12))
def test_existence_from_extreme_logits_is_finite_with_finite_gradients(values: list[float]) -> None:
    logits = torch.tensor([values], requires_grad=True)  # (1, m)
    log_e = ex.log_existence_from_bos_logits(logits)
    assert torch.isfinite(log_e).all()
    assert (log_e <= 0).all() and (log_e[:, 1:] <= log_e[:, :-1]).all()
    log_e.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------------------------- shares


@LAWS
@given(zs.segment_layouts())
def test_shares_sum_to_one_over_the_slots_covering_each_real_position(layout: zs.SegmentLayout) -> None:
    log_e, seg_valid, positions = _segment_existence(layout)
    b, n = layout.valid.shape
    shares = ex.existence_shares(log_e, layout.doc, positions, seg_valid, b, n)  # (s, m)
    assert shares.shape == log_e.shape
    assert ((shares >= 0) & (shares <= 1)).all()
    assert (shares[~seg_valid] == 0).all()  # padding slots carry no weight

    total = _per_position(shares, layout, positions)  # (b, n)
    covered = _per_position(seg_valid.float(), layout, positions) > 0
    assert not (covered & ~layout.valid).any()  # no slot covers padding
    torch.testing.assert_close(total[covered], torch.ones_like(total[covered]), rtol=0, atol=1e-5)
    assert (total[~covered] == 0).all()


@LAWS
@given(zs.segment_layouts(), st.integers(0, 2**31 - 1))
def test_shares_are_differentiable_and_their_total_has_zero_gradient(layout: zs.SegmentLayout, seed: int) -> None:
    p = layout.p_bos.clone().requires_grad_(True)
    log_e, seg_valid, positions = _segment_existence(layout, p)
    b, n = layout.valid.shape
    shares = ex.existence_shares(log_e, layout.doc, positions, seg_valid, b, n)  # (s, m)
    if shares.numel() == 0:  # only empty documents: nothing to differentiate
        return
    weights = torch.randn(shares.shape, generator=torch.Generator().manual_seed(seed))
    (grad,) = torch.autograd.grad((shares * weights).sum(), p, retain_graph=True)
    assert torch.isfinite(grad).all()
    # The sum of all shares is the number of covered positions, a constant: zero gradient. Checked
    # in float64, since d log(1 − p)/dp reaches 1/ε = 1e6 and would magnify float32 rounding.
    p64 = layout.p_bos.double().requires_grad_(True)
    log_e64, _, _ = _segment_existence(layout, p64)
    total = ex.existence_shares(log_e64, layout.doc, positions, seg_valid, b, n).sum()
    (grad_total,) = torch.autograd.grad(total, p64)
    torch.testing.assert_close(grad_total, torch.zeros_like(grad_total), rtol=0, atol=1e-6)


@LAWS
@given(zs.segment_layouts(), st.integers(0, 2**31 - 1))
def test_shares_ignore_probabilities_on_padding(layout: zs.SegmentLayout, seed: int) -> None:
    b, n = layout.valid.shape
    log_e, seg_valid, positions = _segment_existence(layout)
    other_p = _with_other_padding(layout.p_bos, layout.valid, seed)
    log_e2, _, _ = _segment_existence(layout, other_p)
    shares = ex.existence_shares(log_e, layout.doc, positions, seg_valid, b, n)
    shares2 = ex.existence_shares(log_e2, layout.doc, positions, seg_valid, b, n)
    assert torch.equal(shares, shares2)


@LAWS
@given(zs.bos_batches(max_n=16, max_m=8))
def test_forced_segments_cover_every_real_position(batch: zs.BosBatch) -> None:
    bos = ex.force_bos_in_gaps(batch.bos, batch.valid, batch.m)
    doc, start = bos.nonzero(as_tuple=True)
    layout = zs.SegmentLayout(p_bos=batch.p_bos, valid=batch.valid, doc=doc, start=start, m=batch.m)
    log_e, seg_valid, positions = _segment_existence(layout)
    covered = _per_position(seg_valid.float(), layout, positions) > 0
    assert torch.equal(covered, batch.valid)


# ------------------------------------------------------------------------------- BOS and lengths


def _bos_oracle_gaps(bos: torch.Tensor, valid: torch.Tensor) -> list[int]:
    """For every real position, the distance back to the nearest BOS at or before it (plain
    Python, independent of the vectorised code); a large number when there is none."""
    out = []
    for row_bos, row_valid in zip(bos.tolist(), valid.tolist(), strict=True):
        last = None
        for j, (is_bos, real) in enumerate(zip(row_bos, row_valid, strict=True)):
            if not real:
                break
            if is_bos:
                last = j
            out.append(j - last if last is not None else 10**9)
    return out


@LAWS
@given(zs.bos_batches(max_n=16, max_m=6))
def test_force_bos_leaves_no_gap_of_m_and_keeps_every_sampled_bos(batch: zs.BosBatch) -> None:
    bos = ex.force_bos_in_gaps(batch.bos, batch.valid, batch.m)
    assert not (bos & ~batch.valid).any()  # nothing on padding
    assert not (batch.bos & batch.valid & ~bos).any()  # every sampled BOS on text survives
    assert torch.equal(bos[:, 0], batch.valid[:, 0])  # every non-empty document starts a segment
    assert all(gap < batch.m for gap in _bos_oracle_gaps(bos, batch.valid))
    assert torch.equal(ex.force_bos_in_gaps(bos, batch.valid, batch.m), bos)  # idempotent


@LAWS
@given(zs.bos_batches(max_n=16, max_m=6))
def test_force_bos_adds_a_bos_only_where_the_previous_is_m_back(batch: zs.BosBatch) -> None:
    bos = ex.force_bos_in_gaps(batch.bos, batch.valid, batch.m)
    sampled = batch.bos & batch.valid
    sampled[:, 0] = batch.valid[:, 0]
    for row, row_sampled in zip(bos.tolist(), sampled.tolist(), strict=True):
        previous = None
        for j, (is_bos, was_sampled) in enumerate(zip(row, row_sampled, strict=True)):
            if is_bos and not was_sampled:
                assert previous is not None and j - previous == batch.m
            if is_bos:
                previous = j


@LAWS
@given(zs.bos_batches(max_n=16, max_m=6))
def test_segment_lengths_tile_each_document(batch: zs.BosBatch) -> None:
    bos = ex.force_bos_in_gaps(batch.bos, batch.valid, batch.m)
    lengths = ex.segment_lengths(bos, batch.valid)  # (b, n)
    assert torch.equal(lengths.sum(dim=1), batch.lengths)
    assert torch.equal(lengths > 0, bos)  # a positive length exactly at each BOS
    assert (lengths <= batch.m).all()  # forcing bounds every segment by m

    raw = batch.bos.clone()
    raw[:, 0] = True  # any layout that starts each document tiles it too
    assert torch.equal(ex.segment_lengths(raw, batch.valid).sum(dim=1), batch.lengths)


# ---------------------------------------------------------------------- regularisation targets


@LAWS
@given(zs.bos_batches(max_n=16, max_m=10), st.integers(0, 10))
def test_regularisation_probabilities_are_probabilities(batch: zs.BosBatch, k: int) -> None:
    for value in (
        ex.average_bos(batch.p_bos, batch.valid),
        ex.long_segment_probability(batch.p_bos, batch.valid, batch.m),
        ex.short_segment_probability(batch.p_bos, batch.valid, k),
    ):
        assert value.ndim == 0 and torch.isfinite(value)
        assert 0.0 <= value.item() <= 1.0 + 1e-6


@LAWS
@given(zs.bos_batches(max_n=16, max_m=10))
def test_average_bos_is_the_mean_over_real_positions(batch: zs.BosBatch) -> None:
    real = batch.p_bos[batch.valid]
    expected = real.mean() if real.numel() else torch.tensor(0.0)
    torch.testing.assert_close(ex.average_bos(batch.p_bos, batch.valid), expected)


@LAWS
@given(zs.bos_batches(max_n=14, max_m=6))
def test_long_segment_probability_shrinks_as_the_window_grows(batch: zs.BosBatch) -> None:
    values = [ex.long_segment_probability(batch.p_bos, batch.valid, m).item() for m in range(1, 17)]
    assert all(later <= earlier + 1e-6 for earlier, later in zip(values, values[1:], strict=False))
    longest = max(int(batch.lengths.max()), 1)
    assert values[longest - 1] == 0.0  # a window as long as every document cannot overflow


@LAWS
@given(zs.bos_batches(max_n=14, max_m=6))
def test_short_segment_probability_grows_with_the_number_of_compression_vectors(batch: zs.BosBatch) -> None:
    values = [ex.short_segment_probability(batch.p_bos, batch.valid, k).item() for k in range(0, 17)]
    assert values[0] == 0.0 and values[1] == 0.0  # one vector fits any segment
    assert all(later >= earlier - 1e-6 for earlier, later in zip(values, values[1:], strict=False))


@LAWS
@given(zs.bos_batches(max_n=16, max_m=8), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_regularisation_ignores_probabilities_on_padding(batch: zs.BosBatch, k: int, seed: int) -> None:
    other = _with_other_padding(batch.p_bos, batch.valid, seed)
    for fn, arg in (
        (ex.average_bos, None),
        (ex.long_segment_probability, batch.m),
        (ex.short_segment_probability, k),
    ):
        args = () if arg is None else (arg,)
        assert torch.equal(fn(batch.p_bos, batch.valid, *args), fn(other, batch.valid, *args))


@LAWS
@given(zs.bos_batches(max_n=16, max_m=8), st.integers(2, 8))
def test_regularisation_gradients_are_finite(batch: zs.BosBatch, k: int) -> None:
    p = batch.p_bos.clone().requires_grad_(True)
    total = (
        ex.average_bos(p, batch.valid)
        + ex.long_segment_probability(p, batch.valid, batch.m)
        + ex.short_segment_probability(p, batch.valid, k)
    )
    (grad,) = torch.autograd.grad(total, p)
    assert torch.isfinite(grad).all()
    assert (grad[~batch.valid] == 0).all()  # padding receives no gradient
