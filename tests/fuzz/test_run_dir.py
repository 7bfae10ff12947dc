"""A run directory that nothing can corrupt: one writer, metrics that match checkpoints, no writes
through planted links, no reads of special files, bounded values, one JSON reader, short errors.

Every case checks the outcome's one-line error (or its success) and that nothing outside the run
was touched and nothing inside was lost (byte for byte, by ``digest``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, digest, error_line, zonkey
from zonkey.core.checkpoint.runlock import RunLock

posix = pytest.mark.skipif(os.name == "nt", reason="links, FIFOs and fcntl locks")
OUTSIDE = b"not yours\n"
DEEP = b"[" * 100_000 + b"]" * 100_000


def _outside(tmp_path: Path, name: str = "outside.txt") -> Path:
    f = tmp_path / "elsewhere" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(OUTSIDE)
    return f


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``'s result, failing (not hanging) when it takes longer than ``seconds``."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(call()), daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(seconds + 30)
    assert not t.is_alive(), f"still running after {seconds + 30} s: it hangs"
    assert out, "the call raised"
    assert time.monotonic() - t0 < seconds, f"took {time.monotonic() - t0:.2f} s (limit {seconds} s)"
    return out[0]


def _resume(run: Path, *extra: str) -> list[str]:
    return ["train", run / "recipe.json", "--out", run, "--resume", "--no-progress", *extra]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --- 1. one writer -------------------------------------------------------------------------------

@posix
def test_train_into_a_run_another_writer_holds_names_its_pid(run_copy: Path) -> None:
    before = digest(run_copy)
    with RunLock(run_copy, "zonkey train"):
        zonkey(_resume(run_copy, "--set", "train.steps=6"), expect=1,
               match=rf"PID {os.getpid()}, zonkey train is writing this run")
    assert digest(run_copy) == before


@posix
def test_baseline_into_a_locked_folder_is_refused(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    out = tmp_path / "ar"
    with RunLock(out, "zonkey train"):
        zonkey(["baseline", "ar", fuzz_run.recipe, "--out", out, "--steps", "1"], expect=1,
               match=r"PID \d+, zonkey train is writing this run")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


@posix
def test_ablate_into_a_locked_folder_is_refused(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    out = tmp_path / "grid"
    with RunLock(out, "zonkey ablate"):
        zonkey(["ablate", fuzz_run.recipe, "--swap", "train.lr=0.001,0.002", "--steps", "1", "--seeds", "1",
                "--out", out], expect=1, match=r"PID \d+, zonkey ablate is writing this run")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


# --- 2. metrics that match the checkpoints -------------------------------------------------------

def test_resume_drops_rows_logged_after_the_checkpoint(run_copy: Path) -> None:
    checkpoints = {k: v for k, v in digest(run_copy).items() if k.startswith("checkpoints/")}
    kept = (run_copy / "metrics.jsonl").read_bytes()
    with (run_copy / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 1.0}\n{"step": 6, "loss": 1.0}\n{"step": 7, "lo')
    zonkey(_resume(run_copy), expect=OK)  # resumes step 4 of 4: nothing to train
    assert (run_copy / "metrics.jsonl").read_bytes() == kept
    assert {k: v for k, v in digest(run_copy).items() if k.startswith("checkpoints/")} == checkpoints


def test_a_fresh_train_into_a_dead_runs_folder_refuses_unless_restarted(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    dead = tmp_path / "dead"  # killed before its first checkpoint: a recipe and some metrics
    dead.mkdir()
    for name in ("recipe.json", "metrics.jsonl"):
        shutil.copy(fuzz_run.run / name, dead / name)
    (dead / "notes.txt").write_text("mine")
    before = digest(dead)
    zonkey(["train", fuzz_run.recipe, "--out", dead, "--no-progress"], expect=1,
           match=r"already holds a run that saved no checkpoint .*--restart")
    assert digest(dead) == before
    zonkey(["train", fuzz_run.recipe, "--out", dead, "--no-progress", "--restart", "--set", "train.steps=2"],
           expect=OK)
    assert _steps(dead) == [2] and (dead / "notes.txt").read_text() == "mine"


def test_resume_and_restart_together_are_refused(fuzz_run: FuzzRun, run_copy: Path) -> None:
    before = digest(run_copy)
    zonkey(["train", fuzz_run.recipe, "--out", run_copy, "--resume", "--restart"], expect=2, match="exclude")
    assert digest(run_copy) == before


# --- 3. no writes or deletes through links ---------------------------------------------------------

@posix
def test_a_checkpoints_folder_linked_out_is_never_written_or_pruned(run_copy: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run_copy / "checkpoints", elsewhere)
    (elsewhere / "step-00000001").mkdir()  # an outside folder a prune would delete
    (elsewhere / "step-00000001" / "state.json").write_bytes(OUTSIDE)
    shutil.rmtree(run_copy / "checkpoints")
    (run_copy / "checkpoints").symlink_to(elsewhere)
    outside, before = digest(elsewhere), digest(run_copy)
    zonkey(_resume(run_copy, "--set", "train.steps=6"), expect=1, match=r"checkpoints.* is a symbolic link; refused")
    assert digest(elsewhere) == outside and digest(run_copy) == before


@posix
def test_a_checkpoints_link_planted_during_training_is_refused_at_save_time(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    from tests.helpers import micro_recipe
    from zonkey.core.train.trainer import Trainer
    from zonkey.io import CheckpointError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_bytes(OUTSIDE)
    trainer = Trainer(micro_recipe(steps=2), tmp_path / "run", progress=False, log=lambda s: None)
    (tmp_path / "run" / "checkpoints").symlink_to(elsewhere)  # planted after the start checks
    with pytest.raises(CheckpointError, match="is a symbolic link; refused"):
        trainer.fit()
    assert digest(elsewhere) == {"keep": digest(elsewhere)["keep"]} and (elsewhere / "keep").read_bytes() == OUTSIDE


@posix
def test_baseline_never_truncates_a_metrics_file_linked_out(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    out = tmp_path / "ar"
    out.mkdir()
    outside = _outside(tmp_path)
    (out / "metrics.jsonl").symlink_to(outside)
    zonkey(["baseline", "ar", fuzz_run.recipe, "--out", out, "--steps", "1"], expect=1,
           match=r"metrics\.jsonl.* is a symbolic link; refused")
    assert outside.read_bytes() == OUTSIDE


@posix
@pytest.mark.parametrize("base", ["/etc/passwd", "../elsewhere/outside.txt"])
def test_base_in_a_runs_recipe_json_is_confined(run_copy: Path, tmp_path: Path, base: str) -> None:
    _outside(tmp_path)
    data = json.loads((run_copy / "recipe.json").read_text())
    (run_copy / "recipe.json").write_text(json.dumps({**data, "base": base}))
    before = digest(run_copy)
    zonkey(["split", run_copy, "hello"], expect=1, match=r"base: .*(resolves outside|no file inside)")
    zonkey(_resume(run_copy), expect=1, match=r"base: .*resolves outside")
    assert digest(run_copy) == before


# --- 4. only regular files are read ----------------------------------------------------------------

@posix
def test_a_fifo_as_metrics_is_refused_within_a_second(run_copy: Path, tmp_path: Path) -> None:
    (run_copy / "metrics.jsonl").unlink()
    os.mkfifo(run_copy / "metrics.jsonl")
    before = digest(run_copy)
    for args in (_resume(run_copy), ["curves", run_copy], ["plot", run_copy, "--out", tmp_path / "figs"]):
        res = _within(1.0, lambda args=args: zonkey(args, expect=1, match=r"metrics\.jsonl.*(FIFO|regular file)"))
        assert "metrics.jsonl" in error_line(res)
    assert digest(run_copy) == before


@posix
def test_a_fifo_named_txt_in_a_data_folder_is_refused_within_a_second(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("some text " * 50)
    os.mkfifo(data / "b.txt")
    _within(1.0, lambda: zonkey(["train", fuzz_run.recipe, "--out", tmp_path / "run", "--no-progress", "--set",
                                 f"data.source={data}"], expect=1, match=r"b\.txt is a FIFO, not a regular file"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@posix
def test_a_fifo_as_infill_items_is_refused_within_a_second(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "items.jsonl")
    _within(1.0, lambda: zonkey(["eval", fuzz_run.run, "--infill-items", tmp_path / "items.jsonl", "--max-batches",
                                 "1", "--samples", "0", "--infill", "0"], expect=1, match="FIFO"))


# --- 5. every value bounded ------------------------------------------------------------------------

@pytest.mark.parametrize(("override", "match"), [
    ("sample.steps=10000000", r"sample\.steps: 10,000,000 steps would take about 11 h .*the limit is 100,000"),
    ("sample.infill_steps=10000000", r"sample\.infill_steps: 10,000,000 steps would take"),
    ("sample.level_steps=10000000", r"sample\.level_steps: 10,000,000 steps would take"),
    ("sample.infill_gap=[1,100000000]", r"sample\.infill_gap: \[1, 100,000,000\] would draw .* limit is 65,536"),
    ("sample.infill_gap_bytes=[5,2]", r"sample\.infill_gap_bytes: must be \[lo, hi\]"),
    ("data.source=", r"data\.source: is empty"),
    ("data.source=  ", r"data\.source: is empty"),
    ("train.steps=1000000000000", r"train\.steps: .*less than or equal to 100000000"),
    ("train.keep_last=0", r"train\.keep_last"),
])
def test_a_recipe_value_past_its_range_is_one_error(fuzz_run: FuzzRun, tmp_path: Path, override: str,
                                                    match: str) -> None:
    zonkey(["validate", fuzz_run.recipe, "--set", override], expect=1, match=match)
    zonkey(["train", fuzz_run.recipe, "--out", tmp_path / "run", "--set", override], expect=1, match=match)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("args", "match"), [
    (["eval", "{run}", "--max-batches", "0"], r"--max-batches"),
    (["eval", "{run}", "--max-batches", "-1"], r"--max-batches"),
    (["eval", "{run}", "--steps", "-3"], r"--steps.*must be at least 1"),
    (["eval", "{run}", "--steps", "10000000"], r"--steps.*10,000,000 steps would take about 11 h"),
    (["reconstruct", "{run}", "hello", "--steps", "-3"], r"--steps.*must be at least 1"),
    (["diagnose", "probe-level1", "{run}", "--lr", "-1"], r"--lr"),
    (["diagnose", "probe-level1", "{run}", "--lr", "0"], r"--lr"),
])
def test_a_flag_past_its_range_is_one_error(fuzz_run: FuzzRun, args: list[str], match: str) -> None:
    zonkey([str(fuzz_run.run) if a == "{run}" else a for a in args], expect=2, match=match)


# --- 6. one JSON reader, one text check ----------------------------------------------------------

@pytest.mark.parametrize("target", ["recipe.json", "checkpoints/step-00000004/state.json"])
def test_deeply_nested_json_in_a_run_is_one_line(run_copy: Path, target: str) -> None:
    (run_copy / target).write_bytes(DEEP)
    before = digest(run_copy)
    res = zonkey(["split", run_copy, "hello"], expect=1, match=r"nested deeper than 100 levels")
    assert target.rsplit("/", 1)[-1] in error_line(res)
    assert digest(run_copy) == before


def test_deeply_nested_latest_is_skipped_not_a_crash(run_copy: Path) -> None:
    (run_copy / "LATEST").write_bytes(DEEP)
    before = digest(run_copy)
    zonkey(["split", run_copy, "hello"], expect=OK)  # the newest step folder stands in for it
    assert digest(run_copy) == before


@pytest.mark.parametrize(("line", "match"), [
    (DEEP, r"metrics\.jsonl:2: JSON nested deeper than 100"),
    (b'{"step": 3, "\\ud800": 1}', r"metrics\.jsonl:2: not valid text: a lone surrogate \(U\+D800\)"),
    (b"5", r"metrics\.jsonl:2: not a JSON object"),
    (b'{"loss": 1.0}', r"metrics\.jsonl:2: 'step' must be a non-negative integer, got None"),
    (b'{"step": "abc"}', r"metrics\.jsonl:2: 'step' must be a non-negative integer, got 'abc'"),
])
@pytest.mark.parametrize("command", ["curves", "plot"])
def test_a_bad_metrics_row_is_one_line(run_copy: Path, tmp_path: Path, line: bytes, match: str,
                                       command: str) -> None:
    first = (run_copy / "metrics.jsonl").read_bytes().splitlines(keepends=True)[0]
    (run_copy / "metrics.jsonl").write_bytes(first + line + b"\n")
    before = digest(run_copy)
    args = [command, run_copy] + (["--out", str(tmp_path / "figs")] if command == "plot" else [])
    zonkey(args, expect=1, match=match)
    assert digest(run_copy) == before


@pytest.mark.parametrize(("content", "match"), [
    (DEEP, r"items\.jsonl:1: JSON nested deeper than 100"),
    (b'{"prefix": "\\ud800", "suffix": "b", "answer": "c"}', r"items\.jsonl:1: not valid text: a lone surrogate"),
])
def test_bad_infill_items_are_one_line(fuzz_run: FuzzRun, tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "items.jsonl").write_bytes(content + b"\n")
    zonkey(["eval", fuzz_run.run, "--infill-items", tmp_path / "items.jsonl", "--max-batches", "1", "--samples", "0",
            "--infill", "0"], expect=1, match=match)


@pytest.mark.parametrize("text", ["\ud800", "ab\udcffcd"])
@pytest.mark.parametrize("command", ["split", "reconstruct"])
def test_text_that_is_not_unicode_on_the_command_line_is_one_line(fuzz_run: FuzzRun, text: str, command: str) -> None:
    zonkey([command, fuzz_run.run, text], expect=2, match=r"zonkey: argument 3: not valid text")


def test_ablate_into_a_file_is_one_line(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    (tmp_path / "grid").write_bytes(OUTSIDE)
    zonkey(["ablate", fuzz_run.recipe, "--swap", "train.lr=0.001,0.002", "--steps", "1", "--seeds", "1",
            "--out", tmp_path / "grid"], expect={1, 2})
    assert (tmp_path / "grid").read_bytes() == OUTSIDE


# --- 7. short errors that name the right cause -------------------------------------------------------

def test_a_recipe_json_with_200000_unknown_keys_gives_about_20_lines(run_copy: Path) -> None:
    data = json.loads((run_copy / "recipe.json").read_text())
    data.update({f"junk{i}": i for i in range(200_000)})
    (run_copy / "recipe.json").write_text(json.dumps(data))
    res = zonkey(["split", run_copy, "hello"], expect=1, match=r"junk0: unknown key")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) <= 22 and lines[-1].endswith("and 199,980 more"), lines[-3:]


@posix
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_weights_are_reported_as_unreadable_not_corrupt(run_copy: Path) -> None:
    weights = run_copy / "checkpoints" / "step-00000004" / "ema.safetensors"
    weights.chmod(0)
    try:
        zonkey(["split", run_copy, "hello", "--no-verify"], expect=1, match=r"cannot read .*Permission denied")
    finally:
        weights.chmod(0o644)
