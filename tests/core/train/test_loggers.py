"""``train.loggers``: TensorBoard, W&B (a recording fake, and offline where installed), ramps in the log line."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import micro_recipe
from zonkey.core.recipe import RecipeError
from zonkey.core.train.loggers import format_row, numeric
from zonkey.core.train.trainer import Trainer
from zonkey.errors import TrainingError

QUIET = {"progress": False, "log": lambda s: None}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_gets_every_logged_row_and_the_held_out_figures(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed (pip install -e .[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    Trainer(micro_recipe(steps=4, log_every=2, eval_every=4, loggers=["jsonl", "tensorboard"]), run, **QUIET).fit()
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "l0.token", "grad_norm", "val.loss", "val.l0.recon_acc", "val.l0.word_f1"} <= tags
    assert [e.step for e in acc.Scalars("loss")] == [2, 4]
    assert [e.step for e in acc.Scalars("val.loss")] == [4]
    want = {r["step"]: r["loss"] for r in _rows(run)}
    assert [pytest.approx(want[e.step]) for e in acc.Scalars("loss")] == [e.value for e in acc.Scalars("loss")]


def test_jsonl_is_written_even_when_not_listed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    Trainer(micro_recipe(steps=2, loggers=["tensorboard"]), run, **QUIET).fit()
    assert [r["step"] for r in _rows(run)] == [2] and any((run / "tensorboard").iterdir())


def test_a_logger_whose_package_is_missing_stops_the_run_before_its_first_step(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    t = Trainer(micro_recipe(steps=2, loggers=["jsonl", "tensorboard"]), tmp_path / "run", **QUIET)
    with pytest.raises(TrainingError, match=r"tensorboard.*not installed.*pip install -e \.\[tensorboard\]") as e:
        t.fit()
    assert "\n" not in str(e.value) and t.step == 0


class _FakeRun:
    def __init__(self, calls: list[tuple[str, Any]]) -> None:
        self.calls = calls

    def log(self, data: dict[str, float], step: int) -> None:
        self.calls.append(("log", (step, data)))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def test_wandb_gets_the_recipe_once_every_row_and_a_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any]] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: (calls.append(("init", kw)), _FakeRun(calls))[1]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    Trainer(micro_recipe(steps=4, log_every=2, eval_every=4, loggers=["wandb"]), run, **QUIET).fit()
    assert [c[0] for c in calls] == ["init", "log", "log", "finish"]
    init = calls[0][1]
    assert init["name"] == "run" and init["dir"] == str(run) and init["config"]["train"]["steps"] == 4
    (s1, first), (s2, second) = calls[1][1], calls[2][1]
    assert (s1, s2) == (2, 4) and "step" not in first and "val.loss" in second and "val.loss" not in first
    assert all(isinstance(v, float) for v in second.values())
    # a resumed run logs into the same W&B run
    Trainer(micro_recipe(steps=6, log_every=2, loggers=["wandb"]), run, resume=True, **QUIET).fit()
    assert [c[1]["id"] for c in calls if c[0] == "init"] == [init["id"]] * 2


def test_wandb_offline_writes_the_run_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason="wandb is not installed (pip install -e .[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    Trainer(micro_recipe(steps=2, eval_every=2, loggers=["jsonl", "wandb"]), run, **QUIET).fit()
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1 and b"val.loss" in files[0].read_bytes()


def test_the_log_line_names_the_ramping_terms(tmp_path: Path) -> None:
    lines: list[str] = []
    ramps = [{"term": "l0.diffusion", "start": 2, "end": 4}]
    Trainer(micro_recipe(steps=6, log_every=1, curriculum=ramps), tmp_path / "run", progress=False,
            log=lines.append).fit()
    steps = [ln for ln in lines if ln.startswith("step ")]
    ramping = [ln.split()[1] for ln in steps if "ramping l0.diffusion" in ln]
    assert ramping == ["3/6", "4/6"]  # the steps whose weights were 0 and 0.5 (steps 2 and 3, 0-based)
    assert "ramping l0.diffusion x0.50" in steps[3]


def test_format_row_and_numeric() -> None:
    row = {"step": 5, "loss": 1.0, "bytes_per_s": 10.0, "val.loss": 2.0, "val.l0.recon_acc": 0.5, "flag": True,
           "none": None, "nan": float("nan")}
    assert numeric(row) == {"loss": 1.0, "bytes_per_s": 10.0, "val.loss": 2.0, "val.l0.recon_acc": 0.5}
    line = format_row(row, 10, {"l1": 0.25})
    assert "held-out (val.) loss=2.0000 l0.recon_acc=0.500" in line and line.endswith("ramping l1 x0.25")


@pytest.mark.parametrize("loggers, match", [(["jsonl", "jsonl"], "each logger at most once"),
                                            (["mlflow"], "train.loggers")])
def test_bad_loggers_are_recipe_errors(loggers: list[str], match: str) -> None:
    with pytest.raises(RecipeError, match=match):
        micro_recipe(loggers=loggers)
