"""Hostile inputs to the commands that write or read beside a run: plot, ablate, baseline, and the
judge that ``eval`` caches in a run. Every file these read out of a run directory must stay in it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, digest, zonkey

links = pytest.mark.skipif(os.name == "nt", reason="symbolic links")
OUTSIDE = b'{"kind": "not yours"}\n'


def _outside(tmp_path: Path, name: str = "outside.json") -> Path:
    """A file outside every run, whose bytes each case checks are unchanged afterwards."""
    f = tmp_path / "elsewhere" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(OUTSIDE)
    return f


def _link(at: Path, target: Path) -> None:
    if at.exists() or at.is_symlink():
        at.unlink()
    at.symlink_to(target)


# --- the judge cached in a run ---------------------------------------------------------------------

GEN_EVAL = ["--max-batches", "1", "--samples", "1", "--infill", "0", "--throughput", "0"]


@links
@pytest.mark.parametrize("which", ["json", "safetensors"])
def test_a_judge_cache_linked_out_of_the_run_is_refused(run_copy: Path, tmp_path: Path, which: str) -> None:
    zonkey(["eval", run_copy, *GEN_EVAL], expect=OK)  # trains the judge and caches it in the run
    cached = sorted(run_copy.glob(f"judge-*.{which}"))
    assert len(cached) == 1, sorted(p.name for p in run_copy.iterdir())
    outside = _outside(tmp_path, f"judge.{which}")
    _link(cached[0], outside)
    before = digest(run_copy)
    zonkey(["eval", run_copy, *GEN_EVAL], expect=1, match=rf"judge cache: .*judge-\w+\.{which} resolves outside")
    assert outside.read_bytes() == OUTSIDE and digest(run_copy) == before


@links
def test_the_judge_cache_never_follows_a_link_out(tmp_path: Path) -> None:
    from zonkey.core.evaluate.judge import corpus_fingerprint, load_or_train
    from zonkey.io import CheckpointError

    docs = [b"the cat sat on the mat", b"a dog ran"]
    cache = tmp_path / "run"
    cache.mkdir()
    judge, cached = load_or_train(docs, cache, order=3)
    assert not cached and load_or_train(docs, cache, order=3)[1]  # cached inside: read back
    name = f"judge-{corpus_fingerprint(docs, 3)}.safetensors"
    outside = _outside(tmp_path, name)
    _link(cache / name, outside)
    with pytest.raises(CheckpointError, match=r"judge cache: .* resolves outside"):
        load_or_train(docs, cache, order=3)
    assert outside.read_bytes() == OUTSIDE
    linked = tmp_path / "linked-run"  # the directory given may itself be a link: that is the user's choice
    linked.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / name).unlink()
    assert not load_or_train(docs, linked, order=3)[1]
    assert load_or_train(docs, linked, order=3)[1]


def test_a_step_directory_outside_a_checkpoints_folder_is_its_own_run(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    """Nothing is read from, or cached in, the folder above a stray step directory."""
    from zonkey.core.checkpoint import run_dir_of
    from zonkey.core.evaluate.generation import run_directory

    stray = tmp_path / "stray" / "step-00000004"
    shutil.copytree(fuzz_run.run / "checkpoints" / "step-00000004", stray)
    (tmp_path / "recipe.json").write_bytes((fuzz_run.run / "recipe.json").read_bytes())  # two levels up
    assert run_dir_of(stray) == stray and run_directory(stray) == stray
    zonkey(["split", stray, "hello"], expect=1, match=r"missing recipe\.json in .*step-00000004")
    step = fuzz_run.run / "checkpoints" / "step-00000004"
    assert run_dir_of(step) == fuzz_run.run
    zonkey(["split", step, "hello"], expect=OK)


@links
def test_a_resume_never_appends_to_a_metrics_file_linked_out(run_copy: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path, "metrics.jsonl")
    _link(run_copy / "metrics.jsonl", outside)
    before = digest(run_copy)
    zonkey(["train", run_copy / "recipe.json", "--out", run_copy, "--resume", "--no-progress",
            "--set", "train.steps=6"], expect=1, match=r"metrics\.jsonl is a symbolic link; refused")
    assert outside.read_bytes() == OUTSIDE and digest(run_copy) == before


# --- plot ------------------------------------------------------------------------------------------

def test_plot_of_the_shared_run(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    zonkey(["plot", fuzz_run.run, "--out", tmp_path / "figs", "--text", "hello world"], expect=OK)
    assert (tmp_path / "figs" / "curves.png").is_file()


@links
@pytest.mark.parametrize("name", ["metrics.jsonl", "ablation.json"])
def test_plot_refuses_a_file_linked_out_of_the_folder(run_copy: Path, tmp_path: Path, name: str) -> None:
    outside = _outside(tmp_path)
    _link(run_copy / name, outside)
    zonkey(["plot", run_copy, "--out", tmp_path / "figs"], expect=1, match=rf"{name} resolves outside")
    assert outside.read_bytes() == OUTSIDE and not (tmp_path / "figs").exists()


@pytest.mark.parametrize("damage, what", [
    (lambda r: (r / "metrics.jsonl").write_bytes(b'{"step": 1}\n{oops\n'), r"metrics\.jsonl:2: not a JSON line"),
    (lambda r: (r / "metrics.jsonl").write_bytes(b"[1, 2]\n"), r"metrics\.jsonl:1: not a JSON object"),
    (lambda r: (r / "metrics.jsonl").write_bytes(b""), r"metrics\.jsonl is empty"),
    (lambda r: (r / "ablation.json").write_bytes(b"{oops"), r"ablation\.json"),
    (lambda r: (r / "ablation.json").write_bytes(b'{"variants": 5}'), r"ablation\.json"),
], ids=["metrics-bad-line", "metrics-a-list", "metrics-empty", "ablation-garbage", "ablation-wrong-shape"])
def test_plot_of_damaged_files_is_one_line(run_copy: Path, tmp_path: Path, damage, what: str) -> None:
    damage(run_copy)
    zonkey(["plot", run_copy, "--out", tmp_path / "figs"], expect=1, match=what)


def test_plot_into_a_file(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    zonkey(["plot", fuzz_run.run, "--out", tmp_path / "taken"], expect={1, 2}, match="taken")


# --- ablate ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, code, what", [
    ([], 2, "nothing to ablate"),
    (["--swap", "nokey"], 2, "KEY=VALUE"),
    (["--swap", "train.nope=1,2"], 1, "nope"),
    (["--swap", "model.levels.0.splitter=zzz"], 1, "unknown component"),
    (["--swap", "train.lr=0.1", "--seeds", "0"], 2, "seeds"),
    (["--swap", "train.lr=0.1", "--jobs", "0"], 2, "jobs"),
    (["--swap", "train.lr=0.1", "--steps", "-1"], 2, "steps"),
    (["--swap", "train.lr=0.1", "--noise", "typos=x"], 2, "not a number"),
    (["--swap", "train.lr=0.1", "--baseline", "nope"], 2, "nope"),
], ids=["no-swap", "swap-no-value", "swap-unknown-key", "swap-unknown-component", "seeds-0", "jobs-0",
        "steps-negative", "noise-not-a-number", "unknown-baseline"])
def test_ablate_bad_input_is_refused_before_training(fuzz_run: FuzzRun, tmp_path: Path, args: list[str], code: int,
                                                      what: str) -> None:
    zonkey(["ablate", fuzz_run.recipe, *args, "--out", tmp_path / "grid"], expect=code, match=what)
    assert not list((tmp_path / "grid").rglob("*.safetensors")) if (tmp_path / "grid").exists() else True


def test_ablate_takes_a_runs_recipe_json(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    """The run's recipe.json loads as the grid's recipe: the swap is what is refused, naming it."""
    zonkey(["ablate", fuzz_run.run / "recipe.json", "--swap", "model.levels.0.splitter=zzz", "--out", tmp_path / "g"],
           expect=1, match=r"recipe\.json: model\.levels\.0\.splitter: unknown component 'zzz'")


def _cell(fuzz_run: FuzzRun, run_dir: Path):
    from zonkey.ablate.runner import Cell

    return Cell("v", 0, str(run_dir), str(fuzz_run.recipe), [], None, "f" * 16,
                {"max_batches": 1, "samples": 0, "infill": 0, "steps_table": False})


@links
@pytest.mark.parametrize("name", ["eval.json", "train.json", "metrics.jsonl"])
def test_an_ablation_cell_never_reads_a_file_linked_out_of_its_run(fuzz_run: FuzzRun, tmp_path: Path,
                                                                   name: str) -> None:
    """A link out of a cell's run fails that cell (reported, the grid goes on), before any training."""
    from zonkey.ablate.runner import run_cell

    run = tmp_path / "cell"
    shutil.copytree(fuzz_run.run, run)
    outside = _outside(tmp_path)
    if name == "metrics.jsonl":  # read back when the cell is finished: an eval.json of this fingerprint
        (run / "eval.json").write_text('{"fingerprint": "ffffffffffffffff", "train": {}, "eval": {}}')
    _link(run / name, outside)
    before = digest(run)
    res = run_cell(_cell(fuzz_run, run), log=lambda s: None)
    assert res["status"] == "failed" and f"{name} resolves outside" in res["error"], res
    assert outside.read_bytes() == OUTSIDE and digest(run) == before


