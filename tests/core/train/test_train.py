"""Trainer behaviour: exact resume, atomic saves, non-finite losses, run-directory safety."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core import checkpoint as ckpt
from zonkey.core.train.trainer import Trainer, TrainingError, lr_at


def _weights(run_dir):
    return ckpt.load_checkpoint(run_dir).model


@pytest.mark.parametrize("kind", ["one level", "two levels, level 1 on its own schedule"])
def test_resume_is_exact(tmp_path, kind):
    """N steps straight == N/2 steps, a new process-like Trainer with --resume, N/2 steps."""
    rec = micro_recipe(steps=6) if kind == "one level" else _two_level_micro(lr_start=2, lr_scale=1.5, steps=6)
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


def test_level_lr_start_and_scale_shift_and_scale_the_schedule():
    cfg = micro_recipe(steps=100, warmup_steps=10).train
    assert lr_at(29, cfg, start=30) == 0.0
    assert lr_at(30, cfg, start=30, scale=2.0) == pytest.approx(2.0 * cfg.lr / 10)
    assert lr_at(39, cfg, start=30, scale=2.0) == pytest.approx(2.0 * cfg.lr)
    assert lr_at(100, cfg, start=30, scale=2.0) == pytest.approx(2.0 * cfg.lr * cfg.min_lr_ratio)
    # the same cosine, squeezed into the steps left
    short = micro_recipe(steps=70, warmup_steps=10).train
    for s in (40, 55, 80):
        assert lr_at(s, cfg, start=30) == pytest.approx(lr_at(s - 30, short))


def _two_level_micro(steps: int = 5, **schedule: Any) -> Any:
    from zonkey.core.recipe import recipe_to_dict, validate_recipe

    data = recipe_to_dict(micro_recipe(steps=steps, log_every=1))
    lv0 = data["model"]["levels"][0]
    lv0["splitter"]["target_segment"] = 3.0
    lv1 = {"d_model": lv0["n_compress"] * lv0["d_model"], "max_segment": 4, "n_compress": 2, "heads": 2,
           "ffn_mult": 1, "compressor": {"name": "cls", "layers": 1},
           "denoiser": {"name": "ddmm", "decoder_layers": 1, "layers": 1}, "schedule": schedule}
    data["model"]["levels"].append(lv1)
    return validate_recipe(data, source="<two-level micro>")


def test_param_groups_keep_their_layout_unless_a_level_has_its_own_schedule():
    from zonkey.core.model.network import build_model
    from zonkey.core.train.trainer import param_groups

    plain = _two_level_micro()
    groups = param_groups(build_model(plain), 0.01, plain.model.levels)
    assert len(groups) == 2 and not any("level" in g for g in groups)
    own = _two_level_micro(lr_start=2)
    model = build_model(own)
    groups = param_groups(model, 0.01, own.model.levels)
    assert [g.get("level") for g in groups] == [None, None, 1, 1]
    l1 = {id(p) for p in model.levels[1].parameters()}
    assert {id(p) for g in groups[2:] for p in g["params"]} == l1
    assert all(id(p) not in l1 for g in groups[:2] for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_level_does_not_move_before_its_lr_start(tmp_path):
    rec = _two_level_micro(lr_start=3, lr_scale=2.0)
    t = Trainer(rec, tmp_path / "run", progress=False, log=lambda s: None)
    before = {k: v.clone() for k, v in t.model.levels[1].state_dict().items()}
    t.fit(stop_at=3)
    mid = t.model.levels[1].state_dict()
    assert all(torch.equal(before[k], mid[k]) for k in before), "level 1 trained before its lr_start"
    t.fit()
    after = t.model.levels[1].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "level 1 never trained"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows}
    assert by_step[3]["lr.l1"] == 0.0 and by_step[4]["lr.l1"] > 0


def test_a_level_that_never_reaches_its_lr_start_is_reported(tmp_path):
    logs: list[str] = []
    Trainer(_two_level_micro(lr_start=5), tmp_path / "run", progress=False, log=logs.append)
    assert any("model.levels.1.schedule.lr_start is 5 >= train.steps 5" in line for line in logs)


def test_a_level_on_every_second_step_moves_only_on_those_steps(tmp_path):
    """A curriculum entry with ``every: 2`` switches level 1 off at odd steps: it costs nothing there
    and its parameters (and their average) stay as they were; level 0 trains at every step."""
    from zonkey.core.recipe import recipe_to_dict, validate_recipe

    data = recipe_to_dict(_two_level_micro(steps=6))
    data["train"]["curriculum"] = [{"term": "l1", "start": 0, "end": 0, "every": 2}]
    t = Trainer(validate_recipe(data, source="<every 2>"), tmp_path / "run", progress=False, log=lambda s: None)
    moved = []
    for step in range(1, 7):
        l0 = {k: v.clone() for k, v in t.model.levels[0].state_dict().items()}
        l1 = {k: v.clone() for k, v in t.model.levels[1].state_dict().items()}
        t.fit(stop_at=step)
        assert any(not torch.equal(l0[k], v) for k, v in t.model.levels[0].state_dict().items())
        moved.append(any(not torch.equal(l1[k], v) for k, v in t.model.levels[1].state_dict().items()))
    assert moved == [True, False, True, False, True, False]


def test_every_logged_row_shows_a_level_that_runs_only_on_every_second_step(tmp_path):
    """With ``every: 2`` level 1 runs on even steps and rows are logged after odd ones: each row
    still carries level 1's latest training figures (from the step before)."""
    import json

    from zonkey.core.recipe import recipe_to_dict, validate_recipe

    data = recipe_to_dict(_two_level_micro(steps=6))
    data["train"]["curriculum"] = [{"term": "l1", "start": 0, "end": 0, "every": 2}]
    data["train"]["log_every"] = 2
    t = Trainer(validate_recipe(data, source="<every 2>"), tmp_path / "run", progress=False, log=lambda s: None)
    t.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r["step"] in (2, 4, 6)]
    assert len(logged) == 3
    for r in logged:
        assert any(k.startswith("l1.") and k != "l1.seq_len" for k in r), sorted(r)
