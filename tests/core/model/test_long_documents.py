"""Long documents at inference: the bounded-memory path (pieces, text batches, segment batches) gives
the results of one pass over everything."""

from __future__ import annotations

import pytest
import torch

import zonkey.core.model.inference as inference
import zonkey.core.model.level as level_mod
from tests.helpers import micro_recipe
from zonkey.core.model.inference import encode_to_level, reconstruct_texts, split_texts, text_batches
from zonkey.core.model.network import build_model


@pytest.fixture(scope="module")
def model():
    recipe = micro_recipe()
    data = recipe.model_dump()
    data["model"]["levels"].append({**data["model"]["levels"][0], "d_model": 32})
    levels = data["model"]["levels"]
    for lv in levels:
        lv["splitter"]["window"] = 16
    from zonkey.core.recipe import validate_recipe

    torch.manual_seed(0)
    m = build_model(validate_recipe(data, source="<micro2>")).eval()
    for lv in m.levels:  # random heads: cuts that depend on the text (a flat head only cuts at max_segment)
        torch.nn.init.normal_(lv.splitter.head.weight, std=0.5)
        torch.nn.init.constant_(lv.splitter.head.bias, -0.5)
    return m


def _text(n: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(seed)
    words = ["the", "cat", "sat", "on", "a", "mat,", "and", "then", "1987", "ran."]
    idx = torch.randint(0, len(words), (n // 3,), generator=g).tolist()
    return " ".join(words[i] for i in idx)[:n]


def _one_pass(monkeypatch, model) -> None:
    """Switch the bounded-memory path off: one batch, one piece, one compression call."""
    monkeypatch.setattr(level_mod, "SEGMENT_BATCH", 10**9)
    monkeypatch.setattr(inference, "SEGMENT_BATCH", 10**9)
    monkeypatch.setattr(inference, "BATCH_BYTES", 10**12)
    for lv in model.levels:
        monkeypatch.setattr(lv.splitter, "piece", 10**9)


def test_streamed_split_and_reconstruction_equal_one_pass(model, monkeypatch):
    texts = [_text(12_000), _text(700, seed=1), _text(5, seed=2)]
    monkeypatch.setattr(level_mod, "SEGMENT_BATCH", 97)
    monkeypatch.setattr(inference, "SEGMENT_BATCH", 97)
    monkeypatch.setattr(inference, "BATCH_BYTES", 4096)
    for lv in model.levels:
        monkeypatch.setattr(lv.splitter, "piece", 500)
    assert len(text_batches(texts)) == 2
    streamed = split_texts(model, texts)
    recon = reconstruct_texts(model, texts)
    top = encode_to_level(model, texts, 2)
    with monkeypatch.context() as mp:
        _one_pass(mp, model)
        full = split_texts(model, texts)
        recon_full = reconstruct_texts(model, texts)
        top_full = encode_to_level(model, texts, 2)
    for a, b in zip(streamed, full, strict=True):
        assert a.starts == b.starts
        assert a.levels is not None and b.levels is not None
        assert [lv["segments"] for lv in a.levels] == [lv["segments"] for lv in b.levels]
        assert max(abs(x - y) for x, y in zip(a.p_bos, b.p_bos, strict=True)) < 1e-5
    assert recon == recon_full
    for a, b in zip(top, top_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert len(streamed[0].starts) > 12_000 / 8  # the long text is really cut everywhere along it


def test_text_batches_keep_every_text_once_and_bound_the_padding():
    texts = ["a" * n for n in (10, 70_000, 3, 500, 500, 20_000)]
    groups = text_batches(texts)
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    for g in groups:
        longest = max(len(texts[i]) for i in g)
        assert len(g) == 1 or len(g) * longest <= inference.BATCH_BYTES
    assert text_batches(["ab", "c"]) == [[0, 1]]


def test_reconstruction_holds_no_batch_and_no_input_vectors_while_it_decodes(model, monkeypatch):
    """While level 0 decodes batch after batch, the level's sequence, its segment vectors and every
    earlier batch's slots are already freed (a slice of the vectors would keep them alive)."""
    import weakref

    monkeypatch.setattr(inference, "SEGMENT_BATCH", 50)
    encode, decode = model.encode, model.levels[0].decode
    held: dict[str, weakref.ref] = {}
    slots: list[weakref.ref] = []
    alive: list[list[str]] = []

    def encode_spy(*args, **kwargs):
        passes = encode(*args, **kwargs)
        held["sequence"] = weakref.ref(passes[0].x)
        held["segment vectors"] = weakref.ref(passes[0].split.segments.vectors)
        return passes

    def decode_spy(*args, **kwargs):
        alive.append([k for k, r in held.items() if r() is not None]
                     + [f"slots of batch {i}" for i, r in enumerate(slots) if r() is not None])
        out = decode(*args, **kwargs)
        slots.append(weakref.ref(out.x_hat))
        return out

    monkeypatch.setattr(model, "encode", encode_spy)
    monkeypatch.setattr(model.levels[0], "decode", decode_spy)
    text = _text(3000)
    got = reconstruct_texts(model, [text])
    assert len(alive) > 5  # the document really was decoded in many batches
    assert alive == [[]] * len(alive)
    monkeypatch.undo()
    assert got == reconstruct_texts(model, [text])  # the spies changed nothing
