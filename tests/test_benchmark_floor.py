"""The training benchmark's matmul floor (``benchmarks/_profile.py``): FLOPs and calls it reads off a profile."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "_profile.py"


@pytest.fixture(scope="module")
def prof_mod():
    spec = importlib.util.spec_from_file_location("zonkey_bench_profile", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_product_flops_of_each_op(prof_mod):
    assert prof_mod.product_flops("aten::mm", ((5, 7), (7, 3))) == 2 * 5 * 7 * 3
    assert prof_mod.product_flops("aten::addmm", ((3,), (5, 7), (7, 3), (), ())) == 2 * 5 * 7 * 3
    assert prof_mod.product_flops("aten::bmm", ((4, 5, 7), (4, 7, 3))) == 4 * 2 * 5 * 7 * 3
    assert prof_mod.product_flops("aten::baddbmm", ((4, 5, 3), (4, 5, 7), (4, 7, 3), (), ())) == 4 * 2 * 5 * 7 * 3
    with pytest.raises(ValueError, match="do not multiply"):
        prof_mod.product_flops("aten::mm", ((5, 7), (6, 3)))
    with pytest.raises(ValueError, match="not a matrix-product op"):
        prof_mod.product_flops("aten::add", ((5, 7), (5, 7)))


def test_floor_counts_every_product_of_a_step(prof_mod):
    """A linear layer and an attention-like bmm, forward and backward: the floor sees the same FLOPs as
    torch's flop counter, every call, and times each product alone."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(48, 32)
    x = torch.randn(64, 48, requires_grad=True)
    k = torch.randn(8, 16, 32, requires_grad=True)

    def step():
        h = lin(x)  # addmm forward; backward: two mm (input and weight gradients)
        a = torch.bmm(h.view(8, 8, 32), k.transpose(1, 2))  # bmm forward; backward: two bmm
        a.sum().backward()

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    with prof_mod.profiled(record_shapes=True) as prof:
        step()
        step()
    floor = prof_mod.matmul_floor(prof.events(), steps=2, threads=1)
    assert floor["calls"] == 6  # 1 addmm + 2 mm + 1 bmm + 2 bmm
    assert floor["gflop"] * 1e9 == pytest.approx(counter.get_total_flops())
    assert floor["alone_cpu_ms"] > 0
    assert floor["alone_gflops"] > 0
    assert floor["in_step_ms"] > 0
    factors = {(tuple(a), tuple(b)) for _, a, b, _, _ in floor["largest"]}
    assert ((64, 48), (48, 32)) in factors  # the linear layer's forward product, x @ Wᵀ
