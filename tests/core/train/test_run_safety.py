"""A run directory under real processes: one writer, clean stops on signals, metrics that match checkpoints.

The trainers here are ``zonkey train`` subprocesses of the micro recipe, stopped by SIGTERM or
kill -9 while they train; resuming happens in this process and is compared with an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.helpers import micro_recipe
from zonkey.core import checkpoint as ckpt
from zonkey.core.recipe import recipe_to_dict
from zonkey.core.train.trainer import Trainer, TrainingError

LONG = 2000  # steps the subprocesses are given: they are always stopped long before


def _quiet(s: str) -> None:
    return None


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the micro recipe sets one thread


def _recipe_file(tmp_path: Path, **train: Any) -> tuple[Any, Path]:
    rec = micro_recipe(steps=LONG, log_every=1, **train)
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump(recipe_to_dict(rec)), encoding="utf-8")
    return rec, path


def _start(recipe: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "zonkey", "train", str(recipe), "--out", str(out), "--no-progress",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def _wait_for(cond: Any, proc: subprocess.Popen[str], what: str, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the trainer ended (rc {proc.returncode}) before {what}:\n{err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_trainer_is_refused_and_sigterm_saves_a_checkpoint_that_resumes_bit_exactly(tmp_path: Path) -> None:
    rec, recipe = _recipe_file(tmp_path)
    run = tmp_path / "run"
    first = _start(recipe, run)
    _wait_for(lambda: len(_steps(run)) >= 2, first, "two logged steps")

    second = _start(recipe, run, "--resume")  # a second writer into the same folder, while the first trains
    _, err = second.communicate(timeout=240)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert second.returncode == 1 and len(lines) == 1, err
    assert f"PID {first.pid}" in lines[0] and "is writing this run" in lines[0]

    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=240)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: saved the checkpoint of step" in err and "--resume" in err
    stopped = ckpt.load_checkpoint(run).step
    assert 2 <= stopped < LONG
    steps = _steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == stopped

    # resume to two steps past the stop; the same two steps from an uninterrupted run give the same bytes
    end = stopped + 2
    Trainer(rec, run, resume=True, progress=False, log=_quiet).fit(stop_at=end)
    Trainer(rec, tmp_path / "straight", progress=False, log=_quiet).fit(stop_at=end)
    name = f"checkpoints/step-{end:08d}"
    for f in ("model.safetensors", "ema.safetensors", "optimizer.safetensors"):
        assert _sha(run / name / f) == _sha(tmp_path / "straight" / name / f), f
    assert _steps(run) == list(range(1, end + 1))


def test_kill_9_then_resume_logs_every_step_once(tmp_path: Path) -> None:
    rec, recipe = _recipe_file(tmp_path, save_every=3)
    run = tmp_path / "run"
    proc = _start(recipe, run)

    def past_a_checkpoint() -> bool:
        latest = ckpt.find_latest_checkpoint(run) if (run / "LATEST").exists() else None
        return latest is not None and any(s > int(latest.name.split("-")[1]) for s in _steps(run))

    _wait_for(past_a_checkpoint, proc, "a row logged after a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = ckpt.load_checkpoint(run).step
    assert max(_steps(run)) > saved  # rows the checkpoint does not cover: the old code logged them twice
    Trainer(rec, run, resume=True, progress=False, log=_quiet).fit(stop_at=saved + 4)
    steps = _steps(run)
    assert steps == list(range(1, saved + 5)), steps


def test_identical_runs_give_identical_checkpoint_files_readable_by_the_group(tmp_path: Path) -> None:
    import random

    import numpy as np

    rec = micro_recipe(steps=2)
    for name in ("a", "b"):
        random.random(), np.random.rand()  # as another process would, the generators start elsewhere
        Trainer(rec, tmp_path / name, progress=False, log=_quiet).fit()
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "checkpoints").rglob("*") if p.is_file())
    assert len(files) >= 5
    for rel in files:
        assert _sha(tmp_path / "a" / rel) == _sha(tmp_path / "b" / rel), rel
    mask = os.umask(0o022)
    os.umask(mask)
    for p in (tmp_path / "a").rglob("*"):
        if p.is_file() and p.name != ".lock":
            assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p


def test_a_fresh_run_into_a_dead_runs_folder_refuses_or_restarts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = micro_recipe(steps=4, log_every=1)
    Trainer(rec, run, progress=False, log=_quiet).fit(stop_at=3)  # like a run killed before its first save
    for p in [run / "LATEST", run / "model.safetensors", run / "ema.safetensors"]:
        p.unlink()
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "notes.txt").write_text("mine")
    before = (run / "metrics.jsonl").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run that saved no checkpoint.*--restart"):
        Trainer(rec, run, progress=False, log=_quiet)
    assert (run / "metrics.jsonl").read_bytes() == before
    Trainer(rec, run, progress=False, log=_quiet, restart=True).fit()
    assert _steps(run) == [1, 2, 3, 4]
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_drops_rows_after_the_checkpoint_and_a_torn_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    rec = micro_recipe(steps=6, log_every=1)
    Trainer(rec, run, progress=False, log=_quiet).fit(stop_at=4)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + "\n" + '{"step": 6, "lo')
    Trainer(rec, run, resume=True, progress=False, log=_quiet).fit()
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    assert all(line.endswith("}") for line in (run / "metrics.jsonl").read_text().splitlines())
