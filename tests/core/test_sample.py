"""The sampler: deterministic under a seed, length set by existence, valid text out."""

from __future__ import annotations

import torch

from tests.helpers import micro_recipe
from zonkey.core.model import build_model
from zonkey.core.sample import sample
from zonkey.core.shapes import DenoiseOutput


def _model():
    torch.manual_seed(0)
    return build_model(micro_recipe())


def test_sampler_is_deterministic_under_a_seed():
    m = _model()
    a = sample(m, 3, steps=3, seed=7).texts
    b = sample(m, 3, steps=3, seed=7).texts
    assert a == b
    assert len(a) == 3 and all(isinstance(t, str) for t in a)


def test_output_length_follows_existence():
    m = _model()
    level = m.levels[0]
    real = level.denoise
    j = 3

    def sharp(z, sigma, cond=None):
        out = real(z, sigma) if cond is None else real(z, sigma, cond)
        le = torch.zeros_like(out.log_existence)
        le[:, j:] = -50.0  # existence drops sharply after slot j
        return DenoiseOutput(out.x_hat, out.bos_logits, le, out.rough_bos_logits)

    level.denoise = sharp
    res = sample(m, 4, steps=2, seed=1)
    assert res.lengths == [j] * 4


def test_trace_has_one_entry_per_step_and_text_is_valid_utf8():
    m = _model()
    res = sample(m, 2, steps=4, seed=0, trace=True)
    assert len(res.trace) == 4 and all(len(step) == 2 for step in res.trace)
    for t in res.texts:
        t.encode("utf-8")  # replacement characters, never invalid surrogates
