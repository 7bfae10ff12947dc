"""A vocabulary-headed prior's bank during training: built when the prior starts, rebuilt on its
schedule from the current encoder, saved with the model, and runs still reproduce exactly."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.model.bank import build_bank
from zonkey.core.recipe import validate_recipe
from zonkey.core.train.banks import bank_due, bank_texts
from zonkey.core.train.trainer import Trainer
from zonkey.io import read_safetensors

pytestmark = pytest.mark.usefixtures("single_thread")


def _recipe(steps: int = 6):
    rec = micro_recipe(steps=steps).model_dump()
    level = rec["model"]["levels"][0]
    level["splitter"]["existence"] = "straight_through"
    level["prior"] = {"name": "sequence", "head": "bank", "bank_size": 64, "bank_every": 3, "bank_texts": 24,
                      "lr_start": 2, "d_model": 16, "layers": 1, "heads": 2, "max_len": 32}
    rec["train"]["curriculum"] = [{"term": "l0.prior", "start": 2, "end": 3}]
    return validate_recipe(rec)


@pytest.mark.parametrize(("step", "filled", "due"), [
    (0, False, False), (1, False, False), (2, False, True), (2, True, True), (4, True, False), (5, True, True),
    (8, True, True), (9, True, False), (3, False, True)])
def test_when_a_bank_is_built(step, filled, due):
    assert bank_due(step, lr_start=2, every=3, filled=filled) is due
    assert bank_due(7, lr_start=2, every=0, filled=True) is False


def test_bank_texts_are_the_same_spread_chunks_every_time():
    chunks = [f"chunk {i}".encode() for i in range(100)]
    assert bank_texts(chunks, 10) == [f"chunk {i}" for i in range(0, 100, 10)] == bank_texts(chunks, 10)
    assert bank_texts([], 5) == []


def test_the_bank_follows_the_encoder_and_is_saved_and_runs_reproduce(tmp_path):
    logs: list[str] = []
    trainer = Trainer(_recipe(), tmp_path / "a", progress=False, log=logs.append)
    trainer.fit()
    built = [line for line in logs if "prior bank of" in line]
    assert [line.split(":")[0] for line in built] == ["step 2", "step 5"]
    head = trainer.model.levels[0].prior.bank
    assert head is not None and head.ready
    # the bank in place is the one the final encoder gives the same chunks (rebuilt at step 5, the
    # encoder moved once since: the step-5 bank was built before that step's update)
    model = trainer.model
    expect = build_bank(model, bank_texts(trainer.corpus.train, 24), 64)
    k = len(expect.strings)
    cos = torch.nn.functional.cosine_similarity(head.bank[:k], expect.latents, dim=-1)
    assert float(cos.min()) > 0.9
    # saved with the model (EMA too, as it is, not averaged)
    saved, _ = read_safetensors(tmp_path / "a" / "model.safetensors")
    assert torch.equal(saved["levels.0.prior.head.bank"], head.bank.cpu())
    ema, _ = read_safetensors(tmp_path / "a" / "ema.safetensors")
    assert torch.equal(ema["levels.0.prior.head.bank"], head.bank.cpu())
    again = Trainer(_recipe(), tmp_path / "b", progress=False, log=lambda s: None)
    again.fit()
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_bank_head_on_a_level_above_0_is_refused(tmp_path):
    rec = micro_recipe().model_dump()
    rec["model"]["levels"].append({"d_model": 32, "max_segment": 4, "n_compress": 1, "heads": 2,
                                   "prior": {"name": "sequence", "head": "bank", "bank_size": 8, "d_model": 16,
                                             "heads": 2, "layers": 1}})
    with pytest.raises(ValueError, match="level 0's segments"):
        Trainer(validate_recipe(rec), tmp_path / "r", progress=False, log=lambda s: None).fit()
