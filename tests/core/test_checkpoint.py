"""Checkpoints: exact resume, atomic saves (a crash at every write/rename), retention, clear errors."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

import zonkey
from zonkey.core import checkpoint as ck
from zonkey.core.checkpoint import (
    CheckpointError,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    load_model,
    load_state_strict,
    optimizer_from_tensors,
    optimizer_to_tensors,
    read_recipe_json,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_recipe_json,
)
from zonkey.core.recipe import SCHEMA_VERSION, recipe_to_dict, validate_recipe

VOCAB, WIDTH = 11, 8


class Net(nn.Module):
    """Tiny model with the awkward parts: tied weights, dropout, an integer buffer."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, width)
        self.body = nn.Sequential(nn.Linear(width, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.norm(self.body(self.emb(x))))


def make(seed: int = 0) -> tuple[Net, torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    return model, opt, sched


def train_step(model: Net, opt: torch.optim.Optimizer, sched, ema: dict[str, torch.Tensor]) -> None:
    # draws from torch, Python and numpy generators so that all three must be restored
    n = random.randrange(3, 7)
    x = torch.randint(0, VOCAB, (4, n))
    noise = torch.from_numpy(np.random.standard_normal((4, n, VOCAB)).astype(np.float32))
    loss = F.cross_entropy((model(x) + 0.01 * noise).flatten(0, 1), x.flatten())
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    with torch.no_grad():
        for k, p in model.named_parameters():
            ema[k].lerp_(p, 0.1)


def new_ema(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def save(run: Path, step: int, model: nn.Module, *, opt=None, ema=None, keep: int = 2, **kw) -> Path:
    return save_checkpoint(run, step=step, model=model, ema=ema, optimizer=opt, state={"step": step, **kw}, keep=keep)


def step_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------
# Exact resume


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
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
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


# --------------------------------------------------------------------------------------------
# Atomic writes


def test_atomic_writes_replace_whole_files(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1, "nan": float("nan")})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    with pytest.raises(CheckpointError, match=r"x\.json: not JSON-serializable"):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 2}
    atomic_write_bytes(tmp_path / "b", b"abc")
    assert (tmp_path / "b").read_bytes() == b"abc"
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["b", "sub", "x.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "w.safetensors"
    atomic_save_safetensors(p, {"a": torch.ones(2)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_save_safetensors(p, {"a": torch.zeros(2)})
    monkeypatch.undo()
    with safe_open(str(p), framework="pt") as f:
        assert torch.equal(f.get_tensor("a"), torch.ones(2))
    assert [x.name for x in tmp_path.iterdir()] == ["w.safetensors"]


def test_safetensors_tied_and_non_contiguous(tmp_path: Path) -> None:
    w = torch.randn(3, 4)
    tensors = {"a": w, "b": w, "t": w.t(), "view": w[1:], "empty": torch.zeros(0), "s": torch.tensor(2.5)}
    p = atomic_save_safetensors(tmp_path / "t.safetensors", tensors, {"k": "v"})
    with safe_open(str(p), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        back = {k: f.get_tensor(k) for k in f.keys()}
    assert_same_tensors({k: v.contiguous() for k, v in tensors.items()}, back)


# --------------------------------------------------------------------------------------------
# Crashes during a save


@pytest.fixture()
def two_saves(tmp_path: Path) -> tuple[Path, dict[int, dict[str, torch.Tensor]]]:
    """A run with steps 1 and 2 saved (keep=2), and the weights saved at each step."""
    run = tmp_path / "run"
    weights = {}
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    write_recipe_json(run, {"name": "x", "model": {}})
    for s in (1, 2):
        with torch.no_grad():
            model.norm.weight.fill_(float(s))
        save(run, s, model, opt=opt, ema=new_ema(model))
        weights[s] = {k: v.clone() for k, v in model.state_dict().items()}
    return run, weights


def check_loadable(run: Path, weights: dict[int, dict[str, torch.Tensor]], allowed: set[int]) -> int:
    ckpt = load_checkpoint(run)
    assert ckpt.step in allowed
    assert ckpt.state["step"] == ckpt.step
    assert_same_tensors(ckpt.model, weights[ckpt.step])
    assert "torch.cpu" in ckpt.rng
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        run_step = int(f.metadata()["step"])
        assert run_step in allowed
        assert torch.equal(f.get_tensor("norm.weight"), weights[run_step]["norm.weight"])
    read_recipe_json(run)
    return ckpt.step


def assert_clean(run: Path) -> None:
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".old")]
    assert leftovers == []


def test_crash_at_rename_keeps_previous_and_next_save_cleans(two_saves, monkeypatch) -> None:
    run, weights = two_saves
    latest = (run / "LATEST").read_bytes()
    model = Net()
    with torch.no_grad():
        model.norm.weight.fill_(3.0)
    weights[3] = {k: v.clone() for k, v in model.state_dict().items()}

    def crash(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(ck.os, "rename", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save(run, 3, model)
    monkeypatch.undo()
    assert (run / "LATEST").read_bytes() == latest
    stale = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert len(stale) == 1 and (stale[0] / "state.json").is_file()  # fully written, never renamed
    assert check_loadable(run, weights, {2}) == 2

    save(run, 3, model)
    assert_clean(run)
    assert step_dirs(run) == ["step-00000002", "step-00000003"]
    assert check_loadable(run, weights, {3}) == 3


def test_crash_in_safetensors_writer(two_saves, monkeypatch) -> None:
    run, weights = two_saves
    real, calls = ck.save_file, []

    def flaky(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # model.safetensors written, dies while writing the next file
            Path(path).write_bytes(b"\x00" * 10)
            raise KeyboardInterrupt
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        save(run, 3, Net(), ema=new_ema(Net()))
    monkeypatch.undo()
    assert check_loadable(run, weights, {2}) == 2
    save(run, 3, Net())
    assert_clean(run)


class Crash(BaseException):
    """Stands for a kill: not an Exception, so no handler swallows it."""


def crash_at(n: int | None):
    """Patch the filesystem calls a save makes; raise Crash at the n-th one (count only if None)."""
    counter = {"n": 0}
    patched = []

    def wrap(owner, name):
        real = getattr(owner, name)

        def fn(*a, **k):
            counter["n"] += 1
            if n is not None and counter["n"] == n:
                raise Crash(f"{name} #{n}")
            return real(*a, **k)

        patched.append((owner, name, real))
        setattr(owner, name, fn)

    for name in ("fsync", "rename", "replace", "unlink", "mkdir"):
        wrap(os, name)
    wrap(shutil, "rmtree")
    wrap(shutil, "copyfile")
    wrap(ck, "save_file")

    def undo():
        for owner, name, real in reversed(patched):
            setattr(owner, name, real)

    return counter, undo


@pytest.mark.parametrize("same_step", [False, True], ids=["new-step", "resave-same-step"])
def test_crash_at_every_filesystem_call(two_saves, tmp_path: Path, same_step: bool, monkeypatch) -> None:
    # the order of the calls is what is tested here; skipping the disk flush keeps it fast
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    template, weights = two_saves
    new_step = 2 if same_step else 3
    model = Net()
    with torch.no_grad():
        model.norm.weight.fill_(7.0)
    new_weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters())

    probe = tmp_path / "probe"
    shutil.copytree(template, probe)
    counter, undo = crash_at(None)
    try:
        save(probe, new_step, model, opt=opt, ema=new_ema(model), keep=1 if same_step else 2)
    finally:
        undo()
    total = counter["n"]
    assert total > 15

    for n in range(1, total + 1):
        run = tmp_path / f"crash-{n}"
        shutil.copytree(template, run)
        _, undo = crash_at(n)
        try:
            with pytest.raises(Crash):
                save(run, new_step, model, opt=opt, ema=new_ema(model), keep=1 if same_step else 2)
        finally:
            undo()
        ckpt = load_checkpoint(run)
        if same_step:
            assert ckpt.step == 2
            assert any(torch.equal(ckpt.model["norm.weight"], w["norm.weight"]) for w in (weights[2], new_weights))
        else:
            assert ckpt.step in (2, 3), n
            expect = weights[2] if ckpt.step == 2 else new_weights
            assert_same_tensors(ckpt.model, expect)
            # nothing already saved is lost: step 2 is still there whatever happened
            assert_same_tensors(load_checkpoint(run / "checkpoints" / "step-00000002").model, weights[2])
        with safe_open(str(run / "model.safetensors"), framework="pt") as f:
            run_weight = f.get_tensor("norm.weight")
        assert any(torch.equal(run_weight, w["norm.weight"]) for w in (weights[2], new_weights)), n
        read_recipe_json(run)
        # the next save recovers and leaves a clean run
        save(run, new_step, model, opt=opt, keep=2)
        assert_clean(run)
        assert_same_tensors(load_checkpoint(run).model, new_weights)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    from torch import nn
    from zonkey.core import checkpoint as ck
    run = sys.argv[1]
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ck.save_checkpoint(run, step=1, model=model, ema=None, optimizer=None, state={"n": 1})
    real = os.replace
    def replace(src, dst):
        if str(dst).endswith("LATEST"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
    with torch.no_grad():
        model.weight.fill_(2.0)
    ck.save_checkpoint(run, step=2, model=model, ema=None, optimizer=None, state={"n": 2})
    """
)


def test_real_kill_before_latest_is_replaced(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(run)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert json.loads((run / "LATEST").read_text())["step"] == 1
    ckpt = load_checkpoint(run)
    assert ckpt.step == 1 and torch.equal(ckpt.model["weight"], torch.ones(3, 3))
    assert any(p.name.startswith(".tmp-") for p in run.iterdir())  # the half-replaced LATEST
    model = nn.Linear(3, 3)
    save(run, 3, model)
    assert_clean(run)
    assert load_checkpoint(run).step == 3


# --------------------------------------------------------------------------------------------
# Layout, retention, fallbacks


def test_layout_and_keep_retention(tmp_path: Path) -> None:
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    for s in (10, 20, 30, 40):
        out = save(tmp_path, s, model, opt=opt)
    assert out == tmp_path / "checkpoints" / "step-00000040"
    assert step_dirs(tmp_path) == ["step-00000030", "step-00000040"]
    assert sorted(p.name for p in out.iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    assert json.loads((tmp_path / "LATEST").read_text()) == {"checkpoint": "checkpoints/step-00000040", "step": 40}
    save(tmp_path, 50, model, keep=3)
    save(tmp_path, 60, model, keep=3)
    assert step_dirs(tmp_path) == ["step-00000040", "step-00000050", "step-00000060"]
    save(tmp_path, 70, model, keep=1)
    assert step_dirs(tmp_path) == ["step-00000070"]
    # resuming from an earlier state and saving drops the abandoned later checkpoint
    save(tmp_path, 65, model, keep=2)
    assert step_dirs(tmp_path) == ["step-00000065"]
    assert load_checkpoint(tmp_path).step == 65
    with pytest.raises(CheckpointError, match="keep"):
        save(tmp_path, 80, model, keep=0)


def test_resave_same_step_replaces_it(tmp_path: Path) -> None:
    model = Net()
    save(tmp_path, 5, model, tag="first")
    save(tmp_path, 5, model, tag="second", keep=1)
    assert step_dirs(tmp_path) == ["step-00000005"]
    assert load_checkpoint(tmp_path).state["tag"] == "second"
    assert_clean(tmp_path)


def test_load_fallbacks(tmp_path: Path) -> None:
    model = Net()
    save(tmp_path, 1, model)
    save(tmp_path, 2, model)
    (tmp_path / "checkpoints" / ".tmp-step-00000009-x").mkdir()  # stale, ignored
    (tmp_path / "LATEST").unlink()
    assert load_checkpoint(tmp_path).step == 2
    atomic_write_json(tmp_path / "LATEST", {"checkpoint": "checkpoints/step-00000007"})
    assert load_checkpoint(tmp_path).step == 2  # dangling pointer: newest complete dir
    (tmp_path / "LATEST").write_text("checkpoints/step-00000001\n")  # plain-text pointer
    assert load_checkpoint(tmp_path).step == 1
    assert load_checkpoint(tmp_path / "checkpoints" / "step-00000002").step == 2
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "LATEST").unlink()
    only = load_checkpoint(tmp_path)  # RUN/model.safetensors alone
    assert only.step == 2 and only.optimizer is None and only.state == {}
    assert_same_tensors(only.model, model.state_dict())
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_checkpoint(_empty(tmp_path))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope")


def _empty(tmp_path: Path) -> Path:
    p = tmp_path / "empty"
    p.mkdir()
    return p


def test_state_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        save(tmp_path, 1, Net(), bad=torch.ones(1))
    assert not (tmp_path / "checkpoints").exists()


# --------------------------------------------------------------------------------------------
# Errors that name the file


@pytest.mark.parametrize("damage", ["truncate", "garbage-same-size", "garbage", "delete"])
def test_corrupt_weights_name_the_file(tmp_path: Path, damage: str) -> None:
    out = save(tmp_path, 100, Net(), ema=new_ema(Net()))
    f = out / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage-same-size":
        f.write_bytes(b"\xff" * len(data))
    elif damage == "garbage":
        f.write_bytes(b"not a safetensors file")
    else:
        f.unlink()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    msg = str(info.value)
    assert str(f) in msg and "\n" not in msg
    if damage == "garbage-same-size":  # sizes agree with state.json: safetensors itself refuses it
        assert "corrupt safetensors file" in msg


def test_corrupt_run_level_weights(tmp_path: Path) -> None:
    save(tmp_path, 1, Net())
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "LATEST").unlink()
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 50)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors file"):
        load_checkpoint(tmp_path)


def test_bad_state_json(tmp_path: Path) -> None:
    out = save(tmp_path, 1, Net())
    (out / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state\.json: invalid JSON \(line 1"):
        load_checkpoint(tmp_path)
    (out / "state.json").unlink()
    with pytest.raises(CheckpointError, match=r"state\.json: missing"):
        load_checkpoint(out)


def test_load_state_strict_lists_every_mismatch() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["0.weight"] = torch.zeros(4, 3)
    del sd["1.bias"]
    sd["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_state_strict(model, sd, "RUN/checkpoints/step-00000001/model.safetensors")
    msg = str(info.value)
    assert msg.startswith("RUN/checkpoints/step-00000001/model.safetensors: checkpoint does not match the model")
    assert "missing keys ['1.bias']" in msg
    assert "unexpected keys ['extra']" in msg
    assert "shape mismatch for '0.weight': checkpoint (4, 3) vs model (4, 4)" in msg
    assert "\n" not in msg
    good = {k: v.clone() + 1 for k, v in model.state_dict().items()}
    load_state_strict(model, good, "x")
    assert torch.equal(model[1].bias, good["1.bias"])


# --------------------------------------------------------------------------------------------
# No Python object serialization


def test_no_object_serialization(tmp_path: Path) -> None:
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randint(0, VOCAB, (2, 3))).sum().backward()
    opt.step()
    write_recipe_json(tmp_path, {"name": "x"})
    save(tmp_path, 1, model, opt=opt, ema=new_ema(model))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for p in files:
        head = p.read_bytes()[:2]
        assert head[:2] != b"PK", p  # zip container of the torch serializer
        if p.suffix == ".safetensors":
            with safe_open(str(p), framework="pt") as f:
                list(f.keys())  # parses as safetensors
        else:
            assert not head.startswith(b"\x80"), p
            json.loads(p.read_text(encoding="utf-8"))
    source = Path(ck.__file__).read_text(encoding="utf-8")
    for word in ("torch.save", "torch.load", "pickle"):
        assert word not in source


# --------------------------------------------------------------------------------------------
# recipe.json, versions and migrations


def test_recipe_json_round_trip_and_versions(tmp_path: Path) -> None:
    write_recipe_json(tmp_path, {"name": "tiny", "model": {"levels": []}})
    raw = json.loads((tmp_path / "recipe.json").read_text())
    assert raw["zonkey_version"] == zonkey.__version__ and raw["schema_version"] == SCHEMA_VERSION
    assert read_recipe_json(tmp_path) == {"name": "tiny", "model": {"levels": []}, "schema_version": SCHEMA_VERSION}
    with pytest.raises(CheckpointError, match=r"missing recipe\.json in "):
        read_recipe_json(tmp_path / "other")


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": SCHEMA_VERSION + 1, "zonkey_version": "9.0"})
    with pytest.raises(CheckpointError, match=r"recipe\.json: schema_version \d+ is newer .*zonkey 9\.0"):
        read_recipe_json(tmp_path)
    out = save(tmp_path, 1, Net())
    info = json.loads((out / "state.json").read_text())
    info["schema_version"] = SCHEMA_VERSION + 1
    atomic_write_json(out / "state.json", info)
    with pytest.raises(CheckpointError, match=r"state\.json: schema_version \d+ is newer"):
        load_checkpoint(tmp_path)


def test_older_schema_version_is_migrated_and_logged(tmp_path: Path, monkeypatch, caplog) -> None:
    old = SCHEMA_VERSION - 1
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": old, "old_name": 3})
    with pytest.raises(CheckpointError, match=f"no migration from schema_version {old}"):
        read_recipe_json(tmp_path)
    monkeypatch.setitem(ck.RECIPE_MIGRATIONS, old, lambda d: {"new_name": d.pop("old_name"), **d})
    with caplog.at_level(logging.INFO, logger=ck.__name__):
        data = read_recipe_json(tmp_path)
    assert data == {"new_name": 3, "schema_version": SCHEMA_VERSION}
    assert f"migrated recipe from schema_version {old} to {SCHEMA_VERSION}" in caplog.text
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": "one"})
    with pytest.raises(CheckpointError, match="schema_version must be an integer"):
        read_recipe_json(tmp_path)


# --------------------------------------------------------------------------------------------
# load_model


@pytest.fixture()
def fake_model_module(monkeypatch):
    built = []

    def build_model(recipe):
        built.append(recipe)
        return Net(width=recipe.model.levels[0].d_model)

    monkeypatch.setitem(sys.modules, "zonkey.core.model", types.SimpleNamespace(build_model=build_model))
    return built


def test_load_model(tmp_path: Path, fake_model_module) -> None:
    recipe = validate_recipe({"model": {"levels": [{"d_model": WIDTH}]}})
    model = Net()
    ema = {k: torch.full_like(v, 0.5) for k, v in new_ema(model).items()}
    save_checkpoint(tmp_path, step=4, model=model, ema=ema, optimizer=None, state={}, recipe=recipe_to_dict(recipe))

    loaded = load_model(tmp_path)
    assert not loaded.training and fake_model_module[-1] == recipe
    assert torch.equal(loaded.norm.weight, ema["norm.weight"])
    assert "head.weight" not in ema and torch.equal(loaded.head.weight, ema["emb.weight"])  # tied: EMA wins
    assert torch.equal(loaded.calls, model.calls)  # buffer not in the EMA: from the model weights
    raw = load_model(tmp_path, use_ema=False)
    assert_same_tensors(raw.state_dict(), model.state_dict())
    from_step = zonkey.load(tmp_path / "checkpoints" / "step-00000004")
    assert torch.equal(from_step.norm.weight, ema["norm.weight"])

    # weights that don't fit the recipe's model
    bad = validate_recipe({"model": {"levels": [{"d_model": 16}]}})
    write_recipe_json(tmp_path, recipe_to_dict(bad))
    with pytest.raises(CheckpointError, match=r"ema\.safetensors: checkpoint does not match the model: .*shape"):
        load_model(tmp_path)
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": SCHEMA_VERSION, "model": {"levels": "x"}})
    with pytest.raises(CheckpointError, match=r"recipe\.json: model\.levels"):
        load_model(tmp_path)
    (tmp_path / "recipe.json").unlink()
    with pytest.raises(CheckpointError, match="missing recipe.json in"):
        load_model(tmp_path)
