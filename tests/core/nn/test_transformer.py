"""Unit tests of ``zonkey/core/nn/transformer.py``: the encoder with probabilistic attention (§3)
behaves as one model whichever attention backend it is given, ignores hard padding, and passes
gradients to its parameters and to the existence log-probabilities."""

from __future__ import annotations

import pytest
import torch

from zonkey.core.contracts.registry import registry
from zonkey.core.nn.transformer import Encoder, EncoderBlock, ProbabilisticSelfAttention

pytestmark = pytest.mark.usefixtures("single_thread")

NEG_INF = float("-inf")
D, HEADS, LAYERS = 16, 4, 2


def _encoder(backend: str | None = "sdpa", *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Encoder:
    torch.manual_seed(seed)
    attention = None if backend is None else registry("attention").config(backend).build()
    return Encoder(D, HEADS, LAYERS, attention=attention).to(dtype).eval()


def _inputs(b: int = 2, n: int = 7, *, seed: int = 1, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, D, generator=gen, dtype=dtype)
    steps = torch.rand(b, n, generator=gen, dtype=dtype).clamp(1e-6, 1 - 1e-6)
    log_e = torch.log1p(-steps).cumsum(dim=1) - torch.log1p(-steps[:, :1])  # 0 at the start, decaying
    log_e[1, n - 2 :] = NEG_INF  # the second document is two positions shorter
    return x, log_e


def test_output_shape_dtype_and_padding() -> None:
    x, log_e = _inputs()
    out = _encoder()(x, log_e)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert (out[1, -2:] == 0).all()  # hard padding comes out exactly 0


def test_default_attention_is_the_sdpa_backend() -> None:
    x, log_e = _inputs()
    torch.testing.assert_close(_encoder(None)(x, log_e), _encoder("sdpa")(x, log_e), rtol=0, atol=0)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        ProbabilisticSelfAttention(16, 3)


def test_same_seed_same_output() -> None:
    x, log_e = _inputs()
    torch.testing.assert_close(_encoder(seed=5)(x, log_e), _encoder(seed=5)(x, log_e), rtol=0, atol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_reference_and_sdpa_encoders_agree_in_output_and_every_gradient(causal: bool) -> None:
    x, log_e = _inputs()
    results = {}
    for backend in ("reference", "sdpa"):
        model = _encoder(backend)
        le = log_e.clone().requires_grad_(True)
        out = model(x, le, causal=causal)
        out.square().sum().backward()
        results[backend] = (out.detach(), le.grad, [p.grad for p in model.parameters()])
    ref, sdpa = results["reference"], results["sdpa"]
    torch.testing.assert_close(sdpa[0], ref[0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(sdpa[1], ref[1], rtol=1e-9, atol=1e-10)
    for a, r in zip(sdpa[2], ref[2], strict=True):
        torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-10)


def test_flex_encoder_forward_agrees_with_reference() -> None:
    x, log_e = _inputs()
    with torch.no_grad():  # FlexAttention has no CPU backward
        torch.testing.assert_close(_encoder("flex")(x, log_e), _encoder("reference")(x, log_e), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "hard"])
def test_appended_padding_changes_no_real_output(backend: str) -> None:
    x, log_e = _inputs()
    gen = torch.Generator().manual_seed(9)
    x_long = torch.cat([x, 100 * torch.randn(2, 3, D, generator=gen, dtype=x.dtype)], dim=1)
    log_e_long = torch.cat([log_e, torch.full((2, 3), NEG_INF, dtype=log_e.dtype)], dim=1)
    model = _encoder(backend)
    out, out_long = model(x, log_e), model(x_long, log_e_long)
    torch.testing.assert_close(out_long[:, :7], out, rtol=0, atol=1e-12)
    assert (out_long[:, 7:] == 0).all()


def test_causal_encoder_output_ignores_later_positions() -> None:
    x, log_e = _inputs()
    model = _encoder("sdpa")
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    log_e2 = log_e.clone()
    log_e2[0, 4:] = -5.0
    torch.testing.assert_close(model(x2, log_e2, causal=True)[:, :4], model(x, log_e, causal=True)[:, :4], rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_gradients_reach_every_parameter_and_the_existence(backend: str) -> None:
    x, log_e = _inputs(dtype=torch.float32)
    model = _encoder(backend, dtype=torch.float32)
    le = log_e.clone().requires_grad_(True)
    model(x, le).square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    real = ~torch.isneginf(log_e)
    assert torch.isfinite(le.grad).all()
    assert (le.grad[real] != 0).any()  # the splitter learns through this gradient (§4)
    assert (le.grad[~real] == 0).all()


def test_hard_backend_encoder_sends_no_gradient_to_the_existence() -> None:
    x, log_e = _inputs()
    le = log_e.clone().requires_grad_(True)
    _encoder("hard")(x, le).sum().backward()
    assert le.grad is None


def test_a_block_keeps_the_residual_stream_shape() -> None:
    x, log_e = _inputs()
    block = EncoderBlock(D, HEADS).to(torch.float64).eval()
    assert block(x, log_e).shape == x.shape


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
@pytest.mark.parametrize("causal", [False, True])
def test_kept_positions_equal_the_full_encoder_with_the_rest_masked(backend: str, causal: bool) -> None:
    """``keep``: the linear layers see only the kept positions; every kept output, and the gradient
    to the input and the parameters, is the one of the full encoder whose other positions are padding."""
    enc = _encoder(backend)
    x, log_e = _inputs(b=3, n=9)
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[0, 5:] = False
    keep[2, 2:4] = False  # a gap, not only a tail
    x = x.clone().requires_grad_(True)
    log_e = log_e.clone().requires_grad_(True)
    full = enc(x, log_e.masked_fill(~keep, NEG_INF), causal=causal)
    rows = enc(x, log_e, causal=causal, keep=keep)
    torch.testing.assert_close(rows, full)
    assert (rows[~keep] == 0).all()
    w = torch.randn(full.shape, dtype=full.dtype, generator=torch.Generator().manual_seed(4))
    params = [x, log_e, *enc.parameters()]
    for a, b in zip(torch.autograd.grad((full * w).sum(), params), torch.autograd.grad((rows * w).sum(), params),
                    strict=True):
        torch.testing.assert_close(b, a)


def test_kept_positions_refuse_a_window() -> None:
    x, log_e = _inputs()
    with pytest.raises(ValueError, match="no window"):
        _encoder()(x, log_e, keep=torch.ones(x.shape[:2], dtype=torch.bool), window=2)
