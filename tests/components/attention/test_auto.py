"""The ``auto`` attention backend: sdpa on CPU (so CPU training works), flex on CUDA."""

from __future__ import annotations

import pytest
import torch

import zonkey.components.attention.auto as auto_mod
from tests.components.attention.cases import attention_case, cuda_attention_case
from zonkey.core.nn.attention import probabilistic_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def test_auto_runs_sdpa_on_cpu_with_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    monkeypatch.setattr(auto_mod, "flex_attention_backend", lambda *a, **kw: called.append("flex"))
    q, k, v, log_e = (t.clone().requires_grad_(True) for t in attention_case())
    out = probabilistic_attention(q, k, v, log_e, backend="auto")
    ref = probabilistic_attention(q, k, v, log_e, backend="sdpa")
    assert called == [] and torch.equal(out, ref)
    out.sum().backward()  # flex would refuse this on CPU
    assert q.grad is not None and log_e.grad is not None


def test_auto_trains_a_micro_model_on_cpu(tmp_path) -> None:
    from tests.helpers import micro_recipe
    from zonkey.core.recipe import recipe_to_dict, validate_recipe
    from zonkey.core.train.trainer import Trainer

    data = recipe_to_dict(micro_recipe(steps=1))
    data["model"]["attention"] = {"name": "auto"}
    data.pop("zonkey_version", None)
    data.pop("schema_version", None)
    res = Trainer(validate_recipe(data, source="<auto>"), tmp_path / "run", progress=False, log=lambda s: None).fit()
    assert res.step == 1 and res.skipped_steps == 0


@pytest.mark.gpu
def test_auto_runs_flex_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    real = auto_mod.flex_attention_backend

    def spy(*a, **kw):
        called.append("flex")
        return real(*a, **kw)

    monkeypatch.setattr(auto_mod, "flex_attention_backend", spy)
    q, k, v, log_e = cuda_attention_case()
    out = probabilistic_attention(q, k, v, log_e, backend="auto")
    torch.testing.assert_close(out, probabilistic_attention(q, k, v, log_e, backend="reference"), rtol=1e-4, atol=1e-5)
    assert called == ["flex"]
