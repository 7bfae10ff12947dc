"""Integrity of a checkpoint: a SHA-256 per file in state.json, checked on load; paths kept inside the run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from tests.core.checkpoint.helpers import Net, assert_same_tensors, new_ema, save
from zonkey.core.checkpoint import CheckpointError, find_latest_checkpoint, load_checkpoint
from zonkey.io import inside, sha256_file


def _flip(path: Path, at_end: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[-at_end] ^= 0x01  # one bit of the last tensor's data: the header still parses
    path.write_bytes(bytes(data))


def test_state_json_records_the_sha256_of_every_file(tmp_path: Path) -> None:
    model = Net()
    out = save(tmp_path, 3, model, opt=torch.optim.AdamW(model.parameters()), ema=new_ema(model))
    files = json.loads((out / "state.json").read_text())["files"]
    assert sorted(files) == ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng.safetensors"]
    for name, entry in files.items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest() == sha256_file(out / name)
        assert entry["bytes"] == (out / name).stat().st_size


@pytest.mark.parametrize("name", ["model.safetensors", "ema.safetensors", "optimizer.safetensors",
                                  "rng.safetensors"])
def test_one_flipped_bit_is_found_and_no_verify_skips_the_check(tmp_path: Path, name: str) -> None:
    model = Net()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.tensor([[1, 2]])).sum().backward()
    opt.step()  # the optimizer has state tensors to damage
    out = save(tmp_path, 1, model, opt=opt, ema=new_ema(model))
    _flip(out / name)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    msg = str(info.value)
    assert msg.startswith(str(out / name)) and "sha256" in msg and "\n" not in msg
    assert load_checkpoint(tmp_path, verify=False).step == 1
    if name in ("optimizer.safetensors", "rng.safetensors"):  # not read for inference, so not checked
        assert load_checkpoint(tmp_path, include_optimizer=False).step == 1


def test_a_checkpoint_without_hashes_still_loads(tmp_path: Path) -> None:
    model = Net()
    out = save(tmp_path, 1, model)
    state = out / "state.json"
    info = json.loads(state.read_text())
    info["files"] = {k: {"bytes": v["bytes"]} for k, v in info["files"].items()}
    state.write_text(json.dumps(info))
    assert_same_tensors(load_checkpoint(tmp_path).model, model.state_dict())
    info["files"]["model.safetensors"]["sha256"] = 42  # not a digest at all
    state.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path)


def test_latest_pointing_outside_the_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save(run, 1, Net())
    save(tmp_path / "other", 5, Net())
    for pointer in ("../other/checkpoints/step-00000005", str(tmp_path / "other" / "checkpoints" / "step-00000005"),
                    "../../../etc"):
        (run / "LATEST").write_text(json.dumps({"checkpoint": pointer}))
        with pytest.raises(CheckpointError, match="LATEST: .* resolves outside"):
            find_latest_checkpoint(run)
        with pytest.raises(CheckpointError, match="resolves outside"):
            load_checkpoint(run)


@pytest.mark.skipif(os.name == "nt", reason="symbolic links")
def test_links_out_of_the_run_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = save(run, 1, Net())
    elsewhere = tmp_path / "elsewhere"
    out.rename(elsewhere)
    out.symlink_to(elsewhere, target_is_directory=True)  # the step directory itself is a link
    with pytest.raises(CheckpointError, match="resolves outside"):
        load_checkpoint(run)
    assert load_checkpoint(out).step == 1  # given directly, a step directory is the user's choice
    out.unlink()
    elsewhere.rename(out)
    (out / "model.safetensors").rename(tmp_path / "w.safetensors")
    (out / "model.safetensors").symlink_to(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"state\.json: .*model\.safetensors resolves outside"):
        load_checkpoint(run)


def test_links_inside_the_run_are_fine(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = save(run, 1, Net())
    (out / "model.safetensors").rename(run / "kept.safetensors")
    (out / "model.safetensors").symlink_to(run / "kept.safetensors")
    assert load_checkpoint(run).step == 1


def test_inside(tmp_path: Path) -> None:
    assert inside(tmp_path, tmp_path / "a" / ".." / "b", "x") == (tmp_path / "b").resolve()
    assert inside(tmp_path, tmp_path, "x") == tmp_path.resolve()
    with pytest.raises(CheckpointError, match=r"^where: .* resolves outside"):
        inside(tmp_path / "a", tmp_path / "ab", "where")  # a common prefix is not containment
