"""The ddmm denoiser with causal slots decodes the first L slots exactly as its decoding of m slots."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import D, K, M, assert_same_grads, ctx
from zonkey.core.contracts.protocols import packs_rows, packs_slots
from zonkey.core.contracts.registry import registry


def _causal_denoiser(decoder: str, rows: int, seed: int):
    """A causal ``ddmm`` denoiser and noisy latents z (rows, k·d) with noise levels (rows,)."""
    torch.manual_seed(0)
    den = registry("denoiser").config("ddmm", decoder=decoder, slots="causal", layers=2).build(ctx())
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, K * D, generator=g, requires_grad=True)
    return den, z, torch.rand(rows, generator=g), g


@pytest.mark.parametrize("decoder", ["linear", "parallel", "autoregressive"])
def test_causal_slots_decode_the_first_slots_exactly(decoder: str) -> None:
    den, z, sigma, g = _causal_denoiser(decoder, 5, seed=2)
    assert packs_slots(den)
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
        assert_same_grads(g_full, torch.autograd.grad((part.x_hat * w).sum() + part.bos_logits.sum(), params,
                                                      allow_unused=True))


def test_bidirectional_slots_refuse_a_shorter_decoding() -> None:
    den = registry("denoiser").config("ddmm", decoder="linear").build(ctx())
    assert not packs_slots(den)
    z = torch.randn(2, K * D)
    with pytest.raises(ValueError, match="slots: causal"):
        den(z, torch.zeros(2), slots=3)


@pytest.mark.parametrize("decoder", ["linear", "parallel"])
def test_lengths_decode_each_segment_as_its_own_full_decoding(decoder: str) -> None:
    den, z, sigma, g = _causal_denoiser(decoder, 6, seed=3)
    assert packs_rows(den)
    lengths = torch.tensor([1, M, 3, M - 2, 2, 5])
    full = den(z, sigma)
    rows = den(z, sigma, slots=M, lengths=lengths)
    inside = torch.arange(M)[None, :] < lengths[:, None]
    for name in ("x_hat", "bos_logits", "log_existence", "rough_bos_logits"):
        a, b = getattr(full, name), getattr(rows, name)
        assert a is not None and b is not None
        if name == "x_hat":
            a, b, keep = a * inside[..., None], b * inside[..., None], inside[..., None].expand_as(a)
        else:
            keep = inside
        torch.testing.assert_close(b[keep], a[keep], rtol=1e-5, atol=1e-5, msg=name)
    # the slots left out: 0, BOS logit 0, existence 0
    assert float(rows.x_hat[~inside].abs().max()) == 0.0 and float(rows.bos_logits[~inside].abs().max()) == 0.0
    assert bool(torch.isneginf(rows.log_existence[~inside]).all())
    w = torch.randn(full.x_hat.shape, generator=g) * inside[..., None]
    params = [z, *den.parameters()]
    g_full = torch.autograd.grad((full.x_hat * w).sum() + (full.bos_logits * inside).sum(), params,
                                 retain_graph=True, allow_unused=True)
    assert_same_grads(g_full, torch.autograd.grad((rows.x_hat * w).sum() + (rows.bos_logits * inside).sum(), params,
                                                  allow_unused=True))


def test_an_autoregressive_decoder_refuses_lengths() -> None:
    den = registry("denoiser").config("ddmm", decoder="autoregressive", slots="causal").build(ctx())
    assert packs_slots(den) and not packs_rows(den)
    with pytest.raises(ValueError, match="linear or parallel decoder"):
        den(torch.randn(2, K * D), torch.zeros(2), lengths=torch.tensor([2, 3]))
