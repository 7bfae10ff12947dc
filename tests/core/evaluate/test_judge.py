"""The byte n-gram judge: exact Kneser–Ney numbers on a toy corpus, normalisation, back-off, real
text against random letters, and the cache."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from zonkey.core.evaluate.judge import START, NgramJudge, corpus_fingerprint, load_or_train

TEXT = [
    b"The cat sat on the mat. The dog sat on the log. A cat and a dog met on the mat.",
    b"Every morning the old man walked to the river and sat on the bank to watch the water.",
    b"The river was cold and the water was clear, and the fish swam near the bank of the river.",
] * 3


def test_toy_corpus_gives_the_hand_computed_probabilities():
    judge = NgramJudge.train([b"abab"], order=2)
    # bigrams (start a) (a b) (b a) (a b): D2 = n1 / (n1 + 2 n2) = 2 / 4; continuation counts of
    # the unigrams: a after {start, b} = 2, b after {a} = 1, so D1 = 1 / 3
    d1, d2 = 1 / 3, 0.5
    p1_b = (1 - d1) / 3 + d1 * 2 / 3 / 256
    p1_a = (2 - d1) / 3 + d1 * 2 / 3 / 256
    p2_b_after_a = (2 - d2) / 2 + d2 * 1 / 2 * p1_b
    probs = judge.next_byte_probs(b"a")
    assert probs[ord("b")] == pytest.approx(p2_b_after_a)
    p2_a_at_start = (1 - d2) / 1 + d2 * 1 / 1 * p1_a
    assert judge.next_byte_probs(b"")[ord("a")] == pytest.approx(p2_a_at_start)
    # the vectorised scorer agrees with the per-context distribution
    total, n = judge.bits([b"ab"])
    assert n == 2 and total == pytest.approx(-math.log2(p2_a_at_start) - math.log2(p2_b_after_a))


@pytest.mark.parametrize("context", [b"", b"The c", b"the river", b"zzqx", "naïve ".encode(), bytes([0, 255, 7])])
def test_next_byte_probabilities_sum_to_one(context):
    judge = NgramJudge.train(TEXT, order=5)
    p = judge.next_byte_probs(context)
    assert p.shape == (256,) and (p > 0).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_an_unseen_context_backs_off_to_the_unigram_distribution():
    judge = NgramJudge.train(TEXT, order=5)
    unseen = judge.next_byte_probs(bytes([1, 2, 3, 4]))  # no byte of it occurs in the corpus
    # the lowest order alone: Kneser–Ney continuation counts, interpolated with the uniform
    t = judge.tables[0]
    cont = np.zeros(256)
    cont[t.keys.astype(np.int64)] = t.counts
    total, types = t.totals[0], t.types[0]
    expected = np.maximum(cont - t.discount, 0) / total + t.discount * types / total / 256
    np.testing.assert_allclose(unseen, expected, rtol=1e-12)
    assert int(np.argmax(unseen)) in (ord(" "), ord("e"), ord("t"))  # a common byte, not noise
    # partly seen: the last byte is known, so the distribution after it is used, not the unigram
    after_q = judge.next_byte_probs(bytes([1, 2, 3]) + b"T")
    assert int(np.argmax(after_q)) == ord("h")


def test_real_held_out_text_scores_far_below_random_letters():
    rng = random.Random(0)
    words = b" ".join(TEXT).decode().split()
    train = [" ".join(rng.choice(words) for _ in range(60)).encode() for _ in range(200)] + TEXT
    judge = NgramJudge.train(train, order=5)
    heldout = ["The old dog walked to the water and the cat sat on the bank of the river."]
    letters = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz     ") for _ in range(300))]
    real, noise = judge.bits_per_byte(heldout), judge.bits_per_byte(letters)
    assert real < 3.0 and noise > 6.0 and noise - real > 3.0
    assert math.isnan(judge.bits_per_byte(["", ""]))


def test_documents_do_not_leak_into_each_other():
    judge = NgramJudge.train([b"xy", b"zw"] * 10, order=3)
    joined = NgramJudge.train([b"xyzw" * 10], order=3)
    # "yz" never occurs inside a document: after "y" the model has not seen "z", but it has
    # when the same bytes form one document
    assert judge.next_byte_probs(b"xy")[ord("z")] < 0.1 < 0.5 < joined.next_byte_probs(b"xy")[ord("z")]
    at_start = judge.next_byte_probs(b"")  # a text starts with x or z
    assert at_start[ord("x")] > 0.3 and at_start[ord("z")] > 0.3


def test_bad_orders_and_empty_corpora_are_rejected():
    with pytest.raises(ValueError, match="between 1 and 7"):
        NgramJudge.train(TEXT, order=8)
    with pytest.raises(ValueError, match="no training text"):
        NgramJudge.train([b"", ""], order=3)
    assert START == 256


def test_the_cache_is_keyed_by_the_corpus_fingerprint(tmp_path):
    judge, cached = load_or_train(TEXT, tmp_path, order=4)
    assert not cached
    files = sorted(p.name for p in tmp_path.iterdir())
    fp = corpus_fingerprint(TEXT, 4)
    assert files == [f"judge-{fp}.json", f"judge-{fp}.safetensors"]
    again, cached = load_or_train(TEXT, tmp_path, order=4)
    assert cached and again.order == 4 and again.fingerprint == fp
    text = ["The cat sat on the bank."]
    assert again.bits_per_byte(text) == judge.bits_per_byte(text)
    _, cached = load_or_train(TEXT[:2], tmp_path, order=4)  # another corpus: retrained
    assert not cached
    _, cached = load_or_train(TEXT, tmp_path, order=3)  # another order: retrained
    assert not cached
    (tmp_path / f"judge-{fp}.safetensors").write_bytes(b"garbage")  # a broken cache: retrained
    _, cached = load_or_train(TEXT, tmp_path, order=4)
    assert not cached
