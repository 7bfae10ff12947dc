"""Sliding-window probabilistic attention: parity with full attention, exact masking, bounded work."""

from __future__ import annotations

import pytest
import torch

from zonkey.components.attention.hard import hard_attention
from zonkey.components.attention.reference import reference_attention
from zonkey.core.contracts.registry import registry
from zonkey.core.nn.attention import existence_bias
from zonkey.core.nn.local_attention import local_attention
from zonkey.core.nn.transformer import Encoder


def _inputs(b: int, h: int, n: int, dh: int, *, seed: int = 0, lengths: list[int] | None = None,
            dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, dh, generator=g, dtype=dtype) for _ in range(3))
    # a soft existence profile that falls along the sequence, with hard padding past each length
    log_e = -torch.rand(b, n, generator=g, dtype=dtype).cumsum(1) * 0.05
    for i, length in enumerate(lengths or [n] * b):
        log_e[i, length:] = float("-inf")
    return q, k, v, log_e


def _dense_window(q, k, v, log_e, *, window: int, causal: bool):
    """The ground truth: the reference's dense bias with every key further than ``window`` masked."""
    n = q.shape[2]
    bias = existence_bias(log_e, causal=causal, dtype=q.dtype)  # (b, 1, n, n)
    idx = torch.arange(n)
    far = (idx[None, :] - idx[:, None]).abs() > window
    pad = torch.isneginf(log_e)
    bias = bias.masked_fill(far[None, None], float("-inf"))
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / q.shape[-1] ** 0.5 + bias
    out = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(scores, -1), v)
    return out.masked_fill(pad[:, None, :, None], 0.0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [None, 5, 64])
def test_window_wider_than_the_sequence_is_full_attention(causal: bool, block: int | None) -> None:
    q, k, v, log_e = _inputs(3, 2, 37, 8, lengths=[37, 20, 1])
    full = reference_attention(q, k, v, log_e, causal=causal)
    for window in (36, 40, 1000):
        local = local_attention(q, k, v, log_e, window=window, causal=causal, block=block)
        torch.testing.assert_close(local, full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(("window", "block"), [(1, None), (3, 4), (7, 7), (10, 3), (16, 9)])
def test_narrow_window_equals_the_masked_dense_reference(causal: bool, window: int, block: int | None) -> None:
    q, k, v, log_e = _inputs(2, 3, 41, 4, seed=1, lengths=[41, 29])
    expect = _dense_window(q, k, v, log_e, window=window, causal=causal)
    got = local_attention(q, k, v, log_e, window=window, causal=causal, block=block)
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-12)
    assert torch.isfinite(got).all()


def test_the_window_changes_the_result_where_it_cuts() -> None:
    # the check above could pass if the window were ignored: with a narrow window it must not equal full attention
    q, k, v, log_e = _inputs(1, 2, 30, 4, seed=2)
    narrow = local_attention(q, k, v, log_e, window=2)
    assert not torch.allclose(narrow, reference_attention(q, k, v, log_e), atol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_the_dense_reference(causal: bool) -> None:
    q, k, v, log_e = _inputs(2, 2, 23, 4, seed=3, lengths=[23, 15])
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    le = log_e.clone().requires_grad_(True)
    weights = torch.randn(2, 2, 23, 4, dtype=torch.float64)
    (local_attention(*leaves, le, window=5, causal=causal, block=4) * weights).sum().backward()
    got = [t.grad for t in (*leaves, le)]
    ref_leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    ref_le = log_e.clone().requires_grad_(True)
    (_dense_window(*ref_leaves, ref_le, window=5, causal=causal) * weights).sum().backward()
    expect = [t.grad for t in (*ref_leaves, ref_le)]
    for a, e in zip(got, expect, strict=True):
        assert a is not None and e is not None
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-11)


def test_padded_queries_give_exact_zero_rows() -> None:
    q, k, v, log_e = _inputs(2, 2, 50, 4, seed=4, lengths=[50, 12], dtype=torch.float32)
    out = local_attention(q, k, v, log_e, window=6)
    assert (out[1, :, 12:] == 0).all()
    assert (out[1, :, :12] != 0).any()


def test_a_key_far_away_has_no_influence() -> None:
    q, k, v, log_e = _inputs(1, 1, 64, 4, seed=5)
    base = local_attention(q, k, v, log_e, window=8)
    v2 = v.clone()
    v2[0, 0, 40] += 100.0  # only queries 32..48 can see position 40
    moved = (local_attention(q, k, v2, log_e, window=8) - base).abs().amax(-1)[0, 0]
    assert (moved[32:49] > 0).all()
    assert (moved[:32] == 0).all() and (moved[49:] == 0).all()


def test_hard_backend_in_a_window_thresholds_existence_first() -> None:
    q, k, v, log_e = _inputs(1, 2, 33, 4, seed=6)
    backend = registry("attention").config("hard").build()
    full = hard_attention(q, k, v, log_e)
    torch.testing.assert_close(backend.local(q, k, v, log_e, window=40), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_window_covering_the_sequence_is_bit_identical(causal: bool) -> None:
    torch.manual_seed(0)
    enc = Encoder(16, 2, 2, registry("attention").config("sdpa").build()).eval()
    x = torch.randn(2, 30, 16)
    log_e = torch.zeros(2, 30)
    log_e[1, 22:] = float("-inf")
    full = enc(x, log_e, causal=causal)
    assert torch.equal(enc(x, log_e, causal=causal, window=29), full)
    assert torch.equal(enc(x, log_e, causal=causal, window=512), full)
    # a narrower window goes through the blocked path and differs
    assert not torch.allclose(enc(x, log_e, causal=causal, window=3), full, atol=1e-4)


@pytest.mark.parametrize("name", ["sdpa", "reference", "auto", "flex"])
def test_every_backend_has_a_window_form_equal_to_the_dense_reference(name: str) -> None:
    q, k, v, log_e = _inputs(2, 2, 40, 4, seed=7, lengths=[40, 26], dtype=torch.float32)
    backend = registry("attention").config(name).build()
    with torch.no_grad():
        got = backend.local(q, k, v, log_e, window=5, causal=True)
    expect = _dense_window(q.double(), k.double(), v.double(), log_e.double(), window=5, causal=True)
    torch.testing.assert_close(got.double(), expect, rtol=1e-4, atol=1e-5)
