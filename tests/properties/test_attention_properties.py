"""Laws of probabilistic attention (§3), checked on hypothesis-drawn inputs.

score(q, k) += log p_k − log p_q for k > q, else 0; −inf log existence is hard padding. The laws:
certain existence is plain attention; a sharp 1 → 0 drop is a hard key mask; appended padding
changes nothing; only differences of log existence matter; causal outputs ignore the future;
gradients stay finite down to existence 1e-6; every backend equals ``reference`` (``flex``
forward-only on CPU, where FlexAttention has no backward).

The soft laws are checked on ``reference``, ``sdpa`` and (where the law holds for a hard mask too)
``hard``; ``flex`` inherits them through its parity with ``reference``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import strategies as zs
from zonkey.core.nn.attention import probabilistic_attention

pytestmark = pytest.mark.usefixtures("single_thread")
LAWS = settings(max_examples=40, deadline=None)
SOFT = ("reference", "sdpa")
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def attend(case: zs.AttentionCase, backend: str, *, causal: bool = False) -> torch.Tensor:
    # FlexAttention refuses inputs that require grad on CPU; laws about outputs need no graph
    ctx = torch.no_grad() if backend == "flex" else contextlib.nullcontext()
    with ctx:
        return probabilistic_attention(case.q, case.k, case.v, case.log_existence, causal=causal, backend=backend)


def _weights(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A fixed, non-uniform upstream gradient so no direction of the output is left untested."""
    return torch.linspace(-1.0, 2.0, int(torch.Size(shape).numel()), dtype=dtype).reshape(shape).sin()


def _grads(case: zs.AttentionCase, backend: str, *, causal: bool = False) -> tuple[torch.Tensor, ...]:
    q, k, v, log_e = case.inputs(requires_grad=True)
    out = probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend)
    (out * _weights(out.shape, out.dtype)).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad, log_e.grad


# ------------------------------------------------------------------------------ special existences


@pytest.mark.parametrize("backend", [*SOFT, "hard"])
@LAWS
@given(zs.attention_cases(kinds=("zero",), padding=False))
def test_certain_existence_is_plain_softmax_attention(backend: str, case: zs.AttentionCase) -> None:
    expected = F.scaled_dot_product_attention(case.q, case.k, case.v)
    torch.testing.assert_close(attend(case, backend), expected, rtol=0, atol=TOL[torch.float64])


