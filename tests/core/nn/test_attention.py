"""Unit tests of ``zonkey/core/nn/attention.py``: the existence bias, the dispatch through the registry
(plugin backends included), input checks and backend constraints, and what every built-in backend
does with padding. One backend's own behaviour is tested in ``tests/components/attention/``; the
general laws live in ``tests/properties/``."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from tests.components.attention.cases import NEG_INF, attention_case
from zonkey.components.attention.base import AttentionBackend, AttentionConfig
from zonkey.components.attention.hard import hard_attention
from zonkey.components.attention.reference import reference_attention
from zonkey.components.attention.sdpa import sdpa_attention
from zonkey.core.contracts.protocols import Attention
from zonkey.core.contracts.registry import register, registry
from zonkey.core.nn.attention import (
    BACKENDS,
    AttentionBackendError,
    BackendConstraints,
    existence_bias,
    probabilistic_attention,
)

pytestmark = pytest.mark.usefixtures("single_thread")
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
    q, k, v, log_e = attention_case()
    with pytest.raises(ValueError, match="dtype"):
        probabilistic_attention(q, k.float(), v, log_e)


@pytest.mark.parametrize("fn", ["reference", "sdpa", "hard"])
def test_backend_functions_validate_shapes_when_called_directly(fn: str) -> None:
    # registered modules call the backend functions without going through the dispatch
    backend_fn = {"reference": reference_attention, "sdpa": sdpa_attention, "hard": hard_attention}[fn]
    q, k, v, log_e = attention_case()
    with pytest.raises(ValueError, match="log_existence must be"):
        backend_fn(q, k, v, log_e[:, :3])


def test_unknown_backend_lists_the_known_ones() -> None:
    q, k, v, log_e = attention_case()
    with pytest.raises(ValueError, match="unknown attention backend 'flash'") as info:
        probabilistic_attention(q, k, v, log_e, backend="flash")
    for name in BACKENDS:
        assert name in str(info.value)


def test_every_dispatch_backend_is_a_registered_attention_component() -> None:
    assert set(BACKENDS) <= set(registry("attention").names())


# ------------------------------------------------------------------ dispatch through the registry

_calls: list[str] = []


def _counting_reference(q, k, v, log_existence, *, causal=False, tag="plain"):
    _calls.append(tag)
    return reference_attention(q, k, v, log_existence, causal=causal)


@pytest.fixture
def plugin_backends():
    """Backends registered under new names for one test (as a plugin would), removed afterwards."""
    made: list[str] = []

    def reg(name: str, constraints: BackendConstraints | None = None, tag: str = "plain"):
        cls = type(f"Zz{len(made)}Config", (AttentionConfig,), {
            "__annotations__": {"name": Literal[name]},
            "name": name,
            "constraints": constraints or BackendConstraints(),
            "build": lambda self: self.module(_counting_reference, tag=tag),
        })
        register("attention", name)(cls)
        made.append(name)
        return cls

    _calls.clear()
    yield reg
    for name in made:
        registry("attention").unregister(name)


def test_a_backend_registered_under_a_new_name_is_reachable_from_the_dispatch(plugin_backends) -> None:
    plugin_backends("zz_counting", tag="counted")
    q, k, v, log_e = attention_case()
    out = probabilistic_attention(q, k, v, log_e, backend="zz_counting")
    assert _calls == ["counted"]  # the plugin's own function ran
    torch.testing.assert_close(out, probabilistic_attention(q, k, v, log_e, backend="reference"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="zz_counting"):  # and it is listed among the known names
        probabilistic_attention(q, k, v, log_e, backend="zz_missing")


def test_a_name_registered_again_by_another_class_dispatches_to_the_new_one(plugin_backends) -> None:
    q, k, v, log_e = attention_case()
    plugin_backends("zz_again", tag="first")
    probabilistic_attention(q, k, v, log_e, backend="zz_again")
    registry("attention").unregister("zz_again")
    plugin_backends("zz_again", tag="second")
    probabilistic_attention(q, k, v, log_e, backend="zz_again")
    assert _calls == ["first", "second"]


def test_a_backend_that_needs_cuda_is_refused_on_cpu_in_one_line_naming_the_alternative(plugin_backends) -> None:
    plugin_backends("zz_cuda_only", BackendConstraints(needs_cuda=True))
    q, k, v, log_e = attention_case()
    with pytest.raises(AttentionBackendError) as info:
        probabilistic_attention(q, k, v, log_e, backend="zz_cuda_only")
    msg = str(info.value)
    assert "'zz_cuda_only' needs CUDA tensors; got cpu" in msg and "use backend 'sdpa' or 'reference'" in msg
    assert "\n" not in msg
    assert _calls == []  # refused before the backend ran


def test_a_backend_refuses_dtypes_it_does_not_declare(plugin_backends) -> None:
    plugin_backends("zz_f64", BackendConstraints(dtypes=(torch.float64,)))
    q, k, v, log_e = attention_case(dtype=torch.float32)
    with pytest.raises(AttentionBackendError, match=r"'zz_f64' does not support dtype torch.float32 .*use backend 'sdpa'"):
        probabilistic_attention(q, k, v, log_e, backend="zz_f64")
    probabilistic_attention(*attention_case(dtype=torch.float64), backend="zz_f64")
    assert _calls == ["plain"]


def test_only_alternatives_that_accept_the_inputs_are_named(plugin_backends) -> None:
    plugin_backends("zz_no_cpu_grad", BackendConstraints(supports_cpu_backward=False, alternatives=("flex", "sdpa")))
    q, k, v, log_e = attention_case()
    q.requires_grad_(True)
    with pytest.raises(AttentionBackendError) as info:
        probabilistic_attention(q, k, v, log_e, backend="zz_no_cpu_grad")
    assert str(info.value).endswith("use backend 'sdpa'")  # flex has no CPU backward either
    with torch.no_grad():
        probabilistic_attention(q, k, v, log_e, backend="zz_no_cpu_grad")  # no graph: no backward needed
    assert _calls == ["plain"]


def test_when_no_alternative_accepts_the_inputs_the_error_says_so() -> None:
    q, k, v, log_e = (t.long() for t in attention_case())
    with pytest.raises(AttentionBackendError, match="'sdpa' does not support dtype torch.int64.*no other backend"):
        probabilistic_attention(q, k, v, log_e.double(), backend="sdpa")


def test_the_built_module_checks_the_same_constraints_as_the_dispatch(plugin_backends) -> None:
    cls = plugin_backends("zz_cuda_module", BackendConstraints(needs_cuda=True))
    module = registry("attention").config("zz_cuda_module").build()
    assert isinstance(module, AttentionBackend) and module.constraints is cls.constraints
    q, k, v, log_e = attention_case()
    with pytest.raises(AttentionBackendError, match="needs CUDA"):
        module(q, k, v, log_e)


def test_a_backend_without_usable_defaults_is_explained(plugin_backends) -> None:
    @register("attention", "zz_required")
    class RequiredConfig(AttentionConfig):
        name: Literal["zz_required"] = "zz_required"
        window: int

        def build(self) -> AttentionBackend:
            return self.module(reference_attention)

    try:
        with pytest.raises(AttentionBackendError, match=r"'zz_required' cannot be built from its defaults"):
            probabilistic_attention(*attention_case(), backend="zz_required")
    finally:
        registry("attention").unregister("zz_required")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_built_in_backend_module_fulfils_the_attention_protocol(backend: str) -> None:
    assert isinstance(registry("attention").config(backend).build(), Attention)


# ------------------------------------------------------------------------------------- backends


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_padded_query_rows_are_exactly_zero(backend: str, causal: bool) -> None:
    q, k, v, log_e = attention_case()
    with torch.no_grad():
        out = probabilistic_attention(q, k, v, log_e, causal=causal, backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out[0, :, 4] == 0).all()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_fully_padded_document_gives_zeros_and_no_nan(backend: str) -> None:
    q, k, v, log_e = attention_case()
    log_e[1] = NEG_INF
    with torch.no_grad():
        out = probabilistic_attention(q, k, v, log_e, backend=backend)
    assert (out[1] == 0).all()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_a_fully_padded_document_has_zero_gradients(backend: str) -> None:
    q, k, v, log_e = (t.requires_grad_(True) for t in attention_case())
    log_e.data[1] = NEG_INF
    probabilistic_attention(q, k, v, log_e, backend=backend).sum().backward()
    for t in (q, k, v, log_e):
        assert torch.isfinite(t.grad).all()
        assert (t.grad[1] == 0).all()


def test_bfloat16_inputs_stay_bfloat16_and_close_to_float32() -> None:
    q, k, v, log_e = attention_case(dtype=torch.float32, seed=4)
    ref = probabilistic_attention(q, k, v, log_e, backend="reference")
    for backend in ("reference", "sdpa"):
        out = probabilistic_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), log_e, backend=backend)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=0, atol=5e-2)


def test_soft_existence_sends_gradient_to_every_non_padded_log_existence() -> None:
    # the splitter learns through this gradient (§4): it must not vanish on soft positions
    q, k, v, log_e = (t.requires_grad_(True) for t in attention_case())
    out = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)).sum().backward()
    real = ~torch.isneginf(log_e.detach())
    assert (log_e.grad[real] != 0).all()
    assert (log_e.grad[~real] == 0).all()
