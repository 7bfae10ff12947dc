"""The word trigram: a proper distribution, order gain that separates text from shuffled words,
unigram bits, and the count-trigram infill baseline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from zonkey.core.evaluate.wordlm import BOUNDARY, UNKNOWN, WordTrigram

# a toy language with word order: "the <animal> <verb> on the <thing> ." and nothing else
ANIMALS, VERBS, THINGS = ["cat", "dog", "fox"], ["sat", "slept", "stood"], ["mat", "rug", "bed"]
DOCS = [" ".join(f"the {a} {v} on the {t} ." for a, v, t in itertools.islice(
    itertools.product(ANIMALS, VERBS, THINGS), i, i + 9)) for i in range(0, 27, 3)]


@pytest.fixture(scope="module")
def lm():
    return WordTrigram(DOCS)


@pytest.mark.parametrize("context", [("the", "cat"), ("on", "the"), ("never", "seen"), ("", "")])
def test_every_context_gives_a_distribution_that_sums_to_one(lm, context):
    t, u = (lm.ids.get(c, BOUNDARY if not c else UNKNOWN) for c in context)
    w = np.arange(1, lm.size)  # every word the model can predict (the boundary symbol never is)
    p = np.exp2(lm.log2p(np.full_like(w, t), np.full_like(w, u), w))
    assert p.sum() == pytest.approx(1.0, abs=1e-9) and (p > 0).all()


def test_order_gain_separates_text_from_the_same_words_shuffled(lm):
    text = ["the dog slept on the rug . the fox sat on the bed ."]
    real = lm.order_figures(text, seed=0)
    assert real["order_gain"] > 2.0 and real["words"] == 14
    assert real["bits_per_word"] < real["shuffled_bits_per_word"]
    rng = np.random.default_rng(1)
    jumbled = [" ".join(rng.permutation(text[0].split()))]
    assert lm.order_figures(jumbled, seed=0)["order_gain"] < 1.0
    assert lm.order_figures([""])["order_gain"] is None


def test_unigram_bits_are_low_for_a_flood_of_the_commonest_word(lm):
    flood = lm.order_figures(["the the the the the the"])
    text = lm.order_figures(["the dog slept on the rug ."])
    assert flood["unigram_bits_per_word"] < text["unigram_bits_per_word"]
    assert flood["order_gain"] == pytest.approx(0.0, abs=1e-9)


def test_an_unknown_word_has_the_mass_of_the_words_seen_once(lm):
    assert lm.encode("zebra the")[0] == UNKNOWN
    assert 0 < lm.unigram[UNKNOWN] < lm.unigram[lm.ids["the"]]


def test_the_infill_baseline_uses_both_sides(lm):
    # after "on the" any thing fits; the right side "." alone does not choose among them
    assert set(lm.fill("the cat sat on the ", " .", k=3)) == {"mat", "rug", "bed"}
    # only a verb fits between an animal and "on"
    assert lm.fill("the dog ", " on the mat .", k=1)[0] in VERBS
    # and only an animal between "the" and a verb
    assert lm.fill("the ", " slept on", k=1)[0] in ANIMALS
    assert lm.fill("", "", k=2) and lm.fill("", "", k=2)[0] in ("the", ".")
