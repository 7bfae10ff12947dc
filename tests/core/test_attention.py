"""Unit tests of ``zonkey/core/attention.py``: the existence bias, the dispatch and its errors, the
special cases of each backend. The general laws live in ``tests/properties/``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.strategies import qkv
from zonkey.core.attention import (
    BACKENDS,
    AttentionBackendError,
    existence_bias,
    flex_attention_backend,
    hard_attention,
    probabilistic_attention,
)
from zonkey.core.registry import registry

pytestmark = pytest.mark.usefixtures("single_thread")

NEG_INF = float("-inf")


def _case(b: int = 2, h: int = 2, n: int = 5, dh: int = 4, *, dtype: torch.dtype = torch.float64, seed: int = 0):
    q, k, v = qkv((b, h, n, dh), seed, dtype=dtype)
    log_e = torch.tensor([[0.0, -0.1, -0.7, -2.0, NEG_INF], [0.0, -1.0, -0.5, -13.8, -30.0]], dtype=dtype)[:b, :n]
    return q, k, v, log_e


# ------------------------------------------------------------------------------------------ bias


def test_existence_bias_is_the_log_ratio_for_later_keys_only() -> None:
    log_e = torch.tensor([[0.0, -1.0, -3.0]])
    bias = existence_bias(log_e)
    assert bias.shape == (1, 1, 3, 3)
    expected = torch.tensor([[0.0, -1.0, -3.0], [0.0, 0.0, -2.0], [0.0, 0.0, 0.0]])  # log p_k − log p_q, k > q
    torch.testing.assert_close(bias[0, 0], expected)


def test_existence_bias_masks_padded_keys_and_leaves_padded_query_rows_unbiased() -> None:
    log_e = torch.tensor([[0.0, -1.0, NEG_INF]])
    bias = existence_bias(log_e)[0, 0]
    assert torch.isneginf(bias[:2, 2]).all()  # real queries never see the padded key
    assert (bias[2] == 0).all()  # the padded row stays finite (its output is zeroed later)
    causal = existence_bias(log_e, causal=True)[0, 0]
    assert torch.isneginf(causal[0, 1:]).all() and torch.isneginf(causal[1, 2])
    assert (causal.tril() == 0).all()


def test_existence_bias_follows_the_requested_dtype() -> None:
    log_e = torch.tensor([[0.0, -1.0, NEG_INF]], dtype=torch.float64)
    assert existence_bias(log_e).dtype == torch.float64
    assert existence_bias(log_e, dtype=torch.bfloat16).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape", "le_shape", "fragment"),
    [
        ((2, 3, 4), (2, 3, 4), (2, 3, 4), (2, 3), "4-D"),
        ((2, 1, 3, 4), (2, 1, 3), (2, 1, 3, 4), (2, 3), "4-D"),
        ((2, 1, 3, 4), (2, 1, 5, 4), (2, 1, 5, 4), (2, 5), "same shape"),
        ((2, 1, 3, 4), (2, 1, 3, 6), (2, 1, 3, 4), (2, 3), "same shape"),
        ((2, 1, 3, 4), (2, 2, 3, 4), (2, 2, 3, 4), (2, 3), "same shape"),
        ((2, 1, 3, 4), (2, 1, 3, 4), (2, 1, 2, 4), (2, 3), "v must agree"),
        ((2, 1, 3, 4), (2, 1, 3, 4), (2, 1, 3, 4), (3, 2), "log_existence must be (b, n) = (2, 3)"),
        ((2, 1, 3, 4), (2, 1, 3, 4), (2, 1, 3, 4), (2, 1, 3), "log_existence must be (b, n)"),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_shapes_raise_a_value_error_naming_the_shapes(q_shape, k_shape, v_shape, le_shape, fragment, backend) -> None:
    q, k, v, log_e = torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(v_shape), torch.zeros(le_shape)
    with pytest.raises(ValueError, match="got") as info:
        probabilistic_attention(q, k, v, log_e, backend=backend)
    assert fragment in str(info.value)


def test_mixed_dtypes_raise_a_value_error() -> None:
    q, k, v, log_e = _case()
    with pytest.raises(ValueError, match="dtype"):
        probabilistic_attention(q, k.float(), v, log_e)


@pytest.mark.parametrize("fn", ["reference", "sdpa", "hard"])
def test_backend_functions_validate_shapes_when_called_directly(fn: str) -> None:
    # registered modules call the backend functions without going through the dispatch
    from zonkey.core import attention

    backend_fn = {"reference": attention.reference_attention, "sdpa": attention.sdpa_attention, "hard": hard_attention}[fn]
    q, k, v, log_e = _case()
    with pytest.raises(ValueError, match="log_existence must be"):
        backend_fn(q, k, v, log_e[:, :3])


def test_unknown_backend_lists_the_known_ones() -> None:
    q, k, v, log_e = _case()
    with pytest.raises(ValueError, match="unknown attention backend 'flash'") as info:
        probabilistic_attention(q, k, v, log_e, backend="flash")
    for name in BACKENDS:
        assert name in str(info.value)


def test_flex_backward_on_cpu_raises_a_backend_error_naming_the_alternatives() -> None:
    q, k, v, log_e = _case()
    q.requires_grad_(True)
    with pytest.raises(AttentionBackendError, match="sdpa") as info:
        probabilistic_attention(q, k, v, log_e, backend="flex")
    assert "reference" in str(info.value)
    assert "backward" in str(info.value)  # the reason is kept, not swallowed
    assert isinstance(info.value, RuntimeError)


def test_every_dispatch_backend_is_a_registered_attention_component() -> None:
    assert set(BACKENDS) <= set(registry("attention").names())


# ------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_padded_query_rows_are_exactly_zero(backend: str, causal: bool) -> None:
    q, k, v, log_e = _case()
    with torch.no_grad():
        out = probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out[0, :, 4] == 0).all()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fully_padded_document_gives_zeros_and_no_nan(backend: str) -> None:
    q, k, v, log_e = _case()
    log_e[1] = NEG_INF
    with torch.no_grad():
        out = probabilistic_attention(q, k, v, log_e, backend=backend)
    assert (out[1] == 0).all()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_a_fully_padded_document_has_zero_gradients(backend: str) -> None:
    q, k, v, log_e = (t.requires_grad_(True) for t in _case())
    log_e.data[1] = NEG_INF
    probabilistic_attention(q, k, v, log_e, backend=backend).sum().backward()
    for t in (q, k, v, log_e):
        assert torch.isfinite(t.grad).all()
        assert (t.grad[1] == 0).all()


def test_sdpa_matches_reference_in_float32() -> None:
    q, k, v, log_e = _case(dtype=torch.float32, seed=3)
    ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    out = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_stay_bfloat16_and_close_to_float32() -> None:
    q, k, v, log_e = _case(dtype=torch.float32, seed=4)
    ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    for backend in ("reference", "sdpa"):
        out = probabilistic_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), log_e, backend=backend)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=5e-2)


def test_soft_existence_sends_gradient_to_every_non_padded_log_existence() -> None:
    # the splitter learns through this gradient (§4): it must not vanish on soft positions
    q, k, v, log_e = (t.requires_grad_(True) for t in _case())
    out = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)).sum().backward()
    real = ~torch.isneginf(log_e.detach())
    assert (log_e.grad[real] != 0).all()
    assert (log_e.grad[~real] == 0).all()


def test_flex_gives_the_log_existence_gradient_on_cpu_when_q_k_v_are_frozen() -> None:
    q, k, v, log_e = _case()
    grads = {}
    for backend in ("reference", "flex"):
        le = log_e.clone().requires_grad_(True)
        out = probabilistic_attention(q, k, v, le, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads[backend] = le.grad
    torch.testing.assert_close(grads["flex"], grads["reference"], rtol=1e-9, atol=1e-12)


def test_flex_with_explicit_compile_false_is_eager_and_correct() -> None:
    q, k, v, log_e = _case()
    with torch.no_grad():
        out = flex_attention_backend(q, k, v, log_e, compile=False)
        ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_hard_treats_positions_below_the_threshold_as_padding_and_ignores_existence_otherwise() -> None:
    q, k, v, _ = _case(b=1, n=4)
    log_e = torch.tensor([[0.0, math.log(0.6), math.log(0.4), math.log(0.9)]], dtype=torch.float64)
    out = hard_attention(q, k, v, log_e, threshold=0.5)
    keep = torch.tensor([True, True, False, True])
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[None, None, None, :])
    torch.testing.assert_close(out[:, :, keep], expected[:, :, keep], rtol=0, atol=1e-12)
    assert (out[:, :, ~keep] == 0).all()  # a thresholded-away position is padding: its row is 0 too
    looser = hard_attention(q, k, v, log_e, threshold=0.3)
    torch.testing.assert_close(looser, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12)


def test_hard_sends_no_gradient_to_the_existence() -> None:
    q, k, v, log_e = _case()
    q.requires_grad_(True)
    log_e.requires_grad_(True)
    probabilistic_attention(q, k, v, log_e, backend="hard").sum().backward()
    assert log_e.grad is None
    assert q.grad is not None and torch.isfinite(q.grad).all()


# ------------------------------------------------------------------------------------------- GPU


def _cuda_case(dtype: torch.dtype = torch.float32):
    q, k, v, log_e = _case(b=2, h=4, n=5, dh=16, dtype=dtype, seed=7)
    return tuple(t.cuda() for t in (q, k, v, log_e))


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_flex_on_cuda_matches_reference_in_output_and_every_gradient(causal: bool) -> None:
    results = {}
    for backend in ("reference", "flex"):
        q, k, v, log_e = (t.clone().requires_grad_(True) for t in _cuda_case())
        out = probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), device="cuda").reshape(out.shape)).sum().backward()
        results[backend] = (out, q.grad, k.grad, v.grad, log_e.grad)
    for name, a, r in zip(("output", "dq", "dk", "dv", "dlog_existence"), results["flex"], results["reference"]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.gpu
def test_sdpa_on_cuda_matches_reference_in_output_and_every_gradient() -> None:
    results = {}
    for backend in ("reference", "sdpa"):
        q, k, v, log_e = (t.clone().requires_grad_(True) for t in _cuda_case())
        out = probabilistic_attention(q, k, v, log_e, backend=backend)
        out.square().sum().backward()
        results[backend] = (out, q.grad, k.grad, v.grad, log_e.grad)
    for a, r in zip(results["sdpa"], results["reference"]):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
