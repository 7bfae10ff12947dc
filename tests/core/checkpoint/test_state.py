"""Optimizer and generator state as tensors + JSON: exact resume, lossless round trips."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.core.checkpoint.helpers import assert_same_tensors, make, new_ema, seed_all, train_step
from zonkey.core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_strict,
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from zonkey.io import atomic_save_safetensors


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    seed_all(0)
    model, opt, sched = make(0)
    ema = new_ema(model)
    for _ in range(3):
        train_step(model, opt, sched, ema)
    save_checkpoint(
        tmp_path, step=3, model=model, ema=ema, optimizer=opt,
        state={"step": 3, "scheduler": sched.state_dict(), "nonfinite": 0},
    )
    for _ in range(3):
        train_step(model, opt, sched, ema)

    # a fresh process: different init, different generator states
    seed_all(123)
    torch.rand(17)
    model2, opt2, sched2 = make(1)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 3 and ckpt.state["nonfinite"] == 0
    load_state_strict(model2, ckpt.model, "test")
    optimizer_from_tensors(opt2, *ckpt.optimizer)
    sched2.load_state_dict(ckpt.state["scheduler"])
    set_rng_state(ckpt.rng)
    ema2 = {k: v.clone() for k, v in ckpt.ema.items()}
    assert model2.head.weight is model2.emb.weight  # loading kept the tie
    for _ in range(3):
        train_step(model2, opt2, sched2, ema2)

    assert_same_tensors(model.state_dict(), model2.state_dict())
    assert_same_tensors(ema, ema2)
    t1, m1 = optimizer_to_tensors(opt)
    t2, m2 = optimizer_to_tensors(opt2)
    assert_same_tensors(t1, t2)
    assert m1 == m2


@pytest.mark.parametrize(
    "build",
    [
        lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.8, 0.99), weight_decay=0.05),
        lambda ps: torch.optim.AdamW(ps, lr=torch.tensor(1e-3)),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    ],
    ids=["adamw", "adamw-tensor-lr", "adam-amsgrad", "sgd-momentum"],
)
def test_optimizer_round_trip_exact(tmp_path: Path, build) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = build([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.5}])
    for _ in range(2):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    json.dumps(meta)  # JSON-able
    path = atomic_save_safetensors(tmp_path / "opt.safetensors", tensors, {"meta": json.dumps(meta)})
    with safe_open(str(path), framework="pt") as f:
        back = {k: f.get_tensor(k) for k in f.keys()}
        meta_back = json.loads(f.metadata()["meta"])
    opt2 = build([{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.5}])
    optimizer_from_tensors(opt2, back, meta_back)
    a, b = opt.state_dict(), opt2.state_dict()
    assert len(a["param_groups"]) == len(b["param_groups"]) == 2
    for ga, gb in zip(a["param_groups"], b["param_groups"], strict=True):
        assert ga.keys() == gb.keys()
        for key, va in ga.items():
            vb = gb[key]
            assert type(va) is type(vb), key  # tuples stay tuples, tensors stay tensors
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, key
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for key, va in a["state"][i].items():
            vb = b["state"][i][key]
            assert torch.equal(va, vb) and va.dtype == vb.dtype if isinstance(va, torch.Tensor) else va == vb


def test_optimizer_mismatch_is_a_checkpoint_error() -> None:
    model = nn.Linear(2, 2)
    tensors, meta = optimizer_to_tensors(torch.optim.AdamW(model.parameters()))
    with pytest.raises(CheckpointError, match="optimizer class mismatch"):
        optimizer_from_tensors(torch.optim.SGD(model.parameters(), lr=0.1), tensors, meta)
    with pytest.raises(CheckpointError, match="does not match the optimizer"):
        optimizer_from_tensors(torch.optim.AdamW(nn.Linear(2, 3).parameters()), tensors,
                               {**meta, "state_dict": {**meta["state_dict"], "param_groups": []}})


def test_rng_round_trip() -> None:
    seed_all(5)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's generator
    np.random.standard_normal()
    saved = rng_state()
    draws = (torch.rand(4), random.random(), random.gauss(0, 1), np.random.standard_normal(3))
    seed_all(99)
    set_rng_state(saved)
    again = (torch.rand(4), random.random(), random.gauss(0, 1), np.random.standard_normal(3))
    assert torch.equal(draws[0], again[0])
    assert draws[1:3] == again[1:3]
    assert np.array_equal(draws[3], again[3])
