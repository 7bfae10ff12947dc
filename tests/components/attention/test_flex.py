"""The ``flex`` attention backend: forward-only on CPU (refused up front, naming the alternatives), the
gradient to the existence with q, k, v frozen, eager parity, and on CUDA parity in every gradient."""

from __future__ import annotations

import pytest
import torch

from tests.components.attention.cases import attention_case, cuda_attention_case
from zonkey.components.attention.flex import flex_attention_backend
from zonkey.core.attention import AttentionBackendError, probabilistic_attention

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
