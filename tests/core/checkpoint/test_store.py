"""Saving: the layout of a run, retention, re-saves, JSON-only state, no object serialization."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.core.checkpoint.helpers import VOCAB, Net, assert_clean, new_ema, save, step_dirs
from zonkey import io as zio
from zonkey.core import checkpoint as ck
from zonkey.core.checkpoint import CheckpointError, load_checkpoint, write_recipe_json


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


def test_state_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serializable"):
        save(tmp_path, 1, Net(), bad=torch.ones(1))
    assert not (tmp_path / "checkpoints").exists()


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
    modules = [*sorted(Path(ck.__file__).parent.glob("*.py")), Path(zio.__file__)]
    source = "".join(p.read_text(encoding="utf-8") for p in modules)
    for word in ("torch.save", "torch.load", "pickle"):
        assert word not in source
