"""The ``sdpa`` attention backend: parity with ``reference`` in float32 on CPU and in every gradient on
CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.components.attention.cases import attention_case, cuda_attention_case
from zonkey.core.nn.attention import probabilistic_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sdpa_matches_reference_in_float32() -> None:
    q, k, v, log_e = attention_case(dtype=torch.float32, seed=3)
    ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    out = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_sdpa_on_cuda_matches_reference_in_output_and_every_gradient() -> None:
    results = {}
    for backend in ("reference", "sdpa"):
        q, k, v, log_e = (t.clone().requires_grad_(True) for t in cuda_attention_case())
        out = probabilistic_attention(q, k, v, log_e, backend=backend)
        out.square().sum().backward()
        results[backend] = (out, q.grad, k.grad, v.grad, log_e.grad)
    for a, r in zip(results["sdpa"], results["reference"], strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_sdpa_on_cuda_returns_the_log_existence_gradient_at_fused_kernel_shapes(dtype: torch.dtype) -> None:
    """At a shape and dtype where PyTorch would pick a fused kernel (dh 64, half precision), the
    bias's gradient reaches log_existence and matches the float32 reference's (the cuDNN kernel,
    preferred on H100/H200, returns none; the backend keeps to kernels that do)."""
    g = torch.Generator().manual_seed(5)
    q0, k0, v0 = (torch.randn(2, 4, 256, 64, generator=g).cuda() for _ in range(3))
    le0 = (-torch.rand(2, 256, generator=g).cumsum(-1) * 0.02).cuda()
    le0[1, 200:] = float("-inf")
    grads = {}
    for backend, dt in (("reference", torch.float32), ("sdpa", dtype)):
        le = le0.clone().requires_grad_(True)
        q, k, v = (t.to(dt).requires_grad_(True) for t in (q0, k0, v0))
        out = probabilistic_attention(q, k, v, le, backend=backend)
        (out.float() * torch.linspace(-1, 1, out.numel(), device="cuda").reshape(out.shape)).sum().backward()
        grads[backend] = le.grad
    assert grads["sdpa"] is not None and grads["sdpa"].abs().sum() > 0
    torch.testing.assert_close(grads["sdpa"], grads["reference"], rtol=5e-2, atol=5e-2)


def test_sdpa_restricts_kernels_only_when_the_bias_needs_a_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU no kernel is restricted; the restriction is for CUDA tensors whose bias requires grad."""
    import zonkey.components.attention.sdpa as sdpa_mod

    entered: list[object] = []
    real = sdpa_mod.sdpa_kernel

    def spy(backends):
        entered.append(backends)
        return real(backends)

    monkeypatch.setattr(sdpa_mod, "sdpa_kernel", spy)
    q, k, v, log_e = attention_case(dtype=torch.float32)
    probabilistic_attention(q, k, v, log_e.requires_grad_(True), backend="sdpa")
    assert entered == []
    assert sdpa_mod.SDPBackend.CUDNN_ATTENTION not in sdpa_mod.BIAS_GRAD_KERNELS
    assert sdpa_mod.SDPBackend.EFFICIENT_ATTENTION in sdpa_mod.BIAS_GRAD_KERNELS


def _grads(backend: str, causal: bool, calls: int) -> tuple[torch.Tensor, ...]:
    q, k, v, log_e = (t.clone().requires_grad_(True) for t in attention_case(dtype=torch.float64, seed=5))
    outs = [probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend) for _ in range(calls)]
    sum((i + 1) * o.square().sum() for i, o in enumerate(outs)).backward()
    return (*outs, q.grad, k.grad, v.grad, log_e.grad)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_with_an_existence_gradient_on_cpu_matches_reference_in_output_and_every_gradient(causal: bool) -> None:
    # the existence requires grad: the explicit CPU path; two calls on one log existence share its bias
    ref, out = _grads("reference", causal, 2), _grads("sdpa", causal, 2)
    for a, r in zip(out, ref, strict=True):
        torch.testing.assert_close(a.nan_to_num(), r.nan_to_num(), rtol=1e-10, atol=1e-12)
    if not causal:  # causal attention never reads the bias of later keys: no existence gradient there
        assert out[-1].abs().sum() > 0


def test_sdpa_rebuilds_the_bias_when_the_log_existence_changes_in_place() -> None:
    q, k, v, log_e = attention_case(dtype=torch.float64, seed=2)
    first = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    log_e[1, 2] = -5.0  # same tensor, new values: a reused bias would be stale
    again = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    torch.testing.assert_close(again, probabilistic_attention(q, k, v, log_e, backend="reference"))
    assert not torch.allclose(first[1], again[1])


def test_sdpa_runs_on_inference_tensors() -> None:
    with torch.inference_mode():
        q, k, v, log_e = attention_case(dtype=torch.float32, seed=4)
        out = probabilistic_attention(q, k, v, log_e, backend="sdpa")
        ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
