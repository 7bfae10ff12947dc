"""The one encoder walk (``ZonkeyModel.walk`` / ``encode``) and the one decode (``Level.decode``):
each level's latents become the next level's sequence, decoding noises along the level
objective's own path, and evaluation covers every level."""

from __future__ import annotations

import pytest
import torch

import zonkey
from tests.helpers import micro_recipe
from zonkey.core.model.network import build_model
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.recipe import validate_recipe
from zonkey.data import encode_texts, load_corpus

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(objective: str = "ddmm", levels: int = 1):
    rec = micro_recipe().model_dump()
    rec["model"]["levels"][0]["objective"] = {"name": objective}
    for _ in range(1, levels):
        below = rec["model"]["levels"][-1]
        rec["model"]["levels"].append({"d_model": below["d_model"] * below["n_compress"], "max_segment": 4,
                                       "n_compress": 1, "heads": 2})
    torch.manual_seed(0)
    return build_model(validate_recipe(rec)).eval()


def _first_denoiser_input(level):
    """Record the latents of the level's first denoiser call."""
    seen = []
    real = level.denoise

    def spy(z, sigma, cond=None):
        seen.append((z.clone(), sigma.clone()))
        return real(z, sigma, cond)

    level.denoise = spy
    return seen


@pytest.mark.parametrize("objective", ["flow", "ddmm"])
def test_reconstruct_noises_along_the_level_objectives_own_path(objective):
    """``reconstruct --sigma`` noises level 0's latents with its objective's ``noise()``: for
    ``flow`` that is cos/sin of σ·π/2 with noise on the sphere, not variance-preserving noise."""
    m = _model(objective)
    texts = ["The cat sat on the mat.", "Bob is a player"]
    batch = encode_texts(texts)
    with torch.no_grad():
        z0 = m.encode(batch.tokens, batch.valid, upto=1)[0].latents
        expected = m.levels[0].objective.noise(to_sphere(z0), torch.full((z0.shape[0],), 0.6),
                                                torch.Generator().manual_seed(5))
    seen = _first_denoiser_input(m.levels[0])
    zonkey.reconstruct(m, texts, sigma=0.6, steps=2, seed=5)
    z, sigma = seen[0]
    assert torch.allclose(sigma, torch.full_like(sigma, 0.6))
    assert torch.allclose(z, expected, atol=1e-5)
    if objective == "flow":
        vp = (0.4 ** 0.5) * to_sphere(z0) + (0.6 ** 0.5) * torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
        assert not torch.allclose(z, vp, atol=1e-3)
    assert len(seen) == 3  # two sampler steps, then the decode at σ = 0


def test_decode_at_sigma_zero_is_one_clean_decode_without_randomness():
    m = _model("flow")
    level = m.levels[0]
    z = torch.randn(5, level.latent_dim)
    gen = torch.Generator().manual_seed(1)
    state = gen.get_state()
    seen = _first_denoiser_input(level)
    with torch.no_grad():
        a = level.decode(z, sigma=0.0, steps=4, generator=gen)
        b = level.decode(z, sigma=0.7, steps=0, generator=gen)
    assert torch.equal(gen.get_state(), state) and len(seen) == 2
    assert torch.equal(seen[0][0], to_sphere(z)) and float(seen[0][1].abs().max()) == 0.0
    assert torch.equal(a.x_hat, b.x_hat)


def test_decode_rejects_bad_sigma_and_steps():
    level = _model().levels[0]
    z = torch.randn(2, level.latent_dim)
    with pytest.raises(ValueError, match="sigma must lie in"):
        level.decode(z, sigma=1.5)
    with pytest.raises(ValueError, match="steps must be at least 0"):
        level.decode(z, sigma=0.5, steps=-1)


def test_walk_chains_every_level_and_stops_at_upto():
    m = _model(levels=3)
    batch = encode_texts(["The cat sat on the mat. It purred.", "Bob is a player in the NBA."])
    with torch.no_grad():
        passes = m.encode(batch.tokens, batch.valid)
        two = m.encode(batch.tokens, batch.valid, upto=2)
    assert [p.index for p in passes] == [0, 1, 2] and len(two) == 2
    assert torch.equal(passes[0].x, m.embed_bytes(batch.tokens, batch.valid))
    for below, here in zip(passes[:-1], passes[1:], strict=True):
        assert torch.equal(below.above.x, here.x) and torch.equal(below.above.valid, here.valid)
        assert here.latents.shape == (here.split.segments.num, m.levels[here.index].latent_dim)
        assert int(here.valid.sum()) == below.split.segments.num  # one position per segment below
    assert all(p.above is not None for p in passes)
    assert torch.equal(two[1].latents, passes[1].latents)  # deterministic splits


def test_walk_builds_the_next_sequence_after_the_consumer_is_done():
    """The training pass adds a level's losses before the walk moves on (the order in which it
    draws its randomness)."""
    m = _model(levels=2)
    batch = encode_texts(["The cat sat on the mat."])
    walk = m.walk(batch.tokens, batch.valid)
    with torch.no_grad():
        p0 = next(walk)
        assert p0.above is None
        p1 = next(walk)
    assert p0.above is not None and torch.equal(p0.above.x, p1.x)


def test_evaluation_covers_every_level():
    m = _model(levels=3)
    rec = m.recipe
    from zonkey.core.evaluate.heldout import evaluate

    res = evaluate(m, load_corpus(rec.data), batch_bytes=rec.data.batch_bytes, max_batches=1, steps=1)
    for key in ("sentence_f1", "recon_acc", "length_acc"):
        assert 0.0 <= res[f"l1_{key}"] <= 1.0 and 0.0 <= res[f"l2_{key}"] <= 1.0
    for key in ("roundtrip_acc", "roundtrip_acc_aligned", "roundtrip_char_acc"):
        assert 0.0 <= res[key] <= 1.0 and 0.0 <= res[f"l2_{key}"] <= 1.0
    assert "l3_recon_acc" not in res
