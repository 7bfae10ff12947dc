"""Batches: byte budgets, one pass per epoch, a pure function of seed and step; raw texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zonkey.core.recipe import DataConfig
from zonkey.data import Batch, ByteBatches, Corpus, DataError, encode_texts, load_corpus


@pytest.fixture(scope="module")
def small_wiki() -> Corpus:
    return load_corpus(DataConfig(source="wiki", max_docs=600, max_doc_bytes=256, batch_bytes=1024))


def test_batches_respect_the_budget_and_hold_the_right_bytes(small_wiki):
    batches = small_wiki.batches("train", seed=3)
    seen_bytes = 0
    for step in range(batches.steps_per_epoch):
        batch = batches.batch(step)
        b, n = batch.tokens.shape
        assert b * n <= 1024
        assert batch.tokens.dtype == torch.int64 and batch.valid.dtype == torch.bool
        assert int(batch.lengths.max()) == n  # n is the longest chunk, no extra padding
        assert int(batch.tokens.min()) >= 0 and int(batch.tokens.max()) <= 255
        assert not batch.tokens[~batch.valid].any()
        for row in range(b):
            chunk = small_wiki.train[int(batch.chunk_index[row])]
            length = int(batch.lengths[row])
            assert batch.valid[row, :length].all() and not batch.valid[row, length:].any()
            assert bytes(batch.tokens[row, :length].tolist()) == chunk
            assert int(batch.doc_index[row]) == small_wiki.train_doc[int(batch.chunk_index[row])]
        seen_bytes += batch.num_bytes
    assert seen_bytes == sum(map(len, small_wiki.train))


def test_batches_cover_every_chunk_once_per_epoch(small_wiki):
    batches = small_wiki.batches("train", seed=0)
    for epoch in range(3):
        idx = np.concatenate(batches.epoch_indices(epoch))
        assert sorted(idx.tolist()) == list(range(len(small_wiki.train)))


def test_batches_are_a_pure_function_of_seed_and_step(small_wiki):
    a = ByteBatches(small_wiki.train, 1024, seed=7)
    b = ByteBatches(small_wiki.train, 1024, seed=7)
    k = a.steps_per_epoch
    for step in [0, 1, k - 1, k, 5 * k + 3]:
        x, y = a.batch(step), b.batch(step)
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.valid, y.valid)
        assert torch.equal(x.chunk_index, y.chunk_index)
    # resuming: asking out of order gives the same as asking in order
    in_order = [a.batch(s).chunk_index for s in range(2 * k)]
    fresh = ByteBatches(small_wiki.train, 1024, seed=7)
    for s in reversed(range(2 * k)):
        assert torch.equal(fresh.batch(s).chunk_index, in_order[s])


def test_epochs_and_seeds_differ(small_wiki):
    a = ByteBatches(small_wiki.train, 1024, seed=0)
    e0 = [tuple(i.tolist()) for i in a.epoch_indices(0)]
    e1 = [tuple(i.tolist()) for i in a.epoch_indices(1)]
    assert e0 != e1
    assert {frozenset(x) for x in e0} != {frozenset(x) for x in e1}  # composition changes too
    other = ByteBatches(small_wiki.train, 1024, seed=1)
    assert [tuple(i.tolist()) for i in other.epoch_indices(0)] != e0
    assert other.steps_per_epoch == a.steps_per_epoch


def test_padding_is_low_and_pad_to_multiple_respects_the_budget(small_wiki):
    plain = ByteBatches(small_wiki.train, 1024, seed=0)
    real = sum(plain.batch(s).num_bytes for s in range(len(plain)))
    padded = sum(plain.batch(s).tokens.numel() for s in range(len(plain)))
    assert real / padded > 0.85
    eights = ByteBatches(small_wiki.train, 1000, seed=0, pad_to_multiple=8)
    for s in range(len(eights)):
        b, n = eights.batch(s).tokens.shape
        assert n % 8 == 0 and b * n <= 1000


def test_byte_batches_reject_bad_chunks():
    with pytest.raises(DataError, match="no chunks"):
        ByteBatches([], 64)
    with pytest.raises(DataError, match="more than batch_bytes"):
        ByteBatches([b"x" * 65], 64)
    with pytest.raises(DataError, match="empty"):
        ByteBatches([b"ab", b""], 64)
    with pytest.raises(DataError, match="step"):
        ByteBatches([b"ab"], 64).batch(-1)


def test_batch_to_device_keeps_fields(small_wiki):
    batch = small_wiki.batches("heldout").batch(0).to("cpu")
    assert isinstance(batch, Batch) and batch.doc_index.shape == (batch.tokens.shape[0],)
    assert all(t.encode() in small_wiki.heldout for t in batch.texts())


def test_encode_texts_pads_and_marks_valid_bytes():
    batch = encode_texts(["hi", "naïve", "🦓"])
    assert batch.tokens.shape == (3, 6)
    assert batch.lengths.tolist() == [2, 6, 4]
    assert batch.tokens[0].tolist() == [104, 105, 0, 0, 0, 0]
    assert batch.valid[2].tolist() == [True] * 4 + [False] * 2
    assert batch.doc_index.tolist() == [0, 1, 2] and batch.num_bytes == 12
    assert batch.texts() == ["hi", "naïve", "🦓"]
    assert encode_texts(["a\x00b"]).tokens.tolist() == [[97, 0, 98]]  # NUL is a byte, not padding


def test_encode_texts_rejects_empty_and_too_long_texts():
    with pytest.raises(DataError, match="text 1 is empty"):
        encode_texts(["ok", ""])
    with pytest.raises(DataError, match="text 0 is 9 bytes.*max_len=4"):
        encode_texts(["日本語"], max_len=4)
    with pytest.raises(DataError):
        encode_texts("not a list")
    with pytest.raises(DataError):
        encode_texts([])
