"""Unit tests of ``zonkey/core/nn/existence.py`` on small hand-checked cases (§4). The general laws
(monotone existence, shares summing to 1, tiling lengths, ...) live in
``tests/properties/test_existence_properties.py``."""

from __future__ import annotations

import math

import pytest
import torch

from zonkey.core.nn import existence as ex

pytestmark = pytest.mark.usefixtures("single_thread")

NEG_INF = float("-inf")


def _valid(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


# ----------------------------------------------------------------------------- clamping and dtypes


def test_clamp_keeps_probabilities_inside_epsilon_bounds() -> None:
    p = torch.tensor([0.0, 1e-9, 0.5, 1.0])
    clamped = ex.clamp_p(p)
    assert clamped.min() >= ex.P_EPS and clamped.max() <= 1 - ex.P_EPS
    assert clamped[2] == 0.5
    assert torch.isfinite(ex.log_not_bos(p)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_existence_math_runs_in_float32_for_low_precision_inputs(dtype: torch.dtype) -> None:
    p = torch.tensor([[0.3, 0.5, 0.5]], dtype=dtype)
    assert ex.log_not_bos(p).dtype == torch.float32
    assert ex.log_existence_from_bos_logits(torch.zeros(1, 3, dtype=dtype)).dtype == torch.float32


def test_float64_stays_float64() -> None:
    p = torch.tensor([[0.3, 0.5]], dtype=torch.float64)
    assert ex.log_existence_from_log_not_bos(ex.log_not_bos(p)).dtype == torch.float64


def test_existence_stays_float32_under_bfloat16_autocast() -> None:
    p = torch.tensor([[0.3, 0.5, 0.5]], dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(p))
        shares = ex.existence_shares(log_e, torch.tensor([0]), torch.tensor([[0, 1, 2]]), torch.ones(1, 3, dtype=torch.bool), 1, 3)
    assert log_e.dtype == torch.float32 and shares.dtype == torch.float32
    torch.testing.assert_close(log_e, torch.tensor([[0.0, math.log(0.5), 2 * math.log(0.5)]]))


# -------------------------------------------------------------------------------------- existence


def test_existence_is_the_running_product_and_ignores_the_start_probability() -> None:
    p = torch.tensor([[0.9, 0.5, 0.5, 0.2]])  # 0.9 at the start: a segment start always exists
    valid = torch.tensor([[True, True, True, False]])
    e = ex.log_existence_from_log_not_bos(ex.log_not_bos(p), valid).exp()
    torch.testing.assert_close(e, torch.tensor([[1.0, 0.5, 0.25, 0.0]]))


def test_existence_from_logits_of_extreme_values_is_finite() -> None:
    logits = torch.tensor([[0.0, 1e4, -1e4, 30.0, -30.0]])
    log_e = ex.log_existence_from_bos_logits(logits)
    assert torch.isfinite(log_e).all()
    # p_bos is clamped into [ε, 1 − ε] just as for probabilities, on both sides
    torch.testing.assert_close(log_e[0, 1] - log_e[0, 0], torch.tensor(math.log(ex.P_EPS)))
    never_bos = ex.log_existence_from_bos_logits(torch.tensor([[0.0, -1e4]]))[0, 1]
    torch.testing.assert_close(never_bos, torch.tensor(math.log1p(-ex.P_EPS)), rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------- segments


def test_gather_segments_cuts_overlapping_windows_and_marks_the_document_end() -> None:
    x = torch.arange(10.0).reshape(2, 5, 1)  # (b, n, d)
    valid = _valid([5, 3], 5)
    doc, start = torch.tensor([0, 0, 1]), torch.tensor([0, 3, 1])
    seg, seg_valid, positions = ex.gather_segments(x, doc, start, 3, valid)
    assert seg.shape == (3, 3, 1)
    # positions past the padded width are clamped into it; past the document's end they are invalid
    assert positions.tolist() == [[0, 1, 2], [3, 4, 4], [1, 2, 3]]
    assert seg_valid.tolist() == [[True, True, True], [True, True, False], [True, True, False]]
    assert seg[:, :, 0][seg_valid].tolist() == [0, 1, 2, 3, 4, 6, 7]


def test_shares_of_two_overlapping_segments_are_proportional_to_existence() -> None:
    # one document of 3 positions, segments at 0 and 1 with m = 3; position 1 is covered by slot 1
    # of segment 0 (existence 1 − p_1) and slot 0 of segment 1 (existence 1)
    p = torch.tensor([[0.5, 0.5, 0.5]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    doc, start = torch.tensor([0, 0]), torch.tensor([0, 1])
    seg_p, seg_valid, positions = ex.gather_segments(p, doc, start, 3, valid)
    log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(seg_p), seg_valid)
    shares = ex.existence_shares(log_e, doc, positions, seg_valid, 1, 3)
    # position 1: 0.5 vs 1 -> 1/3, 2/3; position 2: 0.25 vs 0.5 -> 1/3, 2/3
    expected = torch.tensor([[1.0, 1 / 3, 1 / 3], [2 / 3, 2 / 3, 0.0]])
    torch.testing.assert_close(shares, expected)


def test_shares_stay_exact_when_every_covering_existence_underflows() -> None:
    # both segments covering the last position have existence ~e^-150, below float32's range
    log_e = torch.tensor([[0.0, -150.0], [0.0, -150.0 + math.log(3.0)]])  # (s, m)
    doc = torch.tensor([0, 0])
    positions = torch.tensor([[0, 2], [1, 2]])
    seg_valid = torch.ones(2, 2, dtype=torch.bool)
    assert log_e.exp()[:, 1].eq(0).all()  # a product-space implementation would divide 0 by 0
    shares = ex.existence_shares(log_e, doc, positions, seg_valid, 1, 3)
    torch.testing.assert_close(shares[:, 1], torch.tensor([0.25, 0.75]))
    torch.testing.assert_close(shares[:, 0], torch.tensor([1.0, 1.0]))


def test_shares_of_no_segments_are_empty() -> None:
    empty = torch.zeros(0, dtype=torch.long)
    seg, seg_valid, positions = ex.gather_segments(torch.zeros(1, 4), empty, empty, 3, torch.ones(1, 4, dtype=torch.bool))
    log_e = ex.log_existence_from_log_not_bos(ex.log_not_bos(seg), seg_valid)
    assert ex.existence_shares(log_e, empty, positions, seg_valid, 1, 4).shape == (0, 3)


# ------------------------------------------------------------------------------- BOS and lengths


def test_force_bos_puts_a_bos_every_m_positions_in_a_long_gap() -> None:
    bos = torch.zeros(1, 8, dtype=torch.bool)
    bos[0, 7] = True
    forced = ex.force_bos_in_gaps(bos, torch.ones(1, 8, dtype=torch.bool), 3)
    assert forced.nonzero()[:, 1].tolist() == [0, 3, 6, 7]


def test_force_bos_drops_bos_on_padding() -> None:
    bos = torch.tensor([[False, False, True, True]])
    forced = ex.force_bos_in_gaps(bos, _valid([3], 4), 5)
    assert forced.tolist() == [[True, False, True, False]]


def test_segment_lengths_on_a_hand_example() -> None:
    bos = torch.tensor([[True, False, True, False, False, True], [True, True, False, False, False, False]])
    valid = _valid([6, 4], 6)
    assert ex.segment_lengths(bos, valid).tolist() == [[2, 0, 3, 0, 0, 1], [1, 3, 0, 0, 0, 0]]


# ---------------------------------------------------------------------- regularisation targets


def test_average_bos_ignores_padding() -> None:
    p = torch.tensor([[0.2, 0.4, 0.9], [0.6, 0.9, 0.9]])
    torch.testing.assert_close(ex.average_bos(p, _valid([2, 1], 3)), torch.tensor(0.4))


def test_long_and_short_segment_probabilities_on_a_hand_example() -> None:
    p = torch.full((1, 3), 0.5)
    valid = torch.ones(1, 3, dtype=torch.bool)
    # starts: position 0 surely (1), others 0.5
    # long (m=1): pos 0: 1·(1−p1) = .5, pos 1: .5·(1−p2) = .25, pos 2: window past the end = 0
    torch.testing.assert_close(ex.long_segment_probability(p, valid, 1), torch.tensor(0.75 / 3))
    # short (k=2, next k−1=1 position): pos 0: 1·p1 = .5, pos 1: .5·p2 = .25, pos 2: no next = 0
    torch.testing.assert_close(ex.short_segment_probability(p, valid, 2), torch.tensor(0.75 / 3))
    assert ex.short_segment_probability(p, valid, 1) == 0
