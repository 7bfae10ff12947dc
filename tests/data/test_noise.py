"""Noisy held-out text (``zonkey eval --noise typos=RATE``): the spec, the edit rate, seeding, and the
corpus whose held-out side (only) is noisy."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app
from zonkey.data import load_corpus
from zonkey.data.noise import (
    EditCounts,
    NoiseSpec,
    NoiseSpecError,
    add_typos,
    noisy_corpus,
    noisy_documents,
    parse_noise,
)


@pytest.mark.parametrize(("spec", "msg"), [("typos", "KIND=RATE"), ("=0.1", "KIND=RATE"), ("blur=0.1", "unknown noise"),
                                           ("typos=abc", "not a number"), ("typos=1.5", "between 0 and 1"),
                                           ("typos=-0.1", "between 0 and 1")])
def test_bad_specs_say_what_is_wrong(spec, msg):
    with pytest.raises(NoiseSpecError, match=msg) as info:
        parse_noise(spec)
    assert "\n" not in str(info.value)


def test_a_spec_reads_back():
    assert parse_noise("typos=0.05") == NoiseSpec("typos", 0.05)
    assert str(parse_noise(" typos = 0.1")) == "typos=0.1"


def test_the_edit_rate_and_kinds():
    text = "the quick brown fox jumps over the lazy dog " * 200
    c = EditCounts()
    noisy = add_typos(text, 0.05, random.Random(0), c)
    assert c.chars == len(text) and c.edits / c.chars == pytest.approx(0.05, abs=0.01)
    assert min(c.inserted, c.deleted, c.substituted) > 0.2 * c.edits
    assert len(noisy) == len(text) + c.inserted - c.deleted
    assert add_typos(text, 0.0, random.Random(0)) == text
    every = EditCounts()
    add_typos("abc", 1.0, random.Random(1), every)
    assert every.edits == 3


def test_noise_is_seeded_per_document_and_stays_utf8():
    docs = ["Zürich liegt am See. ".encode() * 20, b"plain ascii text " * 20]
    a, _ = noisy_documents(docs, parse_noise("typos=0.2"), seed=3)
    b, _ = noisy_documents(docs, parse_noise("typos=0.2"), seed=3)
    c, _ = noisy_documents(docs[1:], parse_noise("typos=0.2"), seed=3)
    d, _ = noisy_documents(docs, parse_noise("typos=0.2"), seed=4)
    assert a == b and a != d and a[0] != docs[0]
    assert c[0] == noisy_documents([docs[1]], parse_noise("typos=0.2"), seed=3)[0][0]
    for x in a:
        x.decode("utf-8")  # strict: every edit is a whole character


def test_only_the_heldout_side_is_noisy():
    from tests.helpers import micro_recipe

    corpus = load_corpus(micro_recipe().data)
    noisy, info = noisy_corpus(corpus, parse_noise("typos=0.1"), seed=0)
    assert noisy.train == corpus.train and noisy.heldout != corpus.heldout
    assert info["edits"] > 0 and info["spec"] == "typos=0.1"
    assert max(len(c) for c in noisy.heldout) <= corpus.config.max_doc_bytes
    assert len(noisy.documents("heldout")) == len(corpus.documents("heldout"))


def test_eval_with_noise(tmp_path):
    run = train_micro_run(tmp_path, steps=2)
    r = CliRunner().invoke(app, ["eval", str(run), "--samples", "0", "--infill", "0", "--max-batches", "1",
                                 "--noise", "typos=0.05", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["noise"]["rate"] == 0.05 and res["noise"]["edits"] > 0
    r = CliRunner().invoke(app, ["eval", str(run), "--samples", "0", "--infill", "0", "--noise", "typos=2"])
    assert r.exit_code == 2 and "between 0 and 1" in r.output and "Traceback" not in r.output