@links
def test_an_ablation_cell_never_reads_a_step_directory_linked_out(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    from zonkey.ablate.runner import run_cell

    run = tmp_path / "cell"
    shutil.copytree(fuzz_run.run, run)
    (run / "LATEST").unlink()
    step = run / "checkpoints" / "step-00000004"
    elsewhere = tmp_path / "elsewhere-step"
    step.rename(elsewhere)
    step.symlink_to(elsewhere, target_is_directory=True)
    res = run_cell(_cell(fuzz_run, run), log=lambda s: None)
    # refused where the cell first reads the step (its state.json), not later by the trainer
    assert res["status"] == "failed" and "state.json resolves outside" in res["error"], res
    assert (elsewhere / "state.json").is_file()


# --- baseline --------------------------------------------------------------------------------------

AR_SMALL = ["--d-model", "16", "--layers", "1", "--heads", "2"]


@pytest.mark.parametrize("args, code, what", [
    (["--d-model", "18", "--heads", "4"], 2, "divisible"),
    (["--d-model", "7"], 2, "d-model"),
    (["--heads", "0"], 2, "heads"),
    (["--layers", "1000"], 2, "layers"),
    ([*AR_SMALL, "--steps", "0"], 2, "steps"),
    ([*AR_SMALL, "--seconds", "-1"], 2, "seconds"),
    ([*AR_SMALL, "--set", "train.lr=abc"], 1, "lr"),
], ids=["heads-not-dividing", "d-model-small", "heads-0", "layers-huge", "steps-0", "seconds-negative", "set-bad"])
def test_baseline_ar_bad_input_is_one_line(fuzz_run: FuzzRun, tmp_path: Path, args: list[str], code: int,
                                           what: str) -> None:
    zonkey(["baseline", "ar", fuzz_run.recipe, "--out", tmp_path / "ar", *args], expect=code, match=what)
    assert not (tmp_path / "ar" / "LATEST").exists()


def test_baseline_ar_takes_a_runs_recipe_json(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    zonkey(["baseline", "ar", fuzz_run.run / "recipe.json", "--out", tmp_path / "ar", "--steps", "1", *AR_SMALL],
           expect=OK)
    assert (tmp_path / "ar" / "LATEST").is_file()


def test_baseline_ar_into_a_diffusion_run_changes_nothing(fuzz_run: FuzzRun) -> None:
    zonkey(["baseline", "ar", fuzz_run.recipe, "--out", fuzz_run.run, *AR_SMALL], expect=1, match="already holds a run")


def test_baseline_ar_resume_of_an_empty_folder(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    zonkey(["baseline", "ar", fuzz_run.recipe, "--out", tmp_path / "empty", "--resume", *AR_SMALL], expect=1,
           match=r"baseline\.json")


def test_baseline_sample_of_a_diffusion_run(fuzz_run: FuzzRun) -> None:
    zonkey(["baseline", "sample", fuzz_run.run, "-n", "1"], expect=1, match=r"baseline\.json: missing file")


@pytest.mark.parametrize("content, what", [
    (b"{oops", r"baseline\.json"),
    (b"[1]", r"baseline\.json"),
    (b'{"format_version": 999}', r"baseline\.json: format_version 999"),
    (b'{"name": 5}', r"baseline\.json: \w+"),
], ids=["garbage", "a-list", "newer-format", "invalid"])
def test_baseline_json_damaged(tmp_path: Path, content: bytes, what: str) -> None:
    (tmp_path / "ar").mkdir()
    (tmp_path / "ar" / "baseline.json").write_bytes(content)
    zonkey(["baseline", "sample", tmp_path / "ar", "-n", "1"], expect=1, match=what)


@links
def test_a_baseline_json_linked_out_of_the_run_is_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    (tmp_path / "ar").mkdir()
    (tmp_path / "ar" / "baseline.json").symlink_to(outside)
    for cmd in (["baseline", "sample", tmp_path / "ar", "-n", "1"], ["eval", tmp_path / "ar"]):
        zonkey(cmd, expect=1, match=r"baseline\.json resolves outside")
    assert hashlib.sha256(outside.read_bytes()).digest() == hashlib.sha256(OUTSIDE).digest()
