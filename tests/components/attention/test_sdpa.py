"""The ``sdpa`` attention backend: parity with ``reference`` in float32 on CPU and in every gradient on
CUDA."""

from __future__ import annotations

import pytest
import torch

from tests.components.attention.cases import attention_case, cuda_attention_case
from zonkey.core.attention import probabilistic_attention

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
