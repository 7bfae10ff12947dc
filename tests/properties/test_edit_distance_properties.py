"""The round trip's character accuracy rests on an edit distance: check the vectorised one against
the textbook dynamic programme, and the laws an edit distance obeys."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zonkey.core.evaluate.heldout import RoundTrip, levenshtein
from zonkey.data import encode_texts

LAWS = settings(max_examples=200, deadline=None)
small_bytes = st.binary(max_size=24).map(lambda b: bytes(c % 4 + 97 for c in b))  # a 4-letter alphabet: many ties


def _textbook(a: bytes, b: bytes) -> int:
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


@LAWS
@given(small_bytes, small_bytes)
def test_levenshtein_matches_the_textbook_programme(a, b):
    assert levenshtein(a, b) == _textbook(a, b)


@LAWS
@given(small_bytes, small_bytes, small_bytes)
def test_levenshtein_is_a_metric(a, b, c):
    assert levenshtein(a, b) == levenshtein(b, a)
    assert (levenshtein(a, b) == 0) == (a == b)
    assert levenshtein(a, c) <= levenshtein(a, b) + levenshtein(b, c)
    assert abs(len(a) - len(b)) <= levenshtein(a, b) <= max(len(a), len(b))


def test_one_dropped_byte_costs_one_byte_of_char_accuracy_but_half_of_strict():
    text = "abcdefghij" * 10
    batch = encode_texts([text])
    ref = batch.tokens[0, : len(text)]
    out = torch.cat([ref[:50], ref[51:]])  # the 51st byte is dropped
    rt = RoundTrip()
    rt.add(batch, out[None, :], torch.ones(1, len(out), dtype=torch.bool), torch.zeros(1, dtype=torch.long))
    assert abs(rt.char_acc - 0.99) < 1e-9
    assert rt.strict < 0.6  # everything after the slip is at the wrong offset
    assert rt.aligned == 0.99
