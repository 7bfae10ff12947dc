"""Generation metrics on hand-made inputs, and the whole evaluation on a micro model."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.gen_eval import (
    byte_accuracy,
    distinct_n,
    evaluate_generation,
    infill_problems,
    infill_scores,
    most_frequent_token,
    normalize_word,
    sample_metrics,
    valid_word_rate,
    vocabulary,
    words,
)
from zonkey.core.model import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_words_are_lowercased_and_stripped_of_edge_punctuation():
    assert normalize_word("«Hello,»") == "hello"
    assert normalize_word("don't") == "don't"
    assert words("The cat -- sat, (on) the MAT!") == ["the", "cat", "sat", "on", "the", "mat"]


def test_valid_word_rate_of_a_known_list():
    vocab = vocabulary([b"the cat sat", "Dog."])
    assert vocab == {"the", "cat", "sat", "dog"}
    assert valid_word_rate(["The cat zzq", "dog!"], vocab) == pytest.approx(3 / 4)
    assert valid_word_rate(["... !!"], vocab) == 0.0  # no words at all


def test_distinct_n_of_known_strings():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["a b", "c"], 2) == 1.0  # one bigram: n-grams never cross texts
    assert distinct_n(["a", "b"], 2) == 0.0


def test_baseline_picks_the_most_frequent_token():
    assert most_frequent_token([b"x the y the", "the z, z"]) == "the"
    with pytest.raises(ValueError):
        most_frequent_token([b"  "])


def test_byte_accuracy_counts_wrong_missing_and_extra_bytes():
    assert byte_accuracy("cat", "car") == pytest.approx(2 / 3)
    assert byte_accuracy("cat", "cats") == pytest.approx(3 / 4)
    assert byte_accuracy("cats", "cat") == pytest.approx(3 / 4)
    assert byte_accuracy("", "") == 1.0 and byte_accuracy("abc", "") == 0.0
    assert byte_accuracy("é", "e") == 0.0  # bytes, not characters
    assert infill_scores(["the", "cat"], ["the", "car"]) == pytest.approx((0.5, (1 + 2 / 3) / 2))


def test_infill_problems_are_seeded_and_remove_one_token():
    docs = [b"The cat sat on the mat. It was warm! Short one. A dog barked at the moon tonight."]
    a = infill_problems(docs, 3, seed=1)
    assert a == infill_problems(docs, 3, seed=1)
    assert len(a) == 3  # "Short one." has 2 words: not a candidate
    sentences = {"The cat sat on the mat.", "It was warm!", "A dog barked at the moon tonight."}
    for prefix, suffix, gold in a:
        assert prefix + gold + suffix in sentences
        assert gold and " " not in gold
    assert {infill_problems(docs, 3, seed=s)[0] for s in range(8)} != {a[0]}  # the seed chooses


def test_sample_metrics_compare_against_real_text_of_the_same_word_count():
    res = sample_metrics(["a a", "b"], [b"x y z w", "q r"], {"a", "x"})
    assert res["n"] == 2 and res["valid_word_rate"] == pytest.approx(2 / 3)
    assert res["mean_bytes"] == pytest.approx(2.0) and res["real_mean_bytes"] == pytest.approx(5.0)
    assert res["distinct_1"] == pytest.approx(2 / 3)
    # the real rows read "x y" (2 words, like sample 0) and "q" (1 word, like sample 1)
    assert res["real_distinct_1"] == 1.0 and res["real_distinct_2"] == 1.0
    assert res["real_valid_word_rate"] == pytest.approx(1 / 6)


def test_evaluate_generation_on_a_micro_model():
    torch.manual_seed(0)
    model = build_model(micro_recipe())
    train = [b"the cat sat on the mat. the end."]
    heldout = [b"The dog ran to the park. It was the best day."]
    res = evaluate_generation(model, train, heldout, samples=3, infill=2, seed=0)
    s, f = res["samples"], res["infill"]
    assert s["n"] == 3 and 0.0 <= s["valid_word_rate"] <= 1.0 and s["mean_bytes"] > 0
    assert s["real_mean_bytes"] == len(heldout[0])
    assert f["n"] == 2 and f["baseline_word"] == "the"
    golds = [g for _, _, g in infill_problems(heldout, 2, 0)]
    assert f["baseline_exact_match"] == pytest.approx(sum(g == "the" for g in golds) / 2)
    assert evaluate_generation(model, train, heldout, samples=0, infill=0) == {}
