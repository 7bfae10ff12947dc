"""Sources: local text, JSON lines and parquet files and folders, the hub; errors that say where."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.data.helpers import all_docs, local_cfg
from zonkey.core.recipe import DataConfig
from zonkey.data import DataError, is_heldout, load_corpus


def test_txt_is_one_document_per_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("first line\n\nsecond ünïcode line that is long\r\n   \nthird\n".encode())
    corpus = load_corpus(local_cfg(path))
    assert all_docs(corpus) == sorted([b"first line", "second ünïcode line that is long".encode(), b"third"])
    assert corpus.stats.n_empty_skipped == 2
    assert corpus.stats.n_chunked_docs == 1
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfwith a byte-order mark\nnext\n")
    assert all_docs(load_corpus(local_cfg(bom, max_doc_bytes=64))) == [b"next", b"with a byte-order mark"]


def test_jsonl_reads_the_text_column_and_skips_nulls(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": f"document number {i} 🦓", "id": i} for i in range(30)] + [{"body": None, "id": 99}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    corpus = load_corpus(local_cfg(path, text_column="body"))
    assert all_docs(corpus) == sorted(f"document number {i} 🦓".encode() for i in range(30))
    assert corpus.stats.n_empty_skipped == 1
    held = {f"document number {i} 🦓".encode() for i in range(30) if is_heldout(f"document number {i} 🦓", 0.05)}
    assert set(corpus.documents("heldout")) == held


def test_parquet_and_folders_load(tmp_path):
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"text": ["alpha doc", "beta doc", ""], "n": [1, 2, 3]}).to_parquet(tmp_path / "a.parquet")
    assert all_docs(load_corpus(local_cfg(tmp_path / "a.parquet"))) == [b"alpha doc", b"beta doc"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("gamma doc\ndelta doc\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "epsilon doc"}) + "\n", encoding="utf-8")
    (tmp_path / "README.md").write_text("ignored", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("ignored too", encoding="utf-8")
    corpus = load_corpus(local_cfg(tmp_path))
    assert all_docs(corpus) == sorted([b"alpha doc", b"beta doc", b"gamma doc", b"delta doc", b"epsilon doc"])
    assert corpus.stats.n_empty_skipped == 1


def test_non_utf8_file_names_file_offset_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine line\nsecond line\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"latin1\.txt.*byte 25 \(line 3, byte 4 of the line\)"):
        load_corpus(local_cfg(path))
    jpath = tmp_path / "bad.jsonl"
    jpath.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl.*line 2"):
        load_corpus(local_cfg(jpath))


def test_truncated_character_at_end_of_file_is_reported(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("日本".encode()[:-1])
    with pytest.raises(DataError, match=r"cut\.txt.*byte 3"):
        load_corpus(local_cfg(path))


def test_missing_column_lists_the_columns(tmp_path):
    path = tmp_path / "cols.jsonl"
    path.write_text(json.dumps({"content": "x", "id": 1}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"cols\.jsonl.*'text'.*content, id"):
        load_corpus(local_cfg(path))
    pd = pytest.importorskip("pandas")
    pd.DataFrame({"content": ["x"]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(DataError, match=r"cols\.parquet.*'text'.*content"):
        load_corpus(local_cfg(tmp_path / "cols.parquet"))


def test_the_bad_file_of_a_folder_is_named(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "good"}) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": "no text column"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.jsonl"):
        load_corpus(local_cfg(tmp_path))


def test_missing_file_unknown_extension_and_empty_sources(tmp_path):
    with pytest.raises(DataError, match=r"no such file.*nowhere\.txt"):
        load_corpus(local_cfg(tmp_path / "nowhere.txt"))
    csv = tmp_path / "table.csv"
    csv.write_text("text\nhello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"table\.csv.*unknown extension '\.csv'"):
        load_corpus(local_cfg(csv))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt.*no non-empty documents"):
        load_corpus(local_cfg(blank))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.md").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty.*notes\.md"):
        load_corpus(local_cfg(empty_dir))
    with pytest.raises(DataError, match="json"):
        (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{oops\n', encoding="utf-8")
        load_corpus(local_cfg(tmp_path / "broken.jsonl"))


def test_hub_source_needs_a_name():
    with pytest.raises(DataError, match="needs a dataset name"):
        load_corpus(DataConfig(source="hf:"))


def test_importing_data_does_not_import_datasets():
    code = "import sys, zonkey.data; sys.exit('datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
