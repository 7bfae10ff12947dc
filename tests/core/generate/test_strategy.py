"""The generation strategy is chosen once: the prior where the chosen level has one, else per
segment; and going through the chosen strategy gives exactly what its path function gives."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.generate.infill import infill_many
from zonkey.core.generate.prior import infill_with_prior, sample_with_prior
from zonkey.core.generate.sample import sample
from zonkey.core.generate.segment import infill_per_segment, sample_per_segment
from zonkey.core.generate.strategy import PerSegmentStrategy, PriorStrategy, strategy_for
from zonkey.core.model.network import build_model
from zonkey.core.recipe import recipe_to_dict, validate_recipe

pytestmark = pytest.mark.usefixtures("single_thread")

PRIOR = {"name": "sequence", "d_model": 32, "layers": 1, "heads": 2, "max_len": 32}
PAIRS = [("The river flows through the ", " city."), ("The river flows", ""), ("", " flows through the city.")]


def _two_level(prior: bool):
    """Two levels; with ``prior``, a sequence prior over level 0's latents."""
    levels = [{"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
               "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0}},
              {"d_model": 32, "max_segment": 6, "n_compress": 2, "heads": 2}]
    if prior:
        levels[0]["prior"] = PRIOR
    rec = validate_recipe({"model": {"levels": levels},
                           "sample": {"level_steps": 2, "infill_gap": [1, 2], "length": 5, "steps": 3}})
    torch.manual_seed(0)
    return build_model(rec).eval()


def _one_level_with_prior():
    data = recipe_to_dict(micro_recipe())
    data["model"]["levels"][0]["prior"] = PRIOR
    data["sample"] = {**data.get("sample", {}), "length": 6, "steps": 4, "infill_gap": [1, 2]}
    torch.manual_seed(0)
    return build_model(validate_recipe(data)).eval()


@pytest.fixture(scope="module")
def with_prior():
    return _two_level(prior=True)


@pytest.fixture(scope="module")
def without_prior():
    return _two_level(prior=False)


def test_the_prior_is_chosen_where_a_level_has_one_and_per_segment_otherwise(with_prior, without_prior):
    chosen = strategy_for(with_prior)
    assert isinstance(chosen, PriorStrategy) and chosen.level == 0
    assert isinstance(strategy_for(with_prior, 0), PriorStrategy)
    assert isinstance(strategy_for(with_prior, prior=True), PriorStrategy)
    # a level without a prior, named explicitly, generates per segment at that level
    assert strategy_for(with_prior, 1) == PerSegmentStrategy(with_prior, 1)
    # no prior anywhere: per segment, each operation at its own default level
    assert strategy_for(without_prior) == PerSegmentStrategy(without_prior, None)
    assert strategy_for(without_prior, 0) == PerSegmentStrategy(without_prior, 0)


def test_per_segment_forces_the_per_segment_strategy(with_prior):
    assert strategy_for(with_prior, per_segment=True) == PerSegmentStrategy(with_prior, None)
    assert strategy_for(with_prior, 0, per_segment=True) == PerSegmentStrategy(with_prior, 0)
    forced = infill_many(with_prior, PAIRS[:1], seed=2, steps=2, per_segment=True)[0]
    assert forced.level == 1  # the per-segment default: level 1's sequence, whose positions are level-0 latents
    assert infill_many(with_prior, PAIRS[:1], seed=2, steps=2)[0].level == 0  # the prior's own level


def test_bad_choices_are_one_line_errors_naming_the_level(with_prior, without_prior):
    for model in (with_prior, without_prior):
        with pytest.raises(ValueError, match=r"^level 2 does not exist \(the model has 2 level\(s\)\)$"):
            strategy_for(model, 2)
        with pytest.raises(ValueError, match="level -1 does not exist"):
            strategy_for(model, -1)
    with pytest.raises(ValueError, match=r"^level 1 has no trained sequence prior$"):
        strategy_for(with_prior, 1, prior=True)
    with pytest.raises(ValueError, match=r"^no level of the model has a trained sequence prior$"):
        strategy_for(without_prior, prior=True)
    with pytest.raises(ValueError, match="exclude each other"):
        strategy_for(with_prior, per_segment=True, prior=True)
    with pytest.raises(ValueError, match="level 2 does not exist"):
        infill_many(with_prior, PAIRS, level=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("make", [_one_level_with_prior, lambda: _two_level(True)], ids=["1lvl", "2lvl"])
def test_a_seeded_sample_through_the_prior_strategy_equals_the_prior_path(make):
    model = make()
    cfg = model.recipe.sample
    got = sample(model, 3, seed=7, trace=True)
    want = sample_with_prior(model, 3, level=0, steps=cfg.steps, length=cfg.length, eta=cfg.eta,
                             epsilon=cfg.epsilon, generator=_gen(7), trace=True)
    assert got == want


@pytest.mark.parametrize("level", [None, 0, 1])
def test_a_seeded_sample_per_segment_equals_the_per_segment_path(with_prior, level):
    cfg = with_prior.recipe.sample
    got = sample(with_prior, 3, seed=5, steps=2, level=level, per_segment=True, trace=True)
    want = sample_per_segment(with_prior, 3, level=1 if level is None else level, steps=2,
                              segments=cfg.top_segments, epsilon=cfg.epsilon, generator=_gen(5), trace=True)
    assert got == want


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.text, x.gap, x.score, x.gap_len, x.level, x.candidates, x.raw, x.trace, x.sigmas) == \
               (y.text, y.gap, y.score, y.gap_len, y.level, y.candidates, y.raw, y.trace, y.sigmas)
        for t in ("slots", "prefix_vectors", "suffix_vectors"):
            assert torch.equal(getattr(x, t), getattr(y, t))


def test_a_seeded_infill_through_either_strategy_equals_its_path(with_prior, without_prior):
    cfg = with_prior.recipe.sample
    _same(infill_many(with_prior, PAIRS, seed=3, steps=2),
          infill_with_prior(with_prior, PAIRS, level=0, gaps=[1, 2], steps=2, eta=cfg.eta, epsilon=cfg.epsilon,
                            generator=_gen(3)))
    _same(infill_many(without_prior, PAIRS, seed=3, steps=2, trace=True),
          infill_per_segment(without_prior, PAIRS, level=1, gaps=[1, 2], steps=2, epsilon=cfg.epsilon,
                             generator=_gen(3), trace=True))
    _same(infill_many(without_prior, PAIRS[:1], level=0, gap=(2, 3), span=4, seed=4, steps=2),
          infill_per_segment(without_prior, PAIRS[:1], level=0, gaps=[2, 3], steps=2, epsilon=cfg.epsilon,
                             generator=_gen(4), span=4))
