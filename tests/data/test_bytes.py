"""Bytes: the held-out hash, UTF-8-safe chunking, decoding byte values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from zonkey.data import DataError, chunk_bytes, decode_bytes, heldout_score

MULTIBYTE = "naïve 日本語 🦓 "  # 1-, 2-, 3- and 4-byte characters


def test_heldout_score_is_a_fixed_hash():
    assert heldout_score("Zebra") == heldout_score("Zebra")
    assert 0.0 <= heldout_score("Zebra") < 1.0
    scores = [heldout_score(f"doc {i}") for i in range(20_000)]
    assert abs(np.mean(np.array(scores) < 0.05) - 0.05) < 0.006  # uniform enough


@pytest.mark.parametrize("max_bytes", [4, 5, 7, 8, 9, 13, 16, 31, 64, 100])
def test_chunking_never_splits_a_character_and_concatenates_back(max_bytes):
    data = (MULTIBYTE * 37).encode()
    chunks = chunk_bytes(data, max_bytes)
    assert b"".join(chunks) == data
    for c in chunks:
        assert 0 < len(c) <= max_bytes
        c.decode("utf-8")
        assert not 0x80 <= c[0] < 0xC0


def test_chunking_random_unicode_round_trips():
    rng = random.Random(0)
    alphabet = "ab ,.\nßé€中😀\U0010FFFF\x00"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        data = text.encode()
        m = rng.randint(4, 40)
        chunks = chunk_bytes(data, m)
        assert b"".join(chunks) == data
        assert all(0 < len(c) <= m for c in chunks)
        assert [c.decode() for c in chunks]  # every chunk decodes strictly
        assert len(chunks) <= math.ceil(len(data) / (m - 3)) + 1  # a cut moves back <= 3 bytes


def test_chunking_ignores_word_boundaries():
    # ASCII: cuts fall exactly at the balanced positions, mid-word, never moved to a space
    data = b"the quick brown fox jumps over the lazy dog " * 4 + b"end"  # 179 bytes
    chunks = chunk_bytes(data, 50)
    assert [len(c) for c in chunks] == [45, 45, 45, 44]
    assert chunks[1].startswith(b"he quick")  # starts mid-word
    assert chunk_bytes(b"short", 50) == [b"short"]


def test_chunking_of_invalid_utf8_still_respects_the_budget():
    data = b"\x80" * 50
    chunks = chunk_bytes(data, 8)
    assert b"".join(chunks) == data and all(0 < len(c) <= 8 for c in chunks)
    with pytest.raises(ValueError):
        chunk_bytes(b"abc", 3)


def test_decode_bytes_replaces_invalid_utf8_and_drops_padding():
    assert decode_bytes(torch.tensor(list("日本".encode()))) == "日本"
    assert decode_bytes([0x66, 0xFF, 0x6F]) == "f\ufffdo"
    assert decode_bytes(list("日".encode())[:2]) == "\ufffd"
    assert decode_bytes(b"abc") == "abc"
    assert decode_bytes(torch.tensor([104, 105, 0, 0]), valid=torch.tensor([1, 1, 0, 0]).bool()) == "hi"
    with pytest.raises(DataError):
        decode_bytes([256])
    with pytest.raises(DataError):
        decode_bytes(torch.zeros(2, 2, dtype=torch.long))
