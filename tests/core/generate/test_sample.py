"""The sampler: deterministic under a seed, length set by existence (through every stitcher and
down the levels), one batched pass per level, valid text out."""

from __future__ import annotations

import pytest
import torch

import zonkey
from tests.helpers import micro_recipe
from zonkey.core.contracts.outputs import DenoiseOutput
from zonkey.core.generate.sample import sample
from zonkey.core.model.inference import decode_bytes_from_slots
from zonkey.core.model.network import build_model
from zonkey.core.recipe import recipe_to_dict, validate_recipe

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(stitcher="default", **sample_cfg):
    rec = micro_recipe()
    if stitcher != "default" or sample_cfg:
        d = recipe_to_dict(rec)
        if stitcher != "default":
            d["model"]["levels"][0]["stitcher"] = stitcher
        d["sample"].update(sample_cfg)
        rec = validate_recipe(d)
    torch.manual_seed(0)
    return build_model(rec)


def _two_level():
    rec = validate_recipe({"model": {"levels": [
        {"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
         "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0}},
        {"d_model": 32, "max_segment": 6, "n_compress": 2, "heads": 2},
    ]}, "sample": {"level_steps": 2}})
    torch.manual_seed(0)
    return build_model(rec)


def _wrap(level, edit):
    """Replace ``level.denoise`` by the real one followed by ``edit(z, out) -> DenoiseOutput``;
    returns the list of outputs it produced (one per call)."""
    real = level.denoise
    calls = []

    def wrapped(z, sigma, cond=None):
        out = edit(z, real(z, sigma, cond))
        calls.append(out)
        return out

    level.denoise = wrapped
    return calls


def _sharp(j):
    """Existence 1 on slots < j and 0 from slot j on."""
    def edit(z, out):
        le = torch.zeros_like(out.log_existence)
        le[:, j:] = float("-inf")
        return DenoiseOutput(out.x_hat, out.bos_logits, le, out.rough_bos_logits)
    return edit


def _bytes_from_z(table, m):
    """x_hat spells 'a'/'b' by the sign of the latent's first m entries: the text is a direct
    function of the sampled noise (a random-init model maps every latent to the same text)."""
    def edit(z, out):
        pick = torch.where(z[:, :m] > 0, ord("a"), ord("b"))  # (s, m)
        return DenoiseOutput(table[pick], out.bos_logits, out.log_existence, out.rough_bos_logits)
    return edit


def test_sampler_is_deterministic_under_a_seed_and_the_seed_matters():
    m = _model(sigma_min=0.3)  # the last step stops at σ = 0.3: the seed's noise stays in the final latent
    _wrap(m.levels[0], _bytes_from_z(m.table.detach(), m.levels[0].cfg.max_segment))
    a = sample(m, 3, steps=3, seed=7)
    b = sample(m, 3, steps=3, seed=7)
    c = sample(m, 3, steps=3, seed=8)
    assert a.texts == b.texts and a.raw == b.raw
    assert a.raw != c.raw
    assert all(set(r) <= {ord("a"), ord("b")} and r for r in a.raw)


def test_two_level_sampler_is_deterministic_and_tracing_does_not_change_it():
    m = _two_level()
    a = sample(m, 2, steps=2, seed=3)
    b = sample(m, 2, steps=2, seed=3, trace=True)
    assert a.raw == b.raw
    assert len(b.trace) == 2 and b.sigmas == pytest.approx([1.0, 0.5])


@pytest.mark.parametrize("stitcher", ["default", {"name": "hard"}, None], ids=["learned", "hard", "none"])
@pytest.mark.parametrize("segments", [1, 3])
def test_output_length_follows_existence(stitcher, segments):
    m = _model(stitcher)
    j = 3
    calls = _wrap(m.levels[0], _sharp(j))
    res = sample(m, 4, steps=2, seed=1, segments=segments)
    assert res.lengths == [j * segments] * 4
    if stitcher != "default":  # plain concatenation: the bytes are the first j slots of each segment, in order
        final = decode_bytes_from_slots(calls[-1].x_hat, m.table)  # (4·segments, m)
        want = [bytes(final[i * segments:(i + 1) * segments, :j].flatten().tolist()) for i in range(4)]
        assert res.raw == want


def test_existence_below_epsilon_is_cut_not_just_zero():
    m = _model({"name": "hard"})

    def edit(z, out):  # existence 1, 1, 0.5, 0.05, ...: with ε = 0.1 three slots survive, with ε = 0.6 two
        le = torch.full_like(out.log_existence, -3.0)
        le[:, :2] = 0.0
        le[:, 2] = torch.log(torch.tensor(0.5))
        return DenoiseOutput(out.x_hat, out.bos_logits, le, out.rough_bos_logits)

    _wrap(m.levels[0], edit)
    assert sample(m, 2, steps=1, segments=1, epsilon=0.1).lengths == [3, 3]
    assert sample(m, 2, steps=1, segments=1, epsilon=0.6).lengths == [2, 2]


def test_top_down_length_is_the_product_of_the_levels_cuts():
    m = _two_level()
    j1, j0, segments = 2, 3, 2
    _wrap(m.levels[1], _sharp(j1))
    _wrap(m.levels[0], _sharp(j0))
    res = sample(m, 3, steps=2, seed=0, segments=segments)
    assert res.lengths == [segments * j1 * j0] * 3


def test_every_level_is_decoded_in_one_batched_pass():
    counts = {}
    for n in (1, 5):
        m = _two_level()
        c1 = _wrap(m.levels[1], lambda z, out: out)
        c0 = _wrap(m.levels[0], lambda z, out: out)
        sample(m, n, steps=3, seed=0)
        counts[n] = (len(c1), len(c0))
        # every call holds all segments of all samples
        assert c1[-1].x_hat.shape[0] == n * m.recipe.sample.top_segments
    # top level: one call per step + the final decode; level 0: level_steps + the final decode
    assert counts[1] == counts[5] == (3 + 1, 2 + 1)


def test_trace_has_one_entry_per_step_and_text_is_valid_utf8():
    m = _model()
    res = sample(m, 2, steps=4, seed=0, trace=True)
    assert len(res.trace) == 4 and all(len(step) == 2 for step in res.trace)
    assert res.sigmas == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_invalid_utf8_bytes_become_replacement_characters():
    m = _model({"name": "hard"})
    table = m.table.detach()

    def edit(z, out):  # every slot decodes to 0xFF, never valid UTF-8
        x = table[torch.full(out.log_existence.shape, 0xFF)]
        return DenoiseOutput(x, out.bos_logits, out.log_existence, out.rough_bos_logits)

    _wrap(m.levels[0], edit)
    res = sample(m, 2, steps=1, seed=0, segments=1)
    assert all(r and set(r) == {0xFF} for r in res.raw)
    for raw, text in zip(res.raw, res.texts, strict=True):
        assert text == "\ufffd" * len(raw)
        assert text.encode("utf-8").decode("utf-8") == text  # encodes: no lone surrogates


def test_model_sample_api_and_errors():
    m = _model()
    texts = zonkey.sample(m, 2, steps=1, seed=0)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    details = zonkey.sample_details(m, 2, steps=1, seed=0)
    assert isinstance(details, zonkey.SampleResult) and details.texts == texts
    assert [len(r) for r in details.raw] == details.lengths
    with pytest.raises(ValueError, match="level 1 does not exist"):
        sample(m, 1, level=1)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        sample(m, 1, steps=0)
