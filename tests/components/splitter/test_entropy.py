"""The ``entropy`` splitter (BLT's rule over a byte n-gram): its tables against a direct count, θ by
bisection to the target length, BOS exactly where the entropy exceeds θ, clear errors, and the
fitted tables saved with a trained run (weights and EMA alike)."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import pytest
import torch

from tests.components.context import ctx
from zonkey.components.splitter import byte_entropy as be
from zonkey.components.splitter.entropy import EntropySplitter, NotFittedError
from zonkey.core.contracts.registry import registry
from zonkey.data import encode_texts

TEXT = [b"the cat sat on the mat. the dog sat on the log. a cat and a dog ran to the mat.",
        b"then the cat saw the dog and the dog saw the cat; both sat down on the old mat."]


def _direct_entropy(chunks, order, min_count):
    """Entropy (bits) of every kept context, written out from the formula of the module docstring."""
    seqs = [[be.START] * (order - 1) + list(c) for c in chunks]
    dists: dict[int, dict[tuple, list[float]]] = {}
    out: dict[tuple[int, tuple], float] = {}
    for c in range(order):
        pairs: Counter = Counter()
        for s in seqs:
            for i in range(order - 1, len(s)):
                pairs[(tuple(s[i - c:i]), s[i])] += 1
        n1 = sum(1 for v in pairs.values() if v == 1)
        n2 = sum(1 for v in pairs.values() if v == 2)
        d = min(max(n1 / (n1 + 2 * n2), 0.05), 0.95) if n1 and n1 + 2 * n2 else 0.5
        by_ctx: dict[tuple, dict[int, int]] = defaultdict(dict)
        for (h, w), v in pairs.items():
            by_ctx[h][w] = v
        dists[c] = {}
        for h, nxt in by_ctx.items():
            total = sum(nxt.values())
            back = dists[c - 1].get(h[1:]) if c else [1 / 256] * 256
            if total < min_count or back is None:
                continue
            lam = d * len(nxt) / total
            p = [lam * q for q in back]
            for w, v in nxt.items():
                p[w] += max(v - d, 0) / total
            dists[c][h] = p
            out[(c, h)] = -sum(q * math.log2(q) for q in p if q > 0)
    return out


def _pack(h):
    k = 0
    for sym in h:
        k = (k << be.BITS) | sym
    return k


def test_tables_match_a_direct_count():
    order = 3
    tables = be.fit_tables(TEXT, order=order, capacity=10_000, min_count=2)
    want = _direct_entropy(TEXT, order, 2)
    assert tables.kept == [sum(1 for c, _ in want if c == o) for o in range(order)]
    for (c, h), bits in want.items():
        row = tables.keys[c, :tables.kept[c]].tolist()
        got = int(tables.entropy[c, row.index(_pack(h))]) / be.ENTROPY_SCALE
        assert got == pytest.approx(bits, abs=1e-4), (c, h)
    assert tables.train_bytes == sum(len(t) for t in TEXT)
    assert (tables.keys[:, :max(tables.kept)].diff(dim=1)[tables.keys[:, 1:max(tables.kept)] != be.PAD_KEY] > 0).all()


def test_capacity_keeps_the_most_frequent_contexts():
    small = be.fit_tables(TEXT, order=3, capacity=4, min_count=1)
    assert small.kept[0] == 1 and all(k <= 4 for k in small.kept)
    counts = Counter(b for t in TEXT for b in t)
    top = {b for b, _ in counts.most_common(3)}
    assert top <= set(small.keys[1, :small.kept[1]].tolist())


def test_position_entropy_reads_the_longest_kept_context():
    tables = be.fit_tables(TEXT, order=3, capacity=10_000, min_count=2)
    tokens = encode_texts(["the cat"]).tokens
    got = be.position_entropy(tokens, tables.keys, tables.entropy)[0].tolist()
    want = _direct_entropy(TEXT, 3, 2)
    sym = [be.START, be.START] + list(b"the cat")
    for i, g in enumerate(got):
        h = tuple(sym[i:i + 2])
        c = 2 if (2, h) in want else 1 if (1, h[1:]) in want else 0
        assert g / be.ENTROPY_SCALE == pytest.approx(want[(c, h[2 - c:])], abs=1e-4)


def _fitted(**fields) -> EntropySplitter:
    sp = registry("splitter").config("entropy", **fields).build(ctx())
    assert isinstance(sp, EntropySplitter)
    sp.fit(TEXT * 4)
    return sp


@pytest.mark.parametrize("target", [3.0, 5.0])
def test_threshold_is_bisected_to_the_target_length(target):
    sp = _fitted(target_segment=target, order=3)
    batch = encode_texts([t.decode() for t in TEXT * 4])
    out = sp(torch.zeros(*batch.tokens.shape, 16), batch.valid, sample=False, tokens=batch.tokens)
    length = float(batch.valid.sum()) / float(out.bos.sum())
    assert length == pytest.approx(target, rel=0.15)


def test_bos_exactly_where_the_entropy_exceeds_theta():
    sp = _fitted(order=3, target_segment=4.0)
    batch = encode_texts(["the dog ran to the old log", "a mat"])
    p = sp.bos_probabilities(torch.zeros(2, batch.tokens.shape[1], 16), batch.valid, tokens=batch.tokens)
    high = (sp.entropy_bits(batch.tokens) > sp.threshold_bits) & batch.valid
    assert torch.equal(p > 0.5, high)
    assert bool((p[~batch.valid] == 0).all())
    # the rule is a baseline of bytes, not of vectors: the input vectors change nothing
    q = sp.bos_probabilities(torch.randn(2, batch.tokens.shape[1], 16), batch.valid, tokens=batch.tokens)
    assert torch.equal(p, q)


def test_a_given_threshold_is_used_as_it_is():
    sp = _fitted(order=3, threshold=2.5)
    assert sp.threshold_bits == pytest.approx(2.5, abs=1e-4)


def test_clear_errors():
    sp = registry("splitter").config("entropy").build(ctx())
    batch = encode_texts(["abc"])
    with pytest.raises(NotFittedError, match="zonkey train"):
        sp(torch.zeros(1, 3, 16), batch.valid, tokens=batch.tokens)
    sp.fit(TEXT)
    with pytest.raises(ValueError, match="byte tokens"):
        sp(torch.zeros(1, 3, 16), batch.valid)
    with pytest.raises(ValueError, match="level 0"):
        registry("splitter").config("entropy").build(ctx(level=1))
    with pytest.raises(ValueError, match="no training text"):
        registry("splitter").config("entropy").build(ctx()).fit([b""])
    with pytest.raises(Exception, match="order"):
        registry("splitter").config("entropy", order=9)


def test_a_trained_run_keeps_the_fitted_tables(tmp_path):
    from safetensors.torch import load_file

    from tests.helpers import micro_recipe
    from zonkey.core.model.network import ZonkeyModel
    from zonkey.core.recipe import recipe_to_dict, validate_recipe
    from zonkey.core.train.trainer import train

    data = recipe_to_dict(micro_recipe(steps=2))
    data["model"]["levels"][0]["splitter"] = {"name": "entropy", "target_segment": 4.0}
    run = tmp_path / "run"
    train(validate_recipe(data), run, progress=False)
    report = json.loads((run / "splitter-l0.json").read_text())
    assert report["target_segment"] == 4.0 and report["mean_segment"] == pytest.approx(4.0, rel=0.15)
    a = ZonkeyModel.from_run(run).levels[0].splitter
    b = ZonkeyModel.from_run(run, use_ema=False).levels[0].splitter
    assert isinstance(a, EntropySplitter) and a.fitted
    assert a.threshold_bits == pytest.approx(report["threshold_bits"])
    assert torch.equal(a.keys, b.keys) and torch.equal(a.entropy, b.entropy)
    ema = load_file(str(run / "ema.safetensors"))
    assert ema["levels.0.splitter.keys"].dtype == torch.int64  # the weight average leaves tables exact
    assert torch.equal(ema["levels.0.splitter.keys"], a.keys)
