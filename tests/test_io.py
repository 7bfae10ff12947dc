"""Atomic writes: whole files replaced or kept, tied and non-contiguous tensors saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.core.checkpoint.helpers import assert_same_tensors
from zonkey import io as zio
from zonkey.io import CheckpointError, atomic_save_safetensors, atomic_write_bytes, atomic_write_json


def test_atomic_writes_replace_whole_files(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1, "nan": float("nan")})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    with pytest.raises(CheckpointError, match=r"x\.json: not JSON-serializable"):
        atomic_write_json(p, {"a": object()})
    assert json.loads(p.read_text()) == {"a": 2}
    atomic_write_bytes(tmp_path / "b", b"abc")
    assert (tmp_path / "b").read_bytes() == b"abc"
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["b", "sub", "x.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "w.safetensors"
    atomic_save_safetensors(p, {"a": torch.ones(2)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(zio.os, "replace", boom)
    with pytest.raises(OSError):
        atomic_save_safetensors(p, {"a": torch.zeros(2)})
    monkeypatch.undo()
    with safe_open(str(p), framework="pt") as f:
        assert torch.equal(f.get_tensor("a"), torch.ones(2))
    assert [x.name for x in tmp_path.iterdir()] == ["w.safetensors"]


def test_safetensors_tied_and_non_contiguous(tmp_path: Path) -> None:
    w = torch.randn(3, 4)
    tensors = {"a": w, "b": w, "t": w.t(), "view": w[1:], "empty": torch.zeros(0), "s": torch.tensor(2.5)}
    p = atomic_save_safetensors(tmp_path / "t.safetensors", tensors, {"k": "v"})
    with safe_open(str(p), framework="pt") as f:
        assert f.metadata() == {"k": "v"}
        back = {k: f.get_tensor(k) for k in f.keys()}
    assert_same_tensors({k: v.contiguous() for k, v in tensors.items()}, back)
