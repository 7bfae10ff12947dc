"""Compressors run each segment at its length bucket with the latent and the gradients of m slots."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import M, assert_same_grads, batch, ctx
from zonkey.core.contracts.protocols import packs_rows, packs_slots
from zonkey.core.contracts.registry import registry
from zonkey.core.nn.packing import bucket_cut, needed_slots, run_bucketed
from zonkey.core.nn.segments import make_split

CASES = [("cls", {"layers": 2}), ("cls", {"layers": 1, "skip": True}), ("mean", {"layers": 1})]


def _segments(seed: int = 0):
    x, valid, _ = batch(b=3, n=30, seed=seed)
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(valid.shape, generator=g) * 0.5
    bos = torch.rand(valid.shape, generator=g) < 0.3
    bos[:, 0] = True
    bos &= valid
    x = x.requires_grad_(True)
    split = make_split(x, valid, p, bos, M, 2, existence="straight_through")
    return x, split.segments


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_bucketed_compression_equals_the_padded_one(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    comp = registry("compressor").config(name, **kwargs).build(ctx())
    assert packs_slots(comp)
    x, seg = _segments()
    cut = bucket_cut(needed_slots(seg.span, M), M)
    assert len(set(cut.tolist())) > 1 and int(cut.min()) < M  # the batch really has short buckets
    padded = comp(seg.vectors, seg.log_existence)
    packed = run_bucketed(cut, lambda r, n: (comp(seg.vectors[r, :n], seg.log_existence[r, :n]),))[0]
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)
    w = torch.randn(padded.shape, generator=torch.Generator().manual_seed(1))
    params = [x, *comp.parameters()]
    g_pad = torch.autograd.grad((padded * w).sum(), params, retain_graph=True, allow_unused=True)
    assert_same_grads(g_pad, torch.autograd.grad((packed * w).sum(), params, allow_unused=True))


@pytest.mark.parametrize("skip", [False, True])
def test_compression_at_lengths_equals_the_padded_one(skip: bool) -> None:
    torch.manual_seed(0)
    comp = registry("compressor").config("cls", layers=2, skip=skip).build(ctx())
    assert packs_rows(comp)
    x, seg = _segments(seed=1)
    lengths = seg.span.clamp(1, M)  # straight_through: existence 0 past the span
    assert int(lengths.min()) < M
    padded, states_pad = comp.encode(seg.vectors, seg.log_existence)
    n = int(lengths.max())
    rows, states = comp.encode(seg.vectors[:, :n], seg.log_existence[:, :n], lengths)
    torch.testing.assert_close(rows, padded, rtol=1e-5, atol=1e-5)
    inside = torch.arange(n)[None, :] < lengths[:, None]
    torch.testing.assert_close(states[inside], states_pad[:, :n][inside], rtol=1e-5, atol=1e-5)
    assert float(states.detach()[~inside].abs().max()) == 0.0
    w = torch.randn(padded.shape, generator=torch.Generator().manual_seed(1))
    params = [x, *comp.parameters()]
    g_pad = torch.autograd.grad((padded * w).sum(), params, retain_graph=True, allow_unused=True)
    assert_same_grads(g_pad, torch.autograd.grad((rows * w).sum(), params, allow_unused=True))
