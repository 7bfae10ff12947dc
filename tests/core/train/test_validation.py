"""``train.eval_every``: the held-out pass while training (zonkey.core.train.validation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import micro_recipe
from zonkey.core.recipe import recipe_to_dict, validate_recipe
from zonkey.core.train.trainer import Trainer
from zonkey.core.train.validation import heldout_slice, validate

REPO = Path(__file__).resolve().parents[3]
QUIET = {"progress": False, "log": lambda s: None}


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _two_levels(**train) -> object:
    data = recipe_to_dict(micro_recipe(**train))
    lv0 = data["model"]["levels"][0]
    lv0["splitter"]["target_segment"] = 3.0
    lv0["prior"] = {"name": "sequence", "d_model": 32, "layers": 1, "heads": 2, "max_len": 64}
    data["model"]["levels"].append({
        "d_model": lv0["n_compress"] * lv0["d_model"], "max_segment": 4, "n_compress": 2, "heads": 2, "ffn_mult": 1,
        "compressor": {"name": "cls", "layers": 1}, "denoiser": {"name": "ddmm", "decoder_layers": 1, "layers": 1}})
    return validate_recipe(data, source="<micro two levels + prior>")


def test_eval_every_logs_held_out_figures_at_its_steps_and_the_last(tmp_path: Path) -> None:
    lines: list[str] = []
    Trainer(micro_recipe(steps=5, eval_every=2, log_every=1), tmp_path / "run", progress=False, log=lines.append).fit()
    rows = _rows(tmp_path / "run")
    with_val = [r["step"] for r in rows if "val.loss" in r]
    assert with_val == [2, 4, 5]  # every 2 steps and the last
    row = rows[1]
    for key in ("val.loss", "val.l0.token", "val.l0.bos", "val.l0.recon_acc", "val.l0.word_f1", "val.l0.space_f1",
                "val.l0.mean_segment", "eval_s"):
        assert isinstance(row[key], float), key
    assert 0.0 <= row["val.l0.recon_acc"] <= 1.0 and 0.0 <= row["val.l0.word_f1"] <= 1.0
    assert row["val.loss"] != row["loss"]  # a held-out figure, not the training batch's
    assert sum("held-out (val.) loss=" in line for line in lines) == 3


def test_no_held_out_pass_without_eval_every(tmp_path: Path) -> None:
    Trainer(micro_recipe(steps=3, log_every=1), tmp_path / "run", **QUIET).fit()
    assert not any(k.startswith("val.") for r in _rows(tmp_path / "run") for k in r)


def test_the_held_out_pass_leaves_training_bit_for_bit_unchanged(tmp_path: Path) -> None:
    """It draws its noise from its own generator and puts torch's back: the weights are equal, not close."""
    a = Trainer(micro_recipe(steps=4, eval_every=1), tmp_path / "a", **QUIET)
    a.fit()
    b = Trainer(micro_recipe(steps=4), tmp_path / "b", **QUIET)
    b.fit()
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_held_out_slice_is_fixed_and_scored_the_same_twice(tmp_path: Path) -> None:
    t = Trainer(micro_recipe(steps=2, eval_every=1), tmp_path / "run", **QUIET)
    again = heldout_slice(t.corpus, seed=t.cfg.seed, batch_bytes=t.recipe.data.batch_bytes, n=t.cfg.eval_batches)
    assert [torch.equal(x.tokens, y.tokens) for x, y in zip(t.val_batches, again, strict=True)] == [True] * len(again)
    train_docs = {bytes(c) for c in t.corpus.train}
    held = {bytes(r[v].tolist()) for b in again for r, v in zip(b.tokens, b.valid, strict=True)}
    assert not held & train_docs  # held-out chunks, never training ones
    state = torch.get_rng_state()
    first = validate(t.model, t.val_batches, scales={}, seed=0, device=t.device)
    second = validate(t.model, t.val_batches, scales={}, seed=0, device=t.device)
    assert first == second and torch.equal(torch.get_rng_state(), state)


def test_upper_levels_and_the_prior_have_held_out_figures() -> None:
    rec = _two_levels(steps=2)
    from zonkey.core.model.network import build_model
    from zonkey.data import load_corpus

    torch.manual_seed(0)
    model = build_model(rec)
    batches = heldout_slice(load_corpus(rec.data), seed=0, batch_bytes=rec.data.batch_bytes, n=1)
    res = validate(model, batches, scales={}, seed=0, device=torch.device("cpu"))
    for key in ("val.l0.prior", "val.l1.recon_clean", "val.l1.recon_acc", "val.l1.mean_segment"):
        assert key in res and res[key] == res[key], key  # present and not NaN
    assert not model.training


def test_the_bundled_recipes_validate_while_training() -> None:
    for name in ("tiny", "bench-proto", "wiki"):
        data = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
        every = data["train"]["eval_every"]
        assert 0 < every <= data["train"]["steps"] // 10, name


@pytest.mark.parametrize("value", [-1, "often"])
def test_a_bad_eval_every_is_a_recipe_error(value: object) -> None:
    from zonkey.core.recipe import RecipeError

    with pytest.raises(RecipeError, match="train.eval_every"):
        micro_recipe(eval_every=value)
