"""Infilling (§9.2): the context is never changed, only the gap is denoised, the gap length is
searched and scored, and a gap at the start or the end works, on one and on two levels."""

from __future__ import annotations

import pytest
import torch

import zonkey
from tests.helpers import micro_recipe
from zonkey.core.contracts.outputs import DenoiseOutput
from zonkey.core.generate.infill import _Clamp, _scores, _windows, encode_to_level, infill, infill_many
from zonkey.core.model.network import build_model
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.recipe import validate_recipe

pytestmark = pytest.mark.usefixtures("single_thread")


def _one_level():
    torch.manual_seed(0)
    return build_model(micro_recipe())


def _two_level():
    rec = validate_recipe({"model": {"levels": [
        {"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
         "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0}},
        {"d_model": 32, "max_segment": 6, "n_compress": 2, "heads": 2},
    ]}, "sample": {"level_steps": 2, "infill_gap": [1, 3]}})
    torch.manual_seed(0)
    return build_model(rec)


def _spy_compress(level):
    """Record every (x, log_existence) the level's compressor receives."""
    real = level.compress
    seen = []

    def spy(x, log_existence):
        seen.append((x.clone(), log_existence.clone()))
        return real(x, log_existence)

    level.compress = spy
    return seen


@pytest.mark.parametrize("make,level", [(_one_level, 0), (_two_level, 1), (_two_level, 0)], ids=["1lvl", "2lvl", "2lvl-at-0"])
def test_prefix_and_suffix_vectors_stay_exactly_unchanged(make, level):
    m = make()
    prefix, suffix = "Bob is a ", " player in the NBA"
    seen = _spy_compress(m.levels[level])
    res = infill(m, prefix, suffix, level=level, gap=(1, 3), steps=3, seed=0)
    p, q = res.prefix_vectors.shape[0], res.suffix_vectors.shape[0]
    want_p, want_s = encode_to_level(m, [prefix, suffix], level)
    assert torch.equal(res.prefix_vectors, want_p) and torch.equal(res.suffix_vectors, want_s)
    if level == 0:
        assert torch.equal(want_p, m.table[torch.tensor(list(prefix.encode()))])
    assert res.slots.shape[0] == p + res.gap_len + q
    assert torch.equal(res.slots[:p], want_p) and torch.equal(res.slots[p + res.gap_len:], want_s)
    # every re-compression (one per step) saw existence 1 inside the document and 0 past its end
    assert len(seen) == 3
    for x, le in seen:
        inside = torch.isfinite(le)
        assert bool((le[inside] == 0).all()) and bool(inside[:, 0].all())
        assert bool((x[~inside] == 0).all())


def test_only_gap_slots_differ_from_the_known_document_in_every_step():
    m = _one_level()
    seen = _spy_compress(m.levels[0])
    res = infill(m, "abcdefghij", "klmnopqrst", gap=4, steps=3, seed=1)  # 24 bytes > m = 8: sliding windows
    doc = torch.cat([res.prefix_vectors, torch.zeros(4, res.prefix_vectors.shape[1]), res.suffix_vectors])
    for x, _le in seen:
        assert x.shape[0] == 8 + 4 - 1  # the windows overlapping the gap
        for r in range(x.shape[0]):
            start = max(0, 10 - 8 + 1) + r
            for j in range(8):
                pos = start + j
                if pos < doc.shape[0] and not 10 <= pos < 14:
                    # the known vector, exactly, as the objective's re-compression puts it on the sphere
                    assert torch.equal(x[r, j], to_sphere(doc[pos][None])[0])


def test_gap_at_start_and_at_end():
    m = _one_level()
    start = infill(m, "", " is a city.", gap=(2, 3), steps=2)
    end = infill(m, "The city is", "", gap=(2, 3), steps=2)
    assert start.text.endswith(" is a city.") and start.prefix_vectors.shape[0] == 0
    assert end.text.startswith("The city is") and end.suffix_vectors.shape[0] == 0
    assert len(start.raw) == start.gap_len and len(end.raw) == end.gap_len


def test_gap_length_search_keeps_the_best_scoring_candidate():
    m = _one_level()
    res = infill(m, "Bob is a ", " player", gap=(2, 5), steps=2, seed=0)
    assert [c["gap_len"] for c in res.candidates] == [2, 3, 4, 5]
    best = max(res.candidates, key=lambda c: c["score"])
    assert res.gap_len == best["gap_len"] and res.score == pytest.approx(best["score"], abs=1e-6)
    assert -1.0 <= res.score <= 1.0
    assert res.text == "Bob is a " + res.gap + " player"
    assert len(res.raw) == res.gap_len  # level 0: the gap holds exactly gap_len bytes


def test_infill_is_deterministic_and_batched_pairs_match_single_calls():
    m = _one_level()
    a = infill(m, "Bob is a ", " player", gap=(1, 3), steps=2, seed=4)
    b = infill(m, "Bob is a ", " player", gap=(1, 3), steps=2, seed=4)
    assert a.as_dict() == b.as_dict()
    many = infill_many(m, [("Bob is a ", " player"), ("", " end.")], gap=(1, 3), steps=2, seed=4)
    assert [r.text[:9] for r in many[:1]] == ["Bob is a "] and many[1].text.endswith(" end.")


def test_level1_gap_length_follows_level0_existence():
    m = _two_level()
    real = m.levels[0].denoise
    j = 3

    def sharp(z, sigma, cond=None):
        out = real(z, sigma, cond)
        le = torch.zeros_like(out.log_existence)
        le[:, j:] = float("-inf")
        return DenoiseOutput(out.x_hat, out.bos_logits, le, out.rough_bos_logits)

    m.levels[0].denoise = sharp
    res = infill(m, "Bob is a ", " player in the NBA", gap=(1, 3), steps=2)
    assert res.level == 1
    # each gap position is a level-0 latent decoded to one segment of exactly j bytes
    assert [c["bytes"] for c in res.candidates] == [g * j for g in (1, 2, 3)]
    assert len(res.raw) == res.gap_len * j


def test_score_is_one_for_a_perfect_reconstruction_and_minus_one_for_the_opposite():
    gen = torch.Generator().manual_seed(0)
    pre, suf = torch.randn(3, 4), torch.randn(2, 4)
    w = _windows([(pre, 2, suf)], 8, gen)  # 7 positions in one 8-slot window: 1 slot past the end
    clamp = _Clamp(None, w)
    le = torch.zeros(w.exists.shape).masked_fill(~w.exists, float("-inf"))
    clamp.raw = DenoiseOutput(w.known[w.idx] * 3.0, le, le, None)
    assert _scores(clamp).tolist() == pytest.approx([1.0])
    clamp.raw = DenoiseOutput(-w.known[w.idx], le, torch.zeros_like(le), None)  # opposite, and text never ends
    assert _scores(clamp).tolist() == pytest.approx([-5 / 6])  # 5 context slots at −1, 1 past-end slot at 0


def test_errors():
    m = _one_level()
    with pytest.raises(ValueError, match="both empty"):
        infill(m, "", "")
    with pytest.raises(ValueError, match="gap length range"):
        infill(m, "a", "b", gap=(3, 2))
    with pytest.raises(ValueError, match="level 1 does not exist"):
        infill(m, "a", "b", level=1)


def test_model_infill_api():
    m = _one_level()
    text = zonkey.infill(m, "Bob is a ", " player", gap=2, steps=1)
    assert text.startswith("Bob is a ") and text.endswith(" player")
    assert isinstance(text, str)
    assert zonkey.infill_details(m, "Bob is a ", " player", gap=2, steps=1).text == text
    d = zonkey.infill_details(m, "Bob is a ", " player", gap=(1, 2), steps=1)
    assert isinstance(d, zonkey.InfillDetails)
    assert d.text == "Bob is a " + d.gap + " player" and d.level == 0 and d.raw.decode("utf-8", "replace") == d.gap
    assert [c.gap_len for c in d.candidates] == [1, 2]
    assert all(isinstance(c, zonkey.InfillCandidate) and isinstance(c.score, float) for c in d.candidates)
    assert abs(d.score - max(c.score for c in d.candidates)) < 1e-6
    assert d.as_dict()["candidates"][0].keys() == {"gap_len", "gap", "bytes", "score"}


def test_windows_overlap_the_gap_and_hold_span_positions():
    gen = torch.Generator().manual_seed(0)
    pre, suf = torch.randn(10, 4), torch.randn(10, 4)
    w = _windows([(pre, 4, suf)], 8, gen)
    assert w.cand.shape[0] == 8 + 4 - 1  # every 8-slot window that overlaps positions 10..13
    assert bool(w.exists.all()) and not bool(w.past.any())
    short = _windows([(pre, 4, suf)], 8, gen, span=3)
    assert short.cand.shape[0] == 3 + 4 - 1
    assert bool(short.exists[:, :3].all()) and not bool(short.exists[:, 3:].any())
    gap_hits = short.is_gap[short.idx] & short.exists
    assert bool(gap_hits.any(1).all())  # each window holds at least one gap position
    end = _windows([(pre, 3, torch.zeros(0, 4))], 8, gen)  # continuation: windows run past the end
    assert bool(end.past.any()) and not bool((end.past & end.exists).any())
