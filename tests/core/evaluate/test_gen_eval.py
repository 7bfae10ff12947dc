"""Generation metrics on hand-made inputs, and the whole evaluation on a micro model."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.evaluate.generation import (
    TrainingText,
    byte_entropy,
    evaluate_generation,
    reference_texts,
    sample_metrics,
    steps_table,
    text_row,
    throughput,
)
from zonkey.core.evaluate.infill import byte_accuracy, infill_problems, infill_scores
from zonkey.core.evaluate.words import (
    distinct_n,
    most_frequent_token,
    normalize_word,
    valid_word_rate,
    vocabulary,
    words,
)
from zonkey.core.model.network import build_model

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


TRAIN = [b"the cat sat on the mat. the dog sat on the log.", "A bird flew over the old mill and the river."]


def test_byte_entropy_of_known_strings():
    assert byte_entropy(["abab"]) == pytest.approx(1.0)
    assert byte_entropy(["aaaa", "a"]) == 0.0 and byte_entropy([]) == 0.0
    assert byte_entropy(["ab", "cd"]) == pytest.approx(2.0)  # all bytes of a row together


def test_memorisation_counts_verbatim_token_4grams_within_documents():
    train = TrainingText.build(TRAIN)
    assert train.memorisation(["the cat sat on the moon"]) == (pytest.approx(2 / 3), 3)
    assert train.memorisation(["The cat sat on"]) == (0.0, 1)  # verbatim: case counts
    assert train.memorisation(["the log. A bird"]) == (0.0, 1)  # crosses two training documents
    assert train.memorisation(["the cat", "sat on the"]) == (0.0, 0)  # 4-grams never cross texts
    assert train.memorisation(["zz the cat sat on"]) == (pytest.approx(1 / 2), 2)


def test_references_fit_the_sample_byte_lengths_and_fool_the_valid_word_rate():
    train = TrainingText.build(TRAIN)
    texts = ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "", "qq qq qq qq"]
    refs = reference_texts(texts, [b"Real text one here.", b"Another real held-out document."], train, seed=1)
    for rows in refs.values():
        assert len(rows) == 3
        for r, t in zip(rows, texts, strict=True):
            assert r and (len(r.encode()) <= len(t.encode()) or len(r.split()) == 1)
    assert refs["repeat"][0] == " ".join(["the"] * 7)  # 27 bytes: within 30
    assert refs["real"][0].startswith("Real text one here. Another")  # continues into the next document
    assert set(" ".join(refs["shuffled"]).split()) <= set(" ".join(t.decode() if isinstance(t, bytes) else t
                                                                     for t in TRAIN).split())
    assert refs["shuffled"] == reference_texts(texts, [b"x"], train, seed=1)["shuffled"]  # seeded
    rep, shuf = text_row(refs["repeat"], train), text_row(refs["shuffled"], train)
    assert rep["valid_word_rate"] == 1.0 == shuf["valid_word_rate"]
    assert rep["distinct_1"] < 0.2 and rep["byte_entropy"] < 2.1 < shuf["byte_entropy"]


def test_text_row_has_every_figure():
    train = TrainingText.build(TRAIN)
    row = text_row(["the cat sat on the mat", "zzkq wv"], train)
    assert set(row) == {"valid_word_rate", "judge_bpb", "byte_entropy", "distinct_1", "distinct_2", "mean_bytes",
                        "memorisation", "word_4grams", "order_gain", "bits_per_word", "unigram_bits_per_word"}
    assert row["valid_word_rate"] == pytest.approx(6 / 8)
    assert row["memorisation"] == pytest.approx(2 / 3)  # the training text has "mat.", not "mat"
    assert text_row([""], train)["judge_bpb"] is None and text_row([""], train)["order_gain"] is None


def test_generation_sections_on_a_micro_model(tmp_path):
    torch.manual_seed(0)
    model = build_model(micro_recipe())
    heldout = [b"The dog ran to the park. It was the best day."]
    items = [("The dog ran to the ", ". It was", "park"), ("", " sat on the mat.", "the")]
    res = evaluate_generation(model, TRAIN, heldout, samples=3, infill=2, seed=0, with_steps_table=False,
                              throughput_n=4, infill_items=items, cache_dir=tmp_path)
    s = res["samples"]
    assert s["snap"] == "off" and set(s["rows"]) == {"generated", "real", "repeat", "shuffled"}
    assert s["judge"]["order"] == 5 and not s["judge"]["cached"] and s["bytes_per_s"] > 0
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    assert res["throughput"]["n"] == 4 and res["throughput"]["snap"] == "off"
    f = res["infill"]
    assert f["snap"] == "off" and set(f["em_at_k"]) == {"1", "3", "5"}
    assert f["em_at_k"]["1"] <= f["em_at_k"]["3"] <= f["em_at_k"]["5"]
    assert set(f["baselines"]) == {"the", "unigram", "sampled", "trigram"}
    it = res["infill_items"]
    assert it["n"] == 2 and it["baselines"]["the"]["exact_match"] == 0.5
    assert [x["answer"] for x in it["items"]] == ["park", "the"]
    again = evaluate_generation(model, TRAIN, heldout, samples=3, infill=0, cache_dir=tmp_path)
    assert again["samples"]["judge"]["cached"] and again["samples"]["rows"] == s["rows"]


def test_steps_table_and_throughput_rows():
    torch.manual_seed(0)
    model = build_model(micro_recipe())
    train = TrainingText.build(TRAIN)
    rows = steps_table(model, train, 2, steps=(1, 3))
    assert [r["steps"] for r in rows] == [1, 3] and all(r["snap"] == "off" and r["n"] == 2 for r in rows)
    assert all(r["bytes_per_s"] > 0 and "judge_bpb" in r for r in rows)
    t = throughput(model, 3, steps=2)
    assert t["n"] == 3 and t["steps"] == 2 and t["bytes"] > 0 and t["device"] == "cpu"
