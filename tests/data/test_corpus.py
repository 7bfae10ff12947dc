"""Corpus: the bundled Wikipedia sample, the held-out split by hash, max_docs, chunks, the cache."""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.data.helpers import local_cfg
from zonkey.core.recipe import DataConfig
from zonkey.data import Corpus, DataError, clear_corpus_cache, is_heldout, load_corpus, wiki_sample_path


@pytest.fixture(scope="module")
def wiki_entries() -> dict:
    return json.loads(wiki_sample_path().read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def wiki() -> Corpus:
    return load_corpus(DataConfig(source="wiki"))


def test_wiki_loads_every_document_with_a_five_percent_heldout_split(wiki, wiki_entries):
    stats = wiki.stats
    assert stats.n_source_docs == stats.n_docs == len(wiki_entries) == 10_033
    assert stats.n_empty_skipped == 0
    assert stats.n_train_docs + stats.n_heldout_docs == stats.n_docs
    assert 0.04 < stats.n_heldout_docs / stats.n_docs < 0.06
    assert stats.n_chunks == len(wiki.train) + len(wiki.heldout)
    assert stats.n_bytes == sum(map(len, wiki.train)) + sum(map(len, wiki.heldout))
    assert stats.n_bytes == sum(len(e["extract"].encode()) for e in wiki_entries.values())


def test_wiki_split_is_by_title_disjoint_and_loses_no_document(wiki, wiki_entries):
    held = [t for t in wiki_entries if is_heldout(t, 0.05)]
    train = [t for t in wiki_entries if not is_heldout(t, 0.05)]
    assert not set(held) & set(train)
    # re-assembled chunks are exactly the documents, in source order, each on its side
    assert wiki.documents("heldout") == [wiki_entries[t]["extract"].encode() for t in held]
    assert wiki.documents("train") == [wiki_entries[t]["extract"].encode() for t in train]
    assert not set(wiki.documents("heldout")) & set(wiki.documents("train"))


def test_wiki_split_is_stable_across_loads_and_independent_of_chunking(wiki):
    again = load_corpus(DataConfig(source="wiki"), cache=False)
    assert again is not wiki
    assert again.train == wiki.train and again.heldout == wiki.heldout
    assert load_corpus(DataConfig(source="wiki")) is wiki  # cached
    small = load_corpus(DataConfig(source="wiki", max_doc_bytes=64, batch_bytes=256))
    assert small.documents("heldout") == wiki.documents("heldout")
    assert small.documents("train") == wiki.documents("train")
    assert all(len(c) <= 64 for c in small.train + small.heldout)
    assert small.stats.n_chunks > 3 * wiki.stats.n_chunks


def test_max_docs_caps_after_the_split_and_nests(wiki):
    capped = load_corpus(DataConfig(source="wiki", max_docs=100))
    assert capped.stats.n_train_docs == 100
    assert capped.stats.n_heldout_docs == math.ceil(100 * 0.05 / 0.95)
    assert capped.stats.n_source_docs == wiki.stats.n_docs
    full_train, full_held = set(wiki.documents("train")), set(wiki.documents("heldout"))
    assert set(capped.documents("train")) <= full_train
    assert set(capped.documents("heldout")) <= full_held
    bigger = load_corpus(DataConfig(source="wiki", max_docs=200))
    assert set(capped.documents("train")) <= set(bigger.documents("train"))


def test_every_chunk_is_valid_utf8_and_within_max_doc_bytes(wiki):
    corpus = load_corpus(DataConfig(source="wiki", max_doc_bytes=200, batch_bytes=800))
    for chunk in corpus.train + corpus.heldout:
        assert 0 < len(chunk) <= 200
        chunk.decode("utf-8")  # strict: no character cut in two
    assert corpus.stats.n_chunked_docs > 0


def test_cache_notices_a_changed_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    first = load_corpus(local_cfg(path))
    assert load_corpus(local_cfg(path)) is first
    path.write_text("one\ntwo\nthree\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_corpus(local_cfg(path)).stats.n_docs == 3
    clear_corpus_cache()
    assert load_corpus(local_cfg(path)) is not first


def test_an_empty_training_split_cannot_be_batched(tmp_path):
    path = tmp_path / "one.txt"
    text = next(f"d{i}" for i in range(1000) if is_heldout(f"d{i}", 0.5))
    path.write_text(text + "\n", encoding="utf-8")
    corpus = load_corpus(local_cfg(path, heldout_fraction=0.5))
    assert corpus.train == () and corpus.documents("heldout") == [text.encode()]
    with pytest.raises(DataError, match="train split.*empty"):
        corpus.batches("train")
