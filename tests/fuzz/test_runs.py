"""Hostile run directories and checkpoints, through the commands that load a run.

Every damaged run is a private copy; the case checks the one-line error (or the success) and that
the command left the damaged run as it found it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, digest, zonkey

STEP = "checkpoints/step-00000004"

# the cheapest call of each command that loads a run (a few milliseconds on the micro run)
LOADERS = {
    "split": ["split", "{run}", "hello world"],
    "reconstruct": ["reconstruct", "{run}", "hello", "--steps", "1"],
    "sample": ["sample", "{run}", "-n", "1", "--steps", "1"],
    "infill": ["infill", "{run}", "a ___ b", "--steps", "1", "--gap", "1"],
    "eval": ["eval", "{run}", "--max-batches", "1", "--samples", "0", "--infill", "0"],
    "byte-errors": ["diagnose", "byte-errors", "{run}", "--batches", "1"],
    "denoise": ["diagnose", "denoise", "{run}", "--max-batches", "1", "--samples", "0", "--sigmas", "0,1",
                "--steps", "1"],
}


def load_cmd(name: str, run: Path, *extra: str) -> list[str]:
    return [str(run) if a == "{run}" else a for a in LOADERS[name]] + list(extra)


def flip_bytes(path: Path, count: int, start: int | None = None) -> None:
    """Invert ``count`` bytes of the tensor data (past the safetensors header), in place."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    first = header if start is None else start
    for i in range(first, min(first + count, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("command", sorted(LOADERS))
def test_every_loader_works_on_the_shared_run(fuzz_run: FuzzRun, command: str) -> None:
    zonkey(load_cmd(command, fuzz_run.run), expect=OK)


@pytest.mark.parametrize("command", sorted(LOADERS))
def test_flipped_bytes_in_the_ema_weights_are_found(run_copy: Path, command: str) -> None:
    """2,000 inverted bytes inside ema.safetensors: sizes agree, the sha256 does not."""
    flip_bytes(run_copy / STEP / "ema.safetensors", 2000)
    before = digest(run_copy)
    zonkey(load_cmd(command, run_copy), expect=1, match=r"ema\.safetensors: content does not match the sha256")
    assert digest(run_copy) == before


def test_no_verify_loads_a_modified_checkpoint(run_copy: Path) -> None:
    flip_bytes(run_copy / STEP / "ema.safetensors", 4)
    zonkey(["split", run_copy, "hello", "--no-verify"], expect=OK)
    zonkey(["train", run_copy / "recipe.json", "--out", run_copy, "--resume", "--no-progress"], expect=1,
           match="sha256")


def test_modified_optimizer_state_stops_a_resume_not_inference(run_copy: Path) -> None:
    flip_bytes(run_copy / STEP / "optimizer.safetensors", 64)
    zonkey(["split", run_copy, "hello"], expect=OK)  # inference never reads the optimizer
    zonkey(["train", run_copy / "recipe.json", "--out", run_copy, "--resume", "--no-progress"], expect=1,
           match=r"optimizer\.safetensors: content does not match")


def test_a_checkpoint_saved_before_hashes_loads(run_copy: Path) -> None:
    state = run_copy / STEP / "state.json"
    info = json.loads(state.read_text())
    for entry in info["files"].values():
        del entry["sha256"]
    state.write_text(json.dumps(info))
    zonkey(["split", run_copy, "hello"], expect=OK)


def test_latest_pointing_outside_the_run_is_refused(run_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    (run_copy / "checkpoints").rename(outside)  # a complete checkpoint, just not inside the run
    (run_copy / "LATEST").write_text(json.dumps({"checkpoint": "../elsewhere/step-00000004"}))
    zonkey(["split", run_copy, "hello"], expect=1, match=r"LATEST: .*resolves outside")
    (run_copy / "LATEST").write_text(json.dumps({"checkpoint": "../../../etc"}))
    zonkey(["sample", run_copy, "-n", "1"], expect=1, match=r"LATEST: .*resolves outside")
    (run_copy / "LATEST").write_text(str(outside / "step-00000004"))  # absolute, plain text
    zonkey(["split", run_copy, "hello"], expect=1, match=r"LATEST: .*resolves outside")


@pytest.mark.skipif(os.name == "nt", reason="symbolic links")
def test_links_out_of_the_run_are_refused(run_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.safetensors"
    (run_copy / STEP / "ema.safetensors").rename(outside)
    (run_copy / STEP / "ema.safetensors").symlink_to(outside)
    zonkey(["split", run_copy, "hello"], expect=1, match=r"ema\.safetensors resolves outside")
    (run_copy / STEP / "ema.safetensors").unlink()
    outside.rename(run_copy / STEP / "ema.safetensors")
    recipe = tmp_path / "recipe.json"
    (run_copy / "recipe.json").rename(recipe)
    (run_copy / "recipe.json").symlink_to(recipe)
    zonkey(["split", run_copy, "hello"], expect=1, match=r"recipe\.json resolves outside")


def test_state_json_listing_a_file_outside(run_copy: Path) -> None:
    state = run_copy / STEP / "state.json"
    info = json.loads(state.read_text())
    info["files"]["../../../recipe.json"] = {"bytes": 1}
    state.write_text(json.dumps(info))
    zonkey(["split", run_copy, "hello"], expect=1, match=r"state\.json: .*resolves outside")


DAMAGE = {
    "no-recipe-json": lambda run: (run / "recipe.json").unlink(),
    "recipe-json-garbage": lambda run: (run / "recipe.json").write_bytes(b"\x00\xff{"),
    "recipe-json-a-list": lambda run: (run / "recipe.json").write_text("[1, 2]"),
    "recipe-json-newer-schema": lambda run: _edit_json(run / "recipe.json", schema_version=999),
    "recipe-json-invalid": lambda run: _edit_json(run / "recipe.json", train={"steps": -5}),
    "recipe-json-other-width": lambda run: _edit_json(run / "recipe.json", model=_wider(run)),
    "state-json-garbage": lambda run: (run / STEP / "state.json").write_text("{oops"),
    "state-json-no-files": lambda run: (run / STEP / "state.json").write_text('{"step": 4}'),
    "state-json-newer-format": lambda run: _edit_json(run / STEP / "state.json", format_version=99),
    "model-truncated": lambda run: _truncate(run / STEP / "model.safetensors"),
    "model-missing": lambda run: (run / STEP / "model.safetensors").unlink(),
    "model-header-garbage": lambda run: flip_bytes(run / STEP / "model.safetensors", 16, start=0),
    "model-a-folder": lambda run: _replace_by_folder(run / STEP / "model.safetensors"),
    "latest-garbage-no-checkpoints": lambda run: _no_checkpoints(run, b"\xff\xfe"),
    "everything-gone": lambda run: _no_checkpoints(run, None, weights=False),
    "run-is-a-file": lambda run: _replace_by_file(run),
}


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _wider(run: Path) -> dict:
    model = json.loads((run / "recipe.json").read_text())["model"]
    model["levels"][0]["d_model"] = 32
    return model


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _replace_by_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _replace_by_file(run: Path) -> None:
    import shutil

    shutil.rmtree(run)
    run.write_text("not a run")


def _no_checkpoints(run: Path, latest: bytes | None, weights: bool = True) -> None:
    import shutil

    shutil.rmtree(run / "checkpoints")
    (run / "LATEST").unlink()
    if latest is not None:
        (run / "LATEST").write_bytes(latest)
    if not weights:
        (run / "model.safetensors").unlink()
        (run / "ema.safetensors").unlink()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_runs_are_one_line_errors(run_copy: Path, damage: str) -> None:
    DAMAGE[damage](run_copy)
    before = digest(run_copy) if run_copy.is_dir() else run_copy.read_bytes()
    # a LATEST that cannot be read is skipped: the weights beside it still load
    expect = OK if damage == "latest-garbage-no-checkpoints" else 1
    zonkey(["split", run_copy, "hello"], expect=expect, match=str(run_copy.name))
    zonkey(["sample", run_copy, "-n", "1", "--steps", "1"], expect=expect, match=str(run_copy.name))
    assert (digest(run_copy) if run_copy.is_dir() else run_copy.read_bytes()) == before


def test_a_missing_run(tmp_path: Path) -> None:
    zonkey(["split", tmp_path / "nope", "hello"], expect={1, 2}, match="nope")
    zonkey(["curves", tmp_path / "nope"], expect={1, 2}, match="nope")


def test_a_step_directory_is_a_run(fuzz_run: FuzzRun) -> None:
    zonkey(["split", fuzz_run.run / "checkpoints" / "step-00000002", "hello"], expect=OK)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(["model.safetensors", "ema.safetensors", "state.json"]),
       offset=st.floats(0, 1), length=st.integers(1, 64), verify=st.booleans())
def test_any_damage_to_a_checkpoint_file(fuzz_run: FuzzRun, tmp_path_factory: pytest.TempPathFactory, file: str,
                                         offset: float, length: int, verify: bool) -> None:
    """Bytes inverted anywhere in a file: refused with one line, or (unverified, data bytes) loaded."""
    import shutil

    run = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(fuzz_run.run, run)
    path = run / STEP / file
    size = path.stat().st_size
    flip_bytes(path, length, start=int(offset * (size - 1)))
    res = zonkey(["split", run, "hello"] + ([] if verify else ["--no-verify"]))
    if verify and file != "state.json":
        assert res.exit_code == 1


def test_curves_on_damaged_metrics(run_copy: Path) -> None:
    (run_copy / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{not json\n')
    zonkey(["curves", run_copy], expect=1, match=r"metrics\.jsonl:2")
    (run_copy / "metrics.jsonl").write_bytes(b"\xff\xfe\n")
    zonkey(["curves", run_copy], expect=1, match=r"metrics\.jsonl")
    (run_copy / "metrics.jsonl").write_text("")
    zonkey(["curves", run_copy], expect=1, match="empty")
    zonkey(["curves", run_copy, "--keys", "nope"], expect=1)
