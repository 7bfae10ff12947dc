"""Infill scores, baselines and the user-items reader, on hand-made inputs."""

from __future__ import annotations

from collections import Counter

import pytest

from zonkey.core.evaluate.infill import (
    InfillItemsError,
    baselines,
    char_accuracy,
    read_infill_items,
    score_fills,
)


def test_char_accuracy_is_one_minus_edit_distance_over_the_gold():
    assert char_accuracy("car", "cat") == pytest.approx(2 / 3)
    assert char_accuracy("cats", "cat") == pytest.approx(2 / 3)  # one insertion
    assert char_accuracy("at", "cat") == pytest.approx(2 / 3)  # one deletion, not a shift of all bytes
    assert char_accuracy("cat", "cat") == 1.0
    assert char_accuracy("", "cat") == 0.0
    assert char_accuracy("a much longer wrong fill", "cat") == 0.0  # clamped
    assert char_accuracy("", "") == 1.0 and char_accuracy("x", "") == 0.0


def test_score_fills_counts_exact_matches_and_em_at_k():
    res = score_fills(["the", "dog", "x"], [["the"], ["cat", "dog", "a", "b", "c", "mat"], ["a", "b", "c", "d", "e", "f"]],
                      ["the", "mat", "f"])
    assert res["exact_match"] == pytest.approx(1 / 3)
    assert res["em_at_k"] == {"1": pytest.approx(1 / 3), "3": pytest.approx(1 / 3), "5": pytest.approx(1 / 3)}
    res = score_fills(["a"], [["a", "b", "gold"]], ["gold"])
    assert res["exact_match"] == 0.0 and res["em_at_k"]["3"] == 1.0 and res["em_at_k"]["1"] == 0.0


def test_baselines_fill_the_top_and_sampled_tokens():
    counts = Counter({"the": 10, "of": 5, "a": 3, "cat": 1, "dog": 1, "mat": 1})
    golds = ["the", "of", "cat", "zebra"]
    b = baselines(golds, counts, seed=0)
    assert b["the"]["exact_match"] == 0.25 and b["the"]["em_at_k"]["5"] == 0.25
    assert b["unigram"]["fill"] == "the" and b["unigram"]["exact_match"] == 0.25
    assert b["unigram"]["em_at_k"]["3"] == 0.5 and b["unigram"]["em_at_k"]["5"] == 0.75  # the, of, a, cat, dog
    assert b["sampled"] == baselines(golds, counts, seed=0)["sampled"]
    assert 0.0 <= b["sampled"]["exact_match"] <= b["sampled"]["em_at_k"]["5"] <= 0.75


def test_infill_items_are_read_and_their_answers_stripped(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"prefix": "The cat ", "suffix": " on the mat.", "answer": " sat "}\n\n'
                 '{"prefix": "", "suffix": " end", "answer": "The"}\n')
    assert read_infill_items(f) == [("The cat ", " on the mat.", "sat"), ("", " end", "The")]


@pytest.mark.parametrize("line, message", [
    ('{"prefix": "a", "suffix": "b"', "invalid JSON"),
    ('["a", "b", "c"]', "JSON object"),
    ('{"prefix": "a", "suffix": "b"}', "'answer' must be a string"),
    ('{"prefix": "a", "suffix": 3, "answer": "c"}', "'suffix' must be a string"),
    ('{"prefix": "", "suffix": "", "answer": "c"}', "both empty"),
])
def test_a_malformed_line_names_the_file_and_line(tmp_path, line, message):
    f = tmp_path / "items.jsonl"
    f.write_text('{"prefix": "a ", "suffix": " b", "answer": "c"}\n' + line + "\n")
    with pytest.raises(InfillItemsError) as err:
        read_infill_items(f)
    assert str(err.value).startswith(f"{f}:2: ") and message in str(err.value) and "\n" not in str(err.value)


def test_unreadable_empty_and_non_utf8_item_files(tmp_path):
    with pytest.raises(InfillItemsError, match="items.jsonl"):
        read_infill_items(tmp_path / "items.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(InfillItemsError, match="no items"):
        read_infill_items(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"prefix": "a", "suffix": "b", "answer": "c"}\n\xff\n')
    with pytest.raises(InfillItemsError, match=r"bad.jsonl:2: not valid UTF-8"):
        read_infill_items(bad)


@pytest.mark.parametrize("line", ['[' * 5000 + ']' * 5000, '{"prefix": "\\ud800", "suffix": "", "answer": "a"}'])
def test_deep_or_broken_items_json_is_one_line(tmp_path, line):
    from zonkey.core.evaluate.infill import InfillItemsError, read_infill_items

    f = tmp_path / "items.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(InfillItemsError) as info:
        read_infill_items(f)
    assert str(info.value).startswith(f"{f}:1") and "\n" not in str(info.value)
