"""Loading: fallbacks of a run directory, errors that name the file, strict state loading, and
rebuilding a model from a run (``ZonkeyModel.from_run``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import zonkey
import zonkey.core.model.network
from tests.core.checkpoint.helpers import WIDTH, Net, assert_same_tensors, new_ema, save
from zonkey.core.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
    write_recipe_json,
)
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.recipe import SCHEMA_VERSION, recipe_to_dict, validate_recipe
from zonkey.io import atomic_write_json


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


@pytest.fixture()
def fake_model_module(monkeypatch):
    built = []

    def build_model(recipe):
        built.append(recipe)
        return Net(width=recipe.model.levels[0].d_model)

    monkeypatch.setattr(zonkey.core.model.network, "build_model", build_model)
    return built


def test_from_run(tmp_path: Path, fake_model_module) -> None:
    recipe = validate_recipe({"model": {"levels": [{"d_model": WIDTH}]}})
    model = Net()
    ema = {k: torch.full_like(v, 0.5) for k, v in new_ema(model).items()}
    save_checkpoint(tmp_path, step=4, model=model, ema=ema, optimizer=None, state={}, recipe=recipe_to_dict(recipe))

    loaded = ZonkeyModel.from_run(tmp_path)
    assert not loaded.training and fake_model_module[-1] == recipe
    assert torch.equal(loaded.norm.weight, ema["norm.weight"])
    assert "head.weight" not in ema and torch.equal(loaded.head.weight, ema["emb.weight"])  # tied: EMA wins
    assert torch.equal(loaded.calls, model.calls)  # buffer not in the EMA: from the model weights
    raw = ZonkeyModel.from_run(tmp_path, use_ema=False)
    assert_same_tensors(raw.state_dict(), model.state_dict())
    from_step = zonkey.load(tmp_path / "checkpoints" / "step-00000004")
    assert torch.equal(from_step.norm.weight, ema["norm.weight"])

    # weights that don't fit the recipe's model
    bad = validate_recipe({"model": {"levels": [{"d_model": 16}]}})
    write_recipe_json(tmp_path, recipe_to_dict(bad))
    with pytest.raises(CheckpointError, match=r"ema\.safetensors: checkpoint does not match the model: .*shape"):
        ZonkeyModel.from_run(tmp_path)
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": SCHEMA_VERSION, "model": {"levels": "x"}})
    with pytest.raises(CheckpointError, match=r"recipe\.json: model\.levels"):
        ZonkeyModel.from_run(tmp_path)
    (tmp_path / "recipe.json").unlink()
    with pytest.raises(CheckpointError, match="missing recipe.json in"):
        ZonkeyModel.from_run(tmp_path)


def test_checkpoint_and_io_do_not_import_the_model():
    # the model loads itself through the checkpoint package (from_run), never the other way round
    code = ("import sys, zonkey; before = set(sys.modules); import zonkey.io; "
            "assert {m for m in set(sys.modules) - before if m.startswith('zonkey')} <= {'zonkey.io', 'zonkey.inputs', 'zonkey.fsguard'}; "
            "import zonkey.core.checkpoint; sys.exit('zonkey.core.model.network' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
