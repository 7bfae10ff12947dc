"""Trainer behaviour: exact resume, atomic saves, non-finite losses, run-directory safety."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core import checkpoint as ckpt
from zonkey.core.train import Trainer, TrainingError, lr_at


def _weights(run_dir):
    return ckpt.load_checkpoint(run_dir).model


def test_resume_is_exact(tmp_path):
    """N steps straight == N/2 steps, a new process-like Trainer with --resume, N/2 steps."""
    rec = micro_recipe(steps=6)
    Trainer(rec, tmp_path / "straight", progress=False, log=lambda s: None).fit()
    Trainer(rec, tmp_path / "split", progress=False, log=lambda s: None).fit(stop_at=3)
    torch.manual_seed(12345)  # disturb the global generator: resume must restore it
    Trainer(rec, tmp_path / "split", resume=True, progress=False, log=lambda s: None).fit()
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"
    ea, eb = ckpt.load_checkpoint(tmp_path / "straight").ema, ckpt.load_checkpoint(tmp_path / "split").ema
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_metrics_and_checkpoint_files(tmp_path):
    rec = micro_recipe(steps=4, log_every=2)
    res = Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None).fit()
    assert res.step == 4 and math.isfinite(res.last_loss)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert all("l0.token" in r and r["bytes_per_s"] > 0 for r in rows)
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert saved["model"]["levels"][0]["d_model"] == 16 and "zonkey_version" in saved
    # no pickle anywhere in the run directory
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert not f.read_bytes()[:1] == b"\x80", f


def test_existing_run_is_not_overwritten(tmp_path):
    rec = micro_recipe(steps=2)
    Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None).fit()
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    rec = micro_recipe(steps=4, save_every=2)
    t = Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None)
    t.fit(stop_at=2)
    good = _weights(tmp_path / "run")
    import os

    real_rename = os.rename

    def boom(src, dst):
        if "step-" in str(dst):
            raise OSError("simulated crash")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", boom)
    with pytest.raises(OSError, match="simulated crash"):
        t.fit()
    monkeypatch.setattr(os, "rename", real_rename)
    c = ckpt.load_checkpoint(tmp_path / "run")
    assert c.step == 2
    assert all(torch.equal(good[k], c.model[k]) for k in good)


def test_nonfinite_losses_skip_then_stop(tmp_path, monkeypatch):
    rec = micro_recipe(steps=10, max_nonfinite=3)
    t = Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None)
    t.fit(stop_at=2)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    real_forward = type(t.model).forward

    def nan_forward(self, *a, **k):
        out = real_forward(self, *a, **k)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(type(t.model), "forward", nan_forward)
    logs = []
    t.log = logs.append
    with pytest.raises(TrainingError, match="3 non-finite losses in a row"):
        t.fit()
    assert t.skipped == 3
    assert any("step skipped" in line for line in logs)
    after = t.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the weights"


def test_lr_schedule_warmup_and_cosine():
    rec = micro_recipe(steps=100, warmup_steps=10)
    cfg = rec.train
    assert lr_at(0, cfg) == pytest.approx(cfg.lr / 10)
    assert lr_at(9, cfg) == pytest.approx(cfg.lr)
    assert lr_at(100, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)
    assert lr_at(55, cfg) < lr_at(20, cfg)
