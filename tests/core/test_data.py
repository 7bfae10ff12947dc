"""Data: sources, the held-out split, UTF-8-safe chunking, byte-budget batches, errors."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from zonkey.core.data import (
    Batch,
    ByteBatches,
    Corpus,
    DataError,
    chunk_bytes,
    clear_corpus_cache,
    decode_bytes,
    encode_texts,
    heldout_score,
    is_heldout,
    load_corpus,
    wiki_sample_path,
)
from zonkey.core.recipe import DataConfig

MULTIBYTE = "naïve 日本語 🦓 "  # 1-, 2-, 3- and 4-byte characters


@pytest.fixture(scope="module")
def wiki_entries() -> dict:
    return json.loads(wiki_sample_path().read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def wiki() -> Corpus:
    return load_corpus(DataConfig(source="wiki"))


# --- the bundled Wikipedia sample ------------------------------------------------------------


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


def test_heldout_score_is_a_fixed_hash():
    assert heldout_score("Zebra") == heldout_score("Zebra")
    assert 0.0 <= heldout_score("Zebra") < 1.0
    scores = [heldout_score(f"doc {i}") for i in range(20_000)]
    assert abs(np.mean(np.array(scores) < 0.05) - 0.05) < 0.006  # uniform enough


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


# --- chunking ----------------------------------------------------------------------------------


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


# --- batches -----------------------------------------------------------------------------------


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


# --- local files ---------------------------------------------------------------------------------


def _cfg(path, **kw) -> DataConfig:
    return DataConfig(source=str(path), max_doc_bytes=kw.pop("max_doc_bytes", 16),
                      batch_bytes=kw.pop("batch_bytes", 64), **kw)


def _all_docs(corpus: Corpus) -> list[bytes]:
    return sorted(corpus.documents("train") + corpus.documents("heldout"))


def test_txt_is_one_document_per_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("first line\n\nsecond ünïcode line that is long\r\n   \nthird\n".encode())
    corpus = load_corpus(_cfg(path))
    assert _all_docs(corpus) == sorted([b"first line", "second ünïcode line that is long".encode(), b"third"])
    assert corpus.stats.n_empty_skipped == 2
    assert corpus.stats.n_chunked_docs == 1
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfwith a byte-order mark\nnext\n")
    assert _all_docs(load_corpus(_cfg(bom, max_doc_bytes=64))) == [b"next", b"with a byte-order mark"]


def test_jsonl_reads_the_text_column_and_skips_nulls(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": f"document number {i} 🦓", "id": i} for i in range(30)] + [{"body": None, "id": 99}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    corpus = load_corpus(_cfg(path, text_column="body"))
    assert _all_docs(corpus) == sorted(f"document number {i} 🦓".encode() for i in range(30))
    assert corpus.stats.n_empty_skipped == 1
    held = {f"document number {i} 🦓".encode() for i in range(30) if is_heldout(f"document number {i} 🦓", 0.05)}
    assert set(corpus.documents("heldout")) == held


def test_parquet_and_folders_load(tmp_path):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"text": ["alpha doc", "beta doc", ""], "n": [1, 2, 3]}).to_parquet(tmp_path / "a.parquet")
    assert _all_docs(load_corpus(_cfg(tmp_path / "a.parquet"))) == [b"alpha doc", b"beta doc"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("gamma doc\ndelta doc\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "epsilon doc"}) + "\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("ignored", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("ignored too", encoding="utf-8")
    corpus = load_corpus(_cfg(tmp_path))
    assert _all_docs(corpus) == sorted([b"alpha doc", b"beta doc", b"gamma doc", b"delta doc", b"epsilon doc"])
    assert corpus.stats.n_empty_skipped == 1


def test_cache_notices_a_changed_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    first = load_corpus(_cfg(path))
    assert load_corpus(_cfg(path)) is first
    path.write_text("one\ntwo\nthree\n", encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_corpus(_cfg(path)).stats.n_docs == 3
    clear_corpus_cache()
    assert load_corpus(_cfg(path)) is not first


# --- errors ----------------------------------------------------------------------------------------


def test_non_utf8_file_names_file_offset_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine line\nsecond line\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"latin1\.txt.*byte 25 \(line 3, byte 4 of the line\)"):
        load_corpus(_cfg(path))
    jpath = tmp_path / "bad.jsonl"
    jpath.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl.*line 2"):
        load_corpus(_cfg(jpath))


def test_truncated_character_at_end_of_file_is_reported(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("日本".encode()[:-1])
    with pytest.raises(DataError, match=r"cut\.txt.*byte 3"):
        load_corpus(_cfg(path))


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "cols.jsonl"
    path.write_text(json.dumps({"content": "x", "id": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cols\.jsonl.*'text'.*content, id"):
        load_corpus(_cfg(path))
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"content": ["x"]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols\.parquet.*'text'.*content"):
        load_corpus(_cfg(tmp_path / "cols.parquet"))


def test_the_bad_file_of_a_folder_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "good"}) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "no text column"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.jsonl"):
        load_corpus(_cfg(tmp_path))


def test_missing_file_unknown_extension_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match=r"no such file.*nowhere\.txt"):
        load_corpus(_cfg(tmp_path / "nowhere.txt"))
    csv = tmp_path / "table.csv"
    csv.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"table\.csv.*unknown extension '\.csv'"):
        load_corpus(_cfg(csv))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt.*no non-empty documents"):
        load_corpus(_cfg(blank))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.*notes\.md"):
        load_corpus(_cfg(empty_dir))
    with pytest.raises(DataError, match="json"):
        (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
        load_corpus(_cfg(tmp_path / "broken.jsonl"))


def test_hub_source_needs_a_name():
    with pytest.raises(DataError, match="needs a dataset name"):
        load_corpus(DataConfig(source="hf:"))


def test_an_empty_training_split_cannot_be_batched(tmp_path):
    path = tmp_path / "one.txt"
    text = next(f"d{i}" for i in range(1000) if is_heldout(f"d{i}", 0.5))
    path.write_text(text + "\n", encoding="utf-8")
    corpus = load_corpus(_cfg(path, heldout_fraction=0.5))
    assert corpus.train == () and corpus.documents("heldout") == [text.encode()]
    with pytest.raises(DataError, match="train split.*empty"):
        corpus.batches("train")


# --- raw strings ---------------------------------------------------------------------------------


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


def test_importing_data_does_not_import_datasets():
    code = "import sys, zonkey.core.data; sys.exit('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
