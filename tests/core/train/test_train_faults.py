"""Faults during training: kill -9 at random moments, non-finite losses and gradients, a full disk.

Every case ends with the last complete checkpoint loadable, and resumable to the same weights an
uninterrupted run reaches.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.fuzz.outcome import zonkey
from tests.helpers import micro_recipe
from zonkey import io as zio
from zonkey.core import checkpoint as ckpt
from zonkey.core.checkpoint import store
from zonkey.core.recipe import recipe_to_dict
from zonkey.core.train.trainer import Trainer, TrainingError
from zonkey.io import CheckpointWriteError

quiet = {"progress": False, "log": lambda s: None}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _latest_step(run: Path) -> int:
    try:
        return int(json.loads((run / "LATEST").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _train_then_kill(recipe: Path, run: Path, *, resume: bool, after_step: int, delay: float) -> None:
    """``zonkey train`` in a child process, killed with SIGKILL ``delay`` s after LATEST passes ``after_step``."""
    cmd = [sys.executable, "-m", "zonkey", "train", str(recipe), "--out", str(run), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while _latest_step(run) <= after_step:
            assert child.poll() is None, f"training ended before it was killed: {child.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stderr.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_at_random_moments_leaves_a_resumable_run(tmp_path: Path) -> None:
    """Two kills (one during a fresh run, one during its resume); resumed 3 steps further, the run equals
    a straight one."""
    rec = micro_recipe(steps=400, save_every=1, log_every=1)  # a save every step: kills land in saves often
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(rec)))
    run = tmp_path / "run"
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    delays = [rng.uniform(0.0, 0.4) for _ in range(2)]
    seen = -1
    for i, delay in enumerate(delays):
        _train_then_kill(recipe, run, resume=i > 0, after_step=seen, delay=delay)
        c = ckpt.load_checkpoint(run)  # verified against the recorded hashes
        assert c.step >= max(seen, 1) and c.state["step"] == c.step, (delays, c.step)
        assert all(torch.isfinite(t).all() for t in c.model.values() if t.is_floating_point())
        seen = c.step
    end = seen + 3
    Trainer(rec, run, resume=True, **quiet).fit(stop_at=end)
    Trainer(rec, tmp_path / "straight", **quiet).fit(stop_at=end)
    assert _same(ckpt.load_checkpoint(run).model, ckpt.load_checkpoint(tmp_path / "straight").model), delays
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def _nan_loss(monkeypatch, trainer: Trainer, every: int = 1) -> None:
    real = type(trainer.model).forward
    calls = {"n": 0}

    def forward(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] % every == 0:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(type(trainer.model), "forward", forward)


def test_sporadic_nonfinite_losses_are_skipped_and_counted(tmp_path: Path, monkeypatch) -> None:
    t = Trainer(micro_recipe(steps=6, max_nonfinite=2), tmp_path / "run", **quiet)
    logs: list[str] = []
    t.log = logs.append
    _nan_loss(monkeypatch, t, every=2)
    res = t.fit()
    assert res.step == 6 and res.skipped_steps == 3
    assert sum("non-finite loss" in line and "step skipped" in line for line in logs) == 3
    c = ckpt.load_checkpoint(tmp_path / "run")
    assert c.state["skipped"] == 3 and all(torch.isfinite(v).all() for v in c.model.values() if v.is_floating_point())


def test_the_nonfinite_limit_comes_from_the_recipe_and_stops_the_cli(tmp_path: Path, monkeypatch) -> None:
    from zonkey.core.model.network import ZonkeyModel

    real = ZonkeyModel.forward

    def forward(self, *a, **k):
        out = real(self, *a, **k)
        out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(ZonkeyModel, "forward", forward)
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe(steps=6))))
    res = zonkey(["train", recipe, "--out", tmp_path / "run", "--no-progress", "--set", "train.max_nonfinite=2"],
                 expect=1, match=r"2 non-finite losses in a row at step 1 .*train\.max_nonfinite is 2.*no checkpoint")
    assert "step 0: non-finite loss" in res.stderr


def test_nonfinite_gradients_are_skipped_too(tmp_path: Path) -> None:
    """A finite loss whose gradient is infinite: clipping it would write NaN into every weight."""
    t = Trainer(micro_recipe(steps=6, max_nonfinite=2), tmp_path / "run", **quiet)
    t.fit(stop_at=2)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    hook = t.model.embed.register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.raises(TrainingError, match="2 non-finite losses in a row.*grad_norm"):
        t.fit()
    hook.remove()
    assert _same(before, t.model.state_dict()), "a skipped step changed the weights"
    assert ckpt.load_checkpoint(tmp_path / "run").step == 2  # the last good checkpoint


@pytest.mark.parametrize("fail_on", ["ema", "state", "latest"])
def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch, fail_on: str) -> None:
    run = tmp_path / "run"
    t = Trainer(micro_recipe(steps=4, save_every=2), run, **quiet)
    t.fit(stop_at=2)
    good, latest = ckpt.load_checkpoint(run), (run / "LATEST").read_bytes()

    def full(path: Path) -> None:
        with open(path, "wb") as f:
            f.write(b"\0" * 100)  # a partial file, as a filling disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    if fail_on == "latest":  # LATEST's temporary sibling cannot be written
        real_bytes = zio.write_bytes
        monkeypatch.setattr(zio, "write_bytes", lambda p, data: full(p) if "LATEST" in p.name else real_bytes(p, data))
    else:
        target = {"ema": store.write_safetensors, "state": store.write_bytes}[fail_on]
        real_write, calls = target, {"n": 0}

        def flaky(path, *a):
            calls["n"] += 1
            if fail_on == "state" or calls["n"] == 2:  # the model file written, the EMA file fails
                full(path)
            return real_write(path, *a)

        monkeypatch.setattr(store, "write_safetensors" if fail_on == "ema" else "write_bytes", flaky)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*previous checkpoint is intact") as info:
        t.fit()
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    monkeypatch.undo()
    assert (run / "LATEST").read_bytes() == latest
    again = ckpt.load_checkpoint(run)
    assert again.step == 2 and _same(again.model, good.model) and _same(again.ema, good.ema)
    # space again: the next save cleans the leftovers and the run goes on
    Trainer(micro_recipe(steps=4, save_every=2), run, resume=True, **quiet).fit()
    assert ckpt.load_checkpoint(run).step == 4
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def test_a_full_disk_is_one_line_from_the_cli(tmp_path: Path, monkeypatch) -> None:
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe(steps=2))))

    def full(path, *a):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "write_safetensors", full)
    zonkey(["train", recipe, "--out", tmp_path / "run", "--no-progress"], expect=1,
           match=r"run: cannot save the checkpoint of step 2 \(No space left on device\)")
