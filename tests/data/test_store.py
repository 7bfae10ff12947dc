"""Memory-mapped sources: the same corpus as reading every text into lists, the bundled sample's
chunks unchanged, a held-out split that depends on nothing but the key, and hub revisions."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.helpers import local_cfg
from zonkey.core.recipe import DataConfig, load_recipe
from zonkey.data import DataError, is_heldout, load_corpus, sources
from zonkey.data import corpus as corpus_mod
from zonkey.data.store import LazyChunks

#: sha256 over (length, document id, bytes) of every chunk of the bundled sample as recipes/tiny.yaml
#: (max_doc_bytes 512) and recipes/wiki.yaml (1536) chunk it: every published figure rests on these
BUNDLED = {
    "tiny": {"train": (13550, "c361b88f3daf0287c533dcbde2e99b0af693ef98ef43663ebbe71d18231d96db"),
             "heldout": (733, "72219108f328eca79f0231cec78bf9862ecb492afb602da3d6b48e85cd14efea")},
    "wiki": {"train": (9519, "b8c7e70eabb2f3da3f5609084cdf0d66629b5b55d9d65f04cc45fe8b03c1a9a2"),
             "heldout": (523, "2c09ede8937307ad336131ffc97c18c406bc2296be504f7d99f7f43aba7084f7")},
}


def _digest(chunks, docs) -> tuple[int, str]:
    h = hashlib.sha256()
    for chunk, d in zip(chunks, docs, strict=True):
        h.update(len(chunk).to_bytes(4, "big"))
        h.update(int(d).to_bytes(4, "big"))
        h.update(chunk)
    return len(chunks), h.hexdigest()


@pytest.mark.parametrize("recipe", sorted(BUNDLED))
def test_the_bundled_sample_is_split_and_chunked_as_before(recipe):
    corpus = load_corpus(load_recipe(recipe).data, cache=False)
    assert _digest(corpus.train, corpus.train_doc) == BUNDLED[recipe]["train"]
    assert _digest(corpus.heldout, corpus.heldout_doc) == BUNDLED[recipe]["heldout"]


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["river", "city", "Zürich", "naïve", "日本語", "emoji 🦓", "a", "the", "of", ""]
    out = []
    for i in range(n):
        k = rng.choice([0, 1, 3, 12, 40, 90])
        out.append(f"doc{i} " + " ".join(rng.choice(words) for _ in range(k)) if k else rng.choice(["", "  "]))
    return out


def _folder(tmp_path, n=120, seed=0):
    texts = _texts(n, seed)
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("\n".join(texts[:40]) + "\n", encoding="utf-8")
    jsonl = [json.dumps({"text": t}) for t in texts[40:80]] + ['{"text": null}']
    (root / "sub" / "b.jsonl").write_text("\n".join(jsonl) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": texts[80:]}), root / "sub" / "c.parquet")
    return root


def _in_memory(cfg: DataConfig):
    """The corpus as before: every text of the source read into a list, then split and chunked."""
    files = sources.find_files(sources.Path(cfg.source))
    texts: list[str | None] = []
    for ext in sources.SUPPORTED_EXTENSIONS:
        group = [f for f in files if f.suffix.lower() == ext]
        if group:
            col = sources._load_files(sources._BUILDERS[ext], group, cfg.text_column)
            texts.extend(v for p in col.pieces for v in p.to_pylist())
    raw = sources._collect(((None, t) for t in texts), text_is_key=True)
    return corpus_mod._build_in_memory(cfg, raw)


@pytest.mark.parametrize("kw", [{}, {"max_docs": 20}, {"max_doc_bytes": 48, "heldout_fraction": 0.3}])
def test_memory_mapped_corpus_equals_reading_everything_into_lists(tmp_path, kw):
    cfg = local_cfg(_folder(tmp_path), **{"max_doc_bytes": 16, "batch_bytes": 64, **kw})
    lazy = load_corpus(cfg, cache=False)
    eager = _in_memory(cfg)
    assert isinstance(lazy.train, LazyChunks) and isinstance(eager.train, tuple)
    assert list(lazy.train) == list(eager.train) and list(lazy.heldout) == list(eager.heldout)
    assert list(lazy.train_doc) == list(eager.train_doc) and list(lazy.heldout_doc) == list(eager.heldout_doc)
    assert lazy.stats == eager.stats and lazy.stats.n_chunked_docs > 0 and lazy.stats.n_empty_skipped > 1
    assert lazy.documents("heldout") == eager.documents("heldout")
    a, b = lazy.batches("train", seed=3), eager.batches("train", seed=3)
    for step in range(2 * a.steps_per_epoch):
        x, y = a.batch(step), b.batch(step)
        assert x.tokens.equal(y.tokens) and x.valid.equal(y.valid) and x.doc_index.equal(y.doc_index)


def test_heldout_split_depends_only_on_each_documents_key(tmp_path):
    texts = [t for t in _texts(300, 1) if t.strip()]
    fraction = 0.2
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("\n".join(texts[:150]) + "\n", encoding="utf-8")
    shuffled = texts[:150][::-1] + texts[150:]  # other order, other neighbours
    random.Random(0).shuffle(shuffled)
    two.write_text("\n".join(shuffled) + "\n", encoding="utf-8")
    cfg = {"max_doc_bytes": 4096, "batch_bytes": 4096, "heldout_fraction": fraction}
    held_one = set(load_corpus(local_cfg(one, **cfg)).documents("heldout"))
    held_two = set(load_corpus(local_cfg(two, **cfg)).documents("heldout"))
    expected = {t.encode() for t in texts if is_heldout(t, fraction)}
    assert held_two == expected and held_one == {t.encode() for t in texts[:150] if is_heldout(t, fraction)}
    assert held_one <= held_two and held_one


def test_hub_source_takes_config_and_revision(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, *, split, revision=None):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_dict({"text": ["alpha beta", "", "gamma delta epsilon"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus(DataConfig(source="hf:org/name:cfg@v1.2", split="train", max_doc_bytes=8), cache=False)
    assert calls == [("org/name", "cfg", "train", "v1.2")]
    assert corpus.stats.n_docs == 2 and corpus.stats.n_empty_skipped == 1
    load_corpus(DataConfig(source="hf:org/name"), cache=False)
    assert calls[-1] == ("org/name", None, "train", None)
    with pytest.raises(DataError, match="needs a dataset name"):
        load_corpus(DataConfig(source="hf:org/name@"), cache=False)


def test_lazy_chunks_compare_and_index_like_a_tuple(tmp_path):
    corpus = load_corpus(local_cfg(_folder(tmp_path)), cache=False)
    chunks = corpus.train
    as_tuple = tuple(chunks)
    assert chunks == as_tuple and chunks[-1] == as_tuple[-1] and chunks[2:5] == list(as_tuple[2:5])
    assert isinstance(chunks, LazyChunks) and np.array_equal(chunks.lengths, [len(c) for c in as_tuple])
    with pytest.raises(IndexError):
        chunks[len(chunks)]
