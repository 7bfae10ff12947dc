"""The contract every registered attention backend keeps.

Runs over every name in ``registry("attention")``, so a new backend (built-in or plugin) is held
to it without new tests: builds from its defaults with ``build()`` (no level context: a model
builds its backend once, before its levels) into a module of the ``Attention`` protocol, keeps the
input shape and dtype, is deterministic, produces no NaN even at tiny existence, zeroes hard-padded
query rows, reduces to plain attention when every position surely exists, and either
differentiates or refuses loudly with :class:`AttentionBackendError`. Backend-specific behaviour belongs in the backend's own tests.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.strategies import qkv
from zonkey.core.contracts.protocols import BUILD_SIGNATURES, Attention
from zonkey.core.contracts.registry import registry
from zonkey.core.nn.attention import AttentionBackendError

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = registry("attention").names()
NEG_INF = float("-inf")


def _build(name: str) -> nn.Module:
    return registry("attention").config(name).build()


def _inputs(dtype: torch.dtype = torch.float32, *, seed: int = 0):
    q, k, v = qkv((2, 3, 6, 8), seed, dtype=dtype)  # (b, h, n, dh)
    log_e = torch.tensor(
        [
            [0.0, -0.2, -1.0, math.log(1e-6), NEG_INF, NEG_INF],  # decays to 1e-6, then padding
            [0.0, 0.0, -3.0, -0.5, -2.0, -7.0],  # not monotone, no padding
        ],
        dtype=dtype,
    )
    return q, k, v, log_e


def test_the_registry_has_the_four_backends_of_the_design() -> None:
    assert {"reference", "sdpa", "flex", "hard"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_defaults_into_a_parameter_free_module(name: str) -> None:
    config = registry("attention").config(name)
    module = config.build()
    assert isinstance(module, nn.Module)
    assert list(module.parameters()) == []  # attention carries no weights: checkpoints are unaffected
    assert registry("attention").config(name, **config.fields_doc()) == config  # defaults round-trip


@pytest.mark.parametrize("name", NAMES)
def test_builds_without_a_context_into_an_attention_module(name: str) -> None:
    config_cls = registry("attention").get(name)
    assert list(inspect.signature(config_cls.build).parameters) == ["self", *BUILD_SIGNATURES["attention"]] == ["self"]
    assert isinstance(registry("attention").config(name).build(), Attention)


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unknown_config_fields(name: str) -> None:
    with pytest.raises(ValueError, match="not_a_field"):
        registry("attention").config(name, not_a_field=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_shape_dtype_no_nan_and_zero_padded_rows(name: str, dtype: torch.dtype, causal: bool) -> None:
    q, k, v, log_e = _inputs(dtype)
    with torch.no_grad():
        out = _build(name)(q, k, v, log_e, causal=causal)
    assert out.shape == q.shape and out.dtype == dtype
    assert not torch.isnan(out).any() and torch.isfinite(out).all()
    assert (out[0, :, 4:] == 0).all()  # hard-padded query rows are exactly 0
    assert (out[0, :, :4] != 0).any()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    q, k, v, log_e = _inputs()
    with torch.no_grad():
        first = _build(name)(q, k, v, log_e)
        second = _build(name)(q, k, v, log_e)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", NAMES)
def test_certain_existence_is_plain_attention(name: str) -> None:
    q, k, v, _ = _inputs(torch.float64)
    with torch.no_grad():
        out = _build(name)(q, k, v, torch.zeros(2, 6, dtype=torch.float64))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_differentiates_or_refuses_loudly(name: str) -> None:
    q, k, v, log_e = (t.requires_grad_(True) for t in _inputs())
    try:
        out = _build(name)(q, k, v, log_e)
    except AttentionBackendError as exc:  # e.g. FlexAttention's missing CPU backward
        assert "sdpa" in str(exc) or "reference" in str(exc), "the error must name an alternative backend"
        return
    out.square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert log_e.grad is None or torch.isfinite(log_e.grad).all()
