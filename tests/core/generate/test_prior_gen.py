"""Generation and infilling through a level's sequence prior."""

import random

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.generate.infill import infill, infill_many
from zonkey.core.generate.sample import sample
from zonkey.core.model.network import build_model
from zonkey.core.recipe import recipe_to_dict, validate_recipe

PRIOR = {"name": "sequence", "d_model": 32, "layers": 1, "heads": 2, "max_len": 32}


def _recipe(**train):
    data = recipe_to_dict(micro_recipe(**train))
    data["model"]["levels"][0]["prior"] = PRIOR
    data["sample"] = {**data.get("sample", {}), "length": 6, "steps": 4, "infill_gap": [1, 2]}
    return validate_recipe(data, source="<micro+prior>")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_recipe()).eval()


def test_training_pass_has_the_prior_term_and_it_does_not_reach_the_encoder(model):
    model.train()
    from zonkey.data import encode_texts

    batch = encode_texts(["the river flows through the old city", "a cat sat on the mat today"])
    out = model(batch.tokens, batch.valid, generator=torch.Generator().manual_seed(0))
    assert "l0.prior" in out.terms and torch.isfinite(out.terms["l0.prior"])
    model.zero_grad()
    out.terms["l0.prior"].backward()
    lvl = model.levels[0]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lvl.prior.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in lvl.compressor.parameters())
    model.eval()


def test_sample_draws_from_the_prior_and_is_seeded(model):
    a = sample(model, 3, seed=5)
    b = sample(model, 3, seed=5)
    assert a.texts == b.texts and len(a.texts) == 3
    traced = sample(model, 2, seed=5, trace=True)
    assert len(traced.trace) == 4 and len(traced.sigmas) == 4


@pytest.mark.parametrize(("prefix", "suffix"), [("The river flows through the ", " city."),
                                                 ("The river flows", ""), ("", " flows through the city.")])
def test_infill_keeps_the_context_byte_for_byte(model, prefix, suffix):
    res = infill(model, prefix, suffix, seed=1)
    assert res.text.startswith(prefix) and res.text.endswith(suffix)
    assert res.text == prefix + res.gap + suffix
    assert res.gap_len in (1, 2) and len(res.candidates) == 2
    assert res.candidates[0]["score"] >= res.candidates[1]["score"]
    assert -1.0 <= res.score <= 1.0


def test_infill_many_batches_pairs_and_rejects_an_empty_pair(model):
    out = infill_many(model, [("a b ", " c"), ("x ", "")], seed=0)
    assert [r.text.startswith(p) for r, p in zip(out, ["a b ", "x "], strict=True)] == [True, True]
    with pytest.raises(ValueError, match="both empty"):
        infill_many(model, [("", "")])


def test_a_sample_longer_than_the_prior_reads_is_a_clear_error(model):
    with pytest.raises(ValueError, match="max_len"):
        sample(model, 1, length=40)


@pytest.mark.learning
def test_a_trained_level0_prior_beats_random_letters_on_the_judge(tmp_path):
    """The learning tests' micro corpus, one level with a sequence prior, 500 steps: the prior's
    samples must score at least 1 bit/byte lower on the judge than random letters and spaces of
    the same lengths (measured: about 2 bits lower)."""
    from tests.test_learning import _recipe as learning_recipe
    from zonkey.core.evaluate.judge import NgramJudge
    from zonkey.core.evaluate.words import vocabulary, words
    from zonkey.core.model.network import ZonkeyModel
    from zonkey.core.train.trainer import Trainer
    from zonkey.data import load_corpus

    base = recipe_to_dict(learning_recipe(tmp_path, steps=500, compressor={"name": "cls", "layers": 1, "skip": True}))
    base["model"]["levels"][0]["prior"] = PRIOR
    base["sample"] = {"length": 6, "steps": 20}
    recipe = validate_recipe(base, source="<learning+prior>")
    Trainer(recipe, tmp_path / "run", progress=False, log=lambda s: None).fit()
    model = ZonkeyModel.from_run(tmp_path / "run")
    docs = load_corpus(recipe.data).documents("train")
    judge = NgramJudge.train(docs)
    texts = sample(model, 24, seed=0).texts
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz     "
    randoms = ["".join(rng.choice(letters) for _ in range(max(len(t), 1))) for t in texts]
    got, rand = judge.bits_per_byte(texts), judge.bits_per_byte(randoms)
    vocab = vocabulary(docs)
    ws = [w for t in texts for w in words(t)]
    valid = sum(w in vocab for w in ws) / max(len(ws), 1)
    assert got < rand - 1.0, (got, rand, valid, texts[:3])
