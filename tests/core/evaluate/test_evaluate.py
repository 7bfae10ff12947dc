"""Boundary metrics, gold word starts, and the level-0 evaluation on a micro model."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.evaluate.heldout import BoundaryCounter, bos_entropy, evaluate, gold_boundaries
from zonkey.core.model.network import build_model
from zonkey.data import encode_texts, load_corpus


def test_gold_boundaries_word_and_space():
    b = encode_texts(["ab cd  e"])
    g = gold_boundaries(b.tokens, b.valid)
    assert g["word"][0].nonzero().flatten().tolist() == [3, 7]
    assert g["space"][0].nonzero().flatten().tolist() == [2, 5]


def test_boundary_counter_strict_and_tolerant():
    gold = torch.tensor([[False, False, True, False, False, True, False]])
    pred = torch.tensor([[False, False, True, True, False, False, False]])
    bc = BoundaryCounter()
    bc.add("strict", pred, gold, 0)
    bc.add("tol", pred, gold, 1)
    r = bc.result()
    assert r["strict"] == {"p": 0.5, "r": 0.5, "f1": 0.5}
    assert r["tol"]["p"] == 1.0 and r["tol"]["r"] == 0.5


def test_perfect_prediction_scores_one():
    b = encode_texts(["the cat sat on the mat"])
    g = gold_boundaries(b.tokens, b.valid)["word"]
    bc = BoundaryCounter()
    bc.add("word", g.clone(), g, 0)
    assert bc.result()["word"]["f1"] == 1.0


def test_bos_entropy_excludes_first_and_padding():
    p = torch.tensor([[1.0, 0.5, 0.5, 0.0]])
    valid = torch.tensor([[True, True, True, False]])
    s, n = bos_entropy(p, valid)
    assert int(n) == 2 and math.isclose(float(s) / 2, math.log(2), rel_tol=1e-5)


def test_evaluate_returns_documented_keys_in_range():
    torch.manual_seed(0)
    rec = micro_recipe()
    model = build_model(rec)
    corpus = load_corpus(rec.data)
    res = evaluate(model, corpus, batch_bytes=rec.data.batch_bytes, max_batches=2)
    for key in ("recon_acc", "recon_acc_noise", "mean_segment_bytes", "segment_cv", "bos_entropy", "boundary", "boundary_f1"):
        assert key in res
    assert 0.0 <= res["recon_acc"] <= 1.0
    assert set(res["recon_acc_noise"]) == {"0.1", "0.3", "0.5"}
    assert set(res["boundary"]) == {"word", "space", "word_tol1", "space_tol1"}
    assert res["boundary_f1"] == max(res["boundary"]["word"]["f1"], res["boundary"]["space"]["f1"])
    # one convention per model, named: the one boundary_f1 is under
    assert res["boundary"][res["boundary_convention"]]["f1"] == res["boundary_f1"]
    assert 1.0 <= res["mean_segment_bytes"] <= rec.model.levels[0].max_segment
    assert res["eval_bytes"] > 0


def test_whitespace_baseline_reaches_perfect_word_f1():
    """The rule-based baseline puts a BOS exactly at word starts (inside a segment window)."""
    rec = micro_recipe()
    data = rec.model_dump()
    data["model"]["levels"][0]["splitter"] = {"name": "whitespace"}
    data["model"]["levels"][0]["max_segment"] = 16
    from zonkey.core.recipe import validate_recipe

    model = build_model(validate_recipe(data))
    corpus = load_corpus(rec.data)
    res = evaluate(model, corpus, batch_bytes=rec.data.batch_bytes, max_batches=2)
    assert res["boundary"]["word"]["r"] > 0.97
    assert res["boundary"]["word"]["p"] > 0.9  # forced BOS inside words longer than m cost a little


def test_sentence_starts_gold():
    from zonkey.core.evaluate.heldout import sentence_starts

    b = encode_texts(["It rains. We stay! Why? no.x Ok"])
    got = sentence_starts(b.tokens, b.valid)[0].nonzero().flatten().tolist()
    text = "It rains. We stay! Why? no.x Ok"
    assert [text[i] for i in got] == ["W", "W", "n"]


def test_two_level_evaluation_keys():
    from zonkey.core.recipe import validate_recipe

    torch.manual_seed(0)
    rec = micro_recipe().model_dump()
    rec["model"]["levels"].append({"d_model": 32, "max_segment": 8, "n_compress": 2, "heads": 2})
    rec = validate_recipe(rec)
    model = build_model(rec)
    res = evaluate(model, load_corpus(rec.data), batch_bytes=rec.data.batch_bytes, max_batches=1)
    for key in ("l1_sentence_f1", "l1_recon_acc", "l1_length_acc", "roundtrip_acc", "roundtrip_acc_aligned",
                "roundtrip_char_acc", "roundtrip0_char_acc"):
        assert 0.0 <= res[key] <= 1.0


def test_boundary_stats_measures_both_conventions():
    from zonkey.core.evaluate.heldout import boundary_stats

    text = b"ab cd ef"
    tokens = torch.tensor([list(text)])
    valid = torch.ones_like(tokens, dtype=torch.bool)
    p = torch.zeros(1, len(text))
    p[0, 0] = 1.0
    p[0, [2, 5]] = 0.9  # on the spaces: the space-led convention
    p[0, 1] = 0.3  # below threshold: not a boundary, but counts in p_bos_other
    st = boundary_stats(p, tokens, valid)
    assert st["space_f1"] == 1.0 and st["word_f1"] == 0.0
    assert abs(st["p_bos_edge"] - 0.9) < 1e-6
    # other positions: 1, 4, 7 (word starts 3 and 6 are gold too, excluded)
    assert abs(st["p_bos_other"] - 0.1) < 1e-6


def test_round_trip_takes_level_1_counts_from_its_decoded_existence(monkeypatch):
    """Force level 1's decoder to keep every slot: the decoded counts then equal m, the length
    accuracy is the share of level-1 segments that really hold m level-0 segments (the counts are
    not read from the input's own spans)."""
    import dataclasses

    from zonkey.core.evaluate.heldout import evaluate_level1
    from zonkey.core.recipe import validate_recipe

    torch.manual_seed(0)
    rec = micro_recipe().model_dump()
    rec["model"]["levels"].append({"d_model": 32, "max_segment": 4, "n_compress": 2, "heads": 2})
    rec = validate_recipe(rec)
    model = build_model(rec).eval()
    batches = load_corpus(rec.data).batches("heldout", seed=0, batch_bytes=rec.data.batch_bytes)
    batch = batches.batch(0)
    _, p1 = model.encode(batch.tokens, batch.valid, upto=2)
    own = p1.split.segments.own_span.sum(1)
    expected = float((own == 4).float().mean())

    l1 = model.levels[1]
    real = l1.denoise

    def keep_all(z, sigma, cond=None):
        out = real(z, sigma, cond)
        return dataclasses.replace(out, log_existence=torch.zeros_like(out.log_existence))

    monkeypatch.setattr(l1, "denoise", keep_all)
    res = evaluate_level1(model, [batch])
    assert res["l1_length_acc"] == pytest.approx(expected)
    assert expected < 1.0  # some level-1 segments hold fewer than m: their counts are now wrong
