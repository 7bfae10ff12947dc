"""The prior's held-out conditional likelihood in ``zonkey eval``: figures, their ranges, and the
count baselines over the same classes."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.evaluate.prior import prior_likelihood
from zonkey.core.model.bank import build_bank
from zonkey.core.model.network import build_model
from zonkey.core.recipe import validate_recipe

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = ["The cat sat on the mat. The dog sat on the rug. " * 4, "A cat and a dog sat on the mat. " * 6]
HELD = ["The dog sat on the mat. A cat sat on the rug. " * 3]


def _model(head: str = "bank"):
    rec = micro_recipe().model_dump()
    rec["model"]["levels"][0]["splitter"]["existence"] = "straight_through"
    rec["model"]["levels"][0]["prior"] = {"name": "sequence", "head": head, "bank_size": 16, "d_model": 16,
                                          "layers": 1, "heads": 2, "max_len": 64}
    torch.manual_seed(0)
    return build_model(validate_recipe(rec)).eval()


def test_the_conditional_likelihood_and_its_baselines():
    model = _model()
    assert prior_likelihood(model, TRAIN, HELD, positions=30) is None  # no bank yet: nothing to score
    bank = build_bank(model, TRAIN, 16)
    head = model.levels[0].prior.bank
    head.set_bank(bank.latents, bank.log_freq, bank.other_log_freq)
    res = prior_likelihood(model, TRAIN, HELD, positions=30, train_chunks=20)
    assert res is not None and 0 < res["n"] <= 30 and res["bank_size"] == 16
    for key in ("top1", "mrr", "other_share"):
        assert 0.0 <= res[key] <= 1.0
    assert res["top1"] <= res["mrr"] and res["bits_per_segment"] > 0
    # an untrained prior is the unigram of its bank's log-frequencies: about the unigram baseline's bits
    assert res["bits_per_segment"] == pytest.approx(res["unigram"]["bits_per_segment"], rel=0.5)
    for base in ("unigram", "trigram"):
        assert 0.0 <= res[base]["top1"] <= 1.0 and res[base]["bits_per_segment"] > 0
    assert res["train_segments"] > 0 and not math.isnan(res["bits_per_segment"])


def test_an_mse_prior_has_no_conditional_likelihood():
    assert prior_likelihood(_model("mse"), TRAIN, HELD, positions=10) is None


def test_a_segment_outside_the_bank_is_never_a_hit(monkeypatch):
    """Predicting "other" for an out-of-bank segment names no segment: top-1 counts bank entries only."""
    model = _model()
    bank = build_bank(model, TRAIN, 16)
    head = model.levels[0].prior.bank
    head.set_bank(bank.latents[:2], bank.log_freq[:2], 0.0)  # a 2-entry bank: some segments are "other"
    prior = model.levels[0].prior

    def always_other(z0, valid, target):
        lp = torch.full((z0.shape[0], head.size + 1), -50.0)
        lp[:, -1] = 0.0
        return lp, head.classes(z0[torch.arange(z0.shape[0]), target])

    monkeypatch.setattr(prior, "position_log_probs", always_other)
    res = prior_likelihood(model, TRAIN, HELD, positions=30, train_chunks=20)
    assert res is not None and res["other_share"] > 0
    assert res["top1"] == 0.0 and res["mrr"] <= 0.5  # the true entry comes second at best
