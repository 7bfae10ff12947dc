"""The ``flex`` attention backend: forward-only on CPU (refused up front, naming the alternatives), the
gradient to the existence with q, k, v frozen, eager parity, and on CUDA parity in every gradient."""

from __future__ import annotations

import pytest
import torch

from tests.components.attention.cases import attention_case, cuda_attention_case
from zonkey.components.attention.flex import flex_attention_backend
from zonkey.core.nn.attention import AttentionBackendError, probabilistic_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def test_flex_backward_on_cpu_raises_a_backend_error_naming_the_alternatives() -> None:
    q, k, v, log_e = attention_case()
    q.requires_grad_(True)
    with pytest.raises(AttentionBackendError, match="sdpa") as info:
        probabilistic_attention(q, k, v, log_e, backend="flex")
    assert "reference" in str(info.value)
    assert "backward" in str(info.value)  # the reason is kept, not swallowed
    assert isinstance(info.value, RuntimeError)


def test_flex_gives_the_log_existence_gradient_on_cpu_when_q_k_v_are_frozen() -> None:
    q, k, v, log_e = attention_case()
    grads = {}
    for backend in ("reference", "flex"):
        le = log_e.clone().requires_grad_(True)
        out = probabilistic_attention(q, k, v, le, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        grads[backend] = le.grad
    torch.testing.assert_close(grads["flex"], grads["reference"], rtol=1e-9, atol=1e-12)


def test_flex_with_explicit_compile_false_is_eager_and_correct() -> None:
    q, k, v, log_e = attention_case()
    with torch.no_grad():
        out = flex_attention_backend(q, k, v, log_e, compile=False)
        ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_flex_on_cuda_matches_reference_in_output_and_every_gradient(causal: bool) -> None:
    results = {}
    for backend in ("reference", "flex"):
        q, k, v, log_e = (t.clone().requires_grad_(True) for t in cuda_attention_case())
        out = probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), device="cuda").reshape(out.shape)).sum().backward()
        results[backend] = (out, q.grad, k.grad, v.grad, log_e.grad)
    for name, a, r in zip(("output", "dq", "dk", "dv", "dlog_existence"), results["flex"], results["reference"], strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def _long_case(n: int = 300, dtype: torch.dtype = torch.float64, device: str = "cpu"):
    """Three rows, two of them padded (one over more than a 128-position tile), soft existence."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(3, 2, n, 8, generator=g, dtype=dtype) for _ in range(3))
    log_e = -torch.rand(3, n, generator=g, dtype=dtype).cumsum(-1) * 0.05
    log_e[1, 200:] = float("-inf")
    log_e[2, 17:] = float("-inf")
    return tuple(t.to(device) for t in (q, k, v, log_e))


def _windowed_reference(q, k, v, log_e, *, causal: bool, window: int):
    """The reference with keys beyond the window masked: the dense bias plus −inf outside the band."""
    from zonkey.core.nn.attention import existence_bias

    n = q.shape[2]
    idx = torch.arange(n, device=q.device)
    far = (idx[None, :] - idx[:, None]).abs() > window
    bias = existence_bias(log_e, causal=causal, dtype=q.dtype)
    pad = torch.isneginf(log_e)[:, None, :, None]
    bias = bias.masked_fill(far[None, None] & ~pad, float("-inf"))
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / q.shape[-1] ** 0.5 + bias
    out = torch.einsum("bhqk,bhkd->bhqd", torch.softmax(scores, -1), v)
    return out.masked_fill(pad, 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_flex_block_mask_on_long_padded_rows_matches_reference_on_cpu(causal: bool) -> None:
    """Padding and causality as a block mask (whole padded tiles skipped) give the reference's output
    and its log-existence gradient; padded query rows are exactly 0."""
    q, k, v, log_e = _long_case()
    results = {}
    for backend in ("reference", "flex"):
        le = log_e.clone().requires_grad_(True)
        out = probabilistic_attention(q, k, v, le, causal=causal, backend=backend)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
        results[backend] = (out.detach(), le.grad)
    torch.testing.assert_close(results["flex"][0], results["reference"][0], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(results["flex"][1], results["reference"][1], rtol=1e-8, atol=1e-10)
    assert (results["flex"][0][2, :, 17:] == 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_flex_window_masks_keys_beyond_the_window_on_cpu(causal: bool) -> None:
    q, k, v, log_e = _long_case()
    with torch.no_grad():
        out = flex_attention_backend(q, k, v, log_e, causal=causal, window=40, compile=False)
        ref = _windowed_reference(q, k, v, log_e, causal=causal, window=40)
        full = probabilistic_attention(q, k, v, log_e, causal=causal, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-11)
    assert not torch.allclose(out, full)  # the window did cut keys away


def test_flex_block_mask_skips_padded_tiles() -> None:
    """A row padded from position 17 of 300: only its first tile of keys is visited by real queries."""
    from zonkey.components.attention.flex import existence_block_mask

    _, _, _, log_e = _long_case()
    mask = existence_block_mask(torch.isneginf(log_e))
    visited = mask.kv_num_blocks + (mask.full_kv_num_blocks if mask.full_kv_num_blocks is not None else 0)
    visited = visited[:, 0]  # (b, q tiles)
    assert visited[0].tolist() == [3, 3, 3]  # no padding: every tile of the 3
    assert visited[2, 0].item() == 1 and visited[2, 1:].tolist() == [1, 1]  # real queries: tile 0; padded: itself


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
def test_flex_on_cuda_long_padded_rows_match_reference_in_every_gradient(causal: bool) -> None:
    """Compiled (dynamic shapes), block-masked, over more than one tile: outputs and every gradient,
    d log_existence included, match the reference; two different batch sizes run through one compile."""
    for n in (300, 260):
        q0, k0, v0, le0 = _long_case(n, torch.float32, "cuda")
        results = {}
        for backend in ("reference", "flex"):
            q, k, v, le = (t.clone().requires_grad_(True) for t in (q0, k0, v0, le0))
            out = probabilistic_attention(q, k, v, le, causal=causal, backend=backend)
            (out * torch.linspace(-1, 1, out.numel(), device="cuda").reshape(out.shape)).sum().backward()
            results[backend] = (out, q.grad, k.grad, v.grad, le.grad)
        for name, a, r in zip(("output", "dq", "dk", "dv", "dlog_existence"), results["flex"], results["reference"],
                              strict=True):
            torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4, msg=lambda m, name=name, n=n: f"n={n} {name}: {m}")


@pytest.mark.gpu
def test_flex_on_cuda_bf16_keeps_log_existence_float32() -> None:
    """bf16 q, k, v with a float32 log existence: the bias is not rounded to bf16 (the gradient to
    log_existence comes back float32 and close to the float32 reference's)."""
    q0, k0, v0, le0 = _long_case(256, torch.float32, "cuda")
    le = le0.clone().requires_grad_(True)
    q, k, v = (t.to(torch.bfloat16) for t in (q0, k0, v0))
    out = probabilistic_attention(q, k, v, le, backend="flex")
    out.float().sum().backward()
    ref_le = le0.clone().requires_grad_(True)
    ref = probabilistic_attention(q.float(), k.float(), v.float(), ref_le, backend="reference")
    ref.sum().backward()
    assert le.grad is not None and le.grad.dtype == torch.float32 and ref_le.grad is not None
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(le.grad, ref_le.grad, rtol=5e-2, atol=5e-2)
