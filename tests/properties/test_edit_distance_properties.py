"""The round trip's character accuracy rests on an edit distance and its aligned accuracy on the
longest common subsequence (both from rapidfuzz): check them against the numpy edit distance they
replaced, the textbook dynamic programmes, difflib, and the laws an edit distance obeys."""

from __future__ import annotations

from difflib import SequenceMatcher

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zonkey.core.evaluate.heldout import RoundTrip, levenshtein
from zonkey.core.evaluate.roundtrip import aligned_matches
from zonkey.data import encode_texts

LAWS = settings(max_examples=200, deadline=None)
small_bytes = st.binary(max_size=24).map(lambda b: bytes(c % 4 + 97 for c in b))  # a 4-letter alphabet: many ties


def _numpy_levenshtein(a: bytes, b: bytes) -> int:
    """The edit distance the round trip used before rapidfuzz: one vectorised DP row at a time."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b, dtype=np.uint8)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        c = np.empty_like(row)
        c[0] = i
        c[1:] = np.minimum(row[:-1] + (bb != ch), row[1:] + 1)
        row = np.minimum.accumulate(c - idx) + idx
    return int(row[-1])


def _textbook_lcs(a: bytes, b: bytes) -> int:
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            cur[j] = prev[j - 1] + 1 if a[i - 1] == b[j - 1] else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


@settings(max_examples=300, deadline=None)
@given(st.one_of(small_bytes, st.binary(max_size=200)), st.one_of(small_bytes, st.binary(max_size=200)))
def test_levenshtein_gives_the_values_of_the_numpy_programme_it_replaced(a, b):
    assert levenshtein(a, b) == _numpy_levenshtein(a, b)


@LAWS
@given(small_bytes, small_bytes)
def test_aligned_matches_is_the_longest_common_subsequence_and_never_below_difflib(a, b):
    lcs = aligned_matches(a, b)
    assert lcs == _textbook_lcs(a, b)
    greedy = sum(blk.size for blk in SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
    assert greedy <= lcs <= min(len(a), len(b))


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
