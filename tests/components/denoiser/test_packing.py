"""The ddmm denoiser with causal slots decodes the first L slots exactly as its decoding of m slots."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import D, K, M, ctx
from zonkey.core.contracts.protocols import packs_slots
from zonkey.core.contracts.registry import registry


@pytest.mark.parametrize("decoder", ["linear", "parallel", "autoregressive"])
def test_causal_slots_decode_the_first_slots_exactly(decoder: str) -> None:
    torch.manual_seed(0)
    den = registry("denoiser").config("ddmm", decoder=decoder, slots="causal", layers=2).build(ctx())
    assert packs_slots(den)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, K * D, generator=g, requires_grad=True)
    sigma = torch.rand(5, generator=g)
    full = den(z, sigma)
    for n in (1, 3, M - 1):
        part = den(z, sigma, slots=n)
        assert part.x_hat.shape == (5, n, D)
        torch.testing.assert_close(part.x_hat, full.x_hat[:, :n], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(part.log_existence, full.log_existence[:, :n], rtol=1e-5, atol=1e-5)
        assert part.rough_bos_logits is not None and full.rough_bos_logits is not None
        torch.testing.assert_close(part.rough_bos_logits, full.rough_bos_logits[:, :n], rtol=1e-5, atol=1e-5)
        w = torch.randn(part.x_hat.shape, generator=g)
        params = [z, *den.parameters()]
        g_full = torch.autograd.grad((full.x_hat[:, :n] * w).sum() + full.bos_logits[:, :n].sum(), params,
                                     retain_graph=True, allow_unused=True)
        g_part = torch.autograd.grad((part.x_hat * w).sum() + part.bos_logits.sum(), params, allow_unused=True)
        for a, b in zip(g_full, g_part, strict=True):
            if a is not None and b is not None:
                torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
            else:
                assert (a is None or float(a.abs().max()) == 0.0) and (b is None or float(b.abs().max()) == 0.0)


def test_bidirectional_slots_refuse_a_shorter_decoding() -> None:
    den = registry("denoiser").config("ddmm", decoder="linear").build(ctx())
    assert not packs_slots(den)
    z = torch.randn(2, K * D)
    with pytest.raises(ValueError, match="slots: causal"):
        den(z, torch.zeros(2), slots=3)