@pytest.mark.parametrize("backend", [*SOFT, "hard"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("floor", [float("-inf"), zs.VERY_NEGATIVE], ids=["neg_inf", "minus_1e4"])
@LAWS
@given(data=st.data())
def test_sharp_existence_drop_is_a_hard_key_mask(backend: str, dtype: torch.dtype, floor: float, data: st.DataObject) -> None:
    b, h, n, dh = data.draw(zs.attention_shapes())
    lengths = torch.tensor(data.draw(zs.document_lengths(b, n, min_len=1)))
    q, k, v = zs.qkv((b, h, n, dh), data.draw(st.integers(0, 2**31 - 1)), scale=data.draw(st.sampled_from([0.1, 1.0, 4.0])), dtype=dtype)
    real = torch.arange(n)[None, :] < lengths[:, None]  # (b, n): existence 1, then 0 (or e^-1e4)
    log_e = torch.zeros(b, n, dtype=dtype).masked_fill(~real, floor)
    out = attend(zs.AttentionCase(q, k, v, log_e), backend)
    masked = F.scaled_dot_product_attention(q, k, v, attn_mask=real[:, None, None, :])  # (b, h, n, dh)
    rows = real[:, None, :, None].expand_as(out)
    # float64: equal up to rounding; float32: two float32 computations in different orders, so
    # the tolerance scales with the output (|v| reaches ~12 at scale 4)
    rtol, atol = (0.0, TOL[dtype]) if dtype == torch.float64 else (1e-5, 1e-5)
    torch.testing.assert_close(out[rows], masked[rows], rtol=rtol, atol=atol)
    if floor == float("-inf"):
        assert (out[~rows] == 0).all()  # hard padding rows are exactly 0


@pytest.mark.parametrize("backend", [*SOFT, "hard"])
@LAWS
@given(zs.attention_cases(), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_appending_zero_existence_positions_changes_no_output(
    backend: str, case: zs.AttentionCase, extra: int, seed: int
) -> None:
    b, h, n, dh = case.q.shape
    pad_q, pad_k, pad_v = zs.qkv((b, h, extra, dh), seed, scale=10.0)  # loud values that must not leak
    longer = zs.AttentionCase(
        torch.cat([case.q, pad_q], dim=2),
        torch.cat([case.k, pad_k], dim=2),
        torch.cat([case.v, pad_v], dim=2),
        torch.cat([case.log_existence, torch.full((b, extra), float("-inf"), dtype=torch.float64)], dim=1),
    )
    out, out_longer = attend(case, backend), attend(longer, backend)
    torch.testing.assert_close(out_longer[:, :, :n], out, rtol=0, atol=TOL[torch.float64])
    assert (out_longer[:, :, n:] == 0).all()


@pytest.mark.parametrize("backend", SOFT)
@LAWS
@given(zs.attention_cases(), st.floats(-20.0, 20.0, allow_nan=False))
def test_only_differences_of_log_existence_matter(backend: str, case: zs.AttentionCase, shift: float) -> None:
    # p_k / p_q is unchanged when every existence is scaled by the same factor
    shifted = zs.AttentionCase(case.q, case.k, case.v, case.log_existence + shift)
    torch.testing.assert_close(attend(shifted, backend), attend(case, backend), rtol=0, atol=1e-9)


# -------------------------------------------------------------------------------------- causality


@pytest.mark.parametrize("backend", [*SOFT, "hard"])
@LAWS
@given(zs.attention_cases(), st.data())
def test_causal_output_ignores_every_later_key(backend: str, case: zs.AttentionCase, data: st.DataObject) -> None:
    b, h, n, dh = case.q.shape
    t = data.draw(st.integers(0, n - 1), label="last position kept")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed of the new future")
    other_q, other_k, other_v = zs.qkv((b, h, n, dh), seed, scale=3.0)
    other_log_e = data.draw(zs.log_existence_profiles(b, n, min_real=0), label="future existence")
    other = zs.AttentionCase(other_q, other_k, other_v, other_log_e)
    later = torch.arange(n) > t  # (n,)
    mixed = zs.AttentionCase(
        torch.where(later[:, None], other.q, case.q),
        torch.where(later[:, None], other.k, case.k),
        torch.where(later[:, None], other.v, case.v),
        torch.where(later, other.log_existence, case.log_existence),
    )
    out, out_mixed = attend(case, backend, causal=True), attend(mixed, backend, causal=True)
    torch.testing.assert_close(out_mixed[:, :, : t + 1], out[:, :, : t + 1], rtol=0, atol=TOL[torch.float64])


@pytest.mark.parametrize("backend", SOFT)
@LAWS
@given(zs.attention_cases(padding=False, kinds=("decaying", "arbitrary", "sharp_drop_finite")))
def test_causal_attention_with_finite_existence_is_plain_causal_attention(backend: str, case: zs.AttentionCase) -> None:
    # keys before the query carry no bias, and the causal mask removes all the others
    expected = F.scaled_dot_product_attention(case.q, case.k, case.v, is_causal=True)
    torch.testing.assert_close(attend(case, backend, causal=True), expected, rtol=0, atol=TOL[torch.float64])


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
@LAWS
@given(zs.attention_cases())
def test_sdpa_equals_reference_in_output_and_every_gradient(causal: bool, case: zs.AttentionCase) -> None:
    ref = _grads(case, "reference", causal=causal)
    sdpa = _grads(case, "sdpa", causal=causal)
    for name, a, r in zip(("output", "dq", "dk", "dv", "dlog_existence"), sdpa, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-7, atol=1e-9, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@settings(max_examples=30, deadline=None)  # FlexAttention traces each new shape: keep this one short
@given(zs.attention_cases(max_n=8, max_dh=4), st.booleans())
def test_flex_forward_equals_reference(dtype: torch.dtype, case: zs.AttentionCase, causal: bool) -> None:
    case = case.to(dtype)
    torch.testing.assert_close(
        attend(case, "flex", causal=causal), attend(case, "reference", causal=causal), rtol=0, atol=TOL[dtype]
    )


# -------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("backend", SOFT)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@LAWS
@given(zs.attention_cases())
def test_gradients_are_finite_down_to_existence_one_in_a_million(backend: str, dtype: torch.dtype, case: zs.AttentionCase) -> None:
    out, dq, dk, dv, dlog_e = _grads(case.to(dtype), backend)
    for grad in (dq, dk, dv, dlog_e):
        assert grad is not None and torch.isfinite(grad).all()
    assert (dlog_e[~case.real] == 0).all()  # hard padding is not a parameter of the output
    assert (dq.transpose(1, 2)[~case.real] == 0).all()  # padded queries produce nothing
