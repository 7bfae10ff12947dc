"""Crash safety of a save: a crash at every write/rename, a real kill, leftovers cleaned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from tests.core.checkpoint.helpers import Net, assert_clean, assert_same_tensors, new_ema, save, step_dirs
from zonkey import io as zio
from zonkey.core.checkpoint import load_checkpoint, read_recipe_json, store, write_recipe_json


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


def test_crash_at_rename_keeps_previous_and_next_save_cleans(two_saves, monkeypatch) -> None:
    run, weights = two_saves
    latest = (run / "LATEST").read_bytes()
    model = Net()
    with torch.no_grad():
        model.norm.weight.fill_(3.0)
    weights[3] = {k: v.clone() for k, v in model.state_dict().items()}

    def crash(*a, **k):
        raise OSError("simulated crash")

    monkeypatch.setattr(store.os, "rename", crash)
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
    real, calls = zio.save_file, []

    def flaky(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:  # model.safetensors written, dies while writing the next file
            Path(path).write_bytes(b"\x00" * 10)
            raise KeyboardInterrupt
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(zio, "save_file", flaky)
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
    wrap(zio, "save_file")

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
