"""The ``sequence`` prior with its MSE head: shapes, masking, known positions, and that it learns an
ordered toy language. The bank head has its own file."""

import pytest
import torch

from zonkey.components.prior.sequence import SequencePriorConfig
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere

pytestmark = pytest.mark.usefixtures("single_thread")


def _prior(**kw):
    ctx = LevelContext(level=0, d_model=8, max_segment=6, n_compress=2, heads=2, ffn_mult=2, dropout=0.0,
                       attention=None)
    cfg = SequencePriorConfig(d_model=32, layers=2, heads=2, max_len=16, **kw)
    return cfg.build(ctx)


def test_shapes_sphere_and_padding():
    torch.manual_seed(0)
    prior = _prior()
    z = torch.randn(3, 7, 16)
    valid = torch.ones(3, 7, dtype=torch.bool)
    valid[1, 4:] = False
    out = prior(z, torch.full((3,), 0.5), torch.zeros(3, 7, dtype=torch.bool), valid)
    assert out.shape == (3, 7, 16)
    assert torch.all(out[1, 4:] == 0)
    norms = out[valid].norm(dim=-1)
    assert torch.allclose(norms, to_sphere(torch.ones(1, 16)).norm(dim=-1).expand_as(norms), atol=1e-4)


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    prior = _prior()
    z = torch.randn(1, 5, 16)
    sig = torch.full((1,), 0.7)
    a = prior(z, sig, torch.zeros(1, 5, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool))
    zp = torch.cat([z, torch.randn(1, 3, 16) * 50], dim=1)
    valid = torch.zeros(1, 8, dtype=torch.bool)
    valid[0, :5] = True
    b = prior(zp, sig, torch.zeros(1, 8, dtype=torch.bool), valid)
    assert torch.allclose(a, b[:, :5], atol=1e-5)


def test_sample_keeps_known_positions_exactly_and_is_seeded():
    torch.manual_seed(0)
    prior = _prior()
    known_z = to_sphere(torch.randn(2, 6, 16))
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, :2] = True
    known[:, 4:] = True
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = prior.sample(2, 6, steps=4, generator=g1, known_z=known_z, known=known)
    b = prior.sample(2, 6, steps=4, generator=g2, known_z=known_z, known=known)
    assert torch.equal(a, b)
    assert torch.equal(a[known], known_z[known])


def test_too_long_a_sequence_is_a_clear_error():
    prior = _prior()
    with pytest.raises(ValueError, match="max_len"):
        prior(torch.randn(1, 20, 16), torch.ones(1) * 0.5, torch.zeros(1, 20, dtype=torch.bool),
              torch.ones(1, 20, dtype=torch.bool))


def test_long_training_rows_are_cut_to_max_len():
    prior = _prior()
    loss, stats = prior.loss(torch.randn(2, 40, 16), torch.ones(2, 40, dtype=torch.bool))
    assert torch.isfinite(loss) and stats["prior_positions"] <= 2 * 16


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="divisible"):
        SequencePriorConfig(d_model=30, heads=4)


@pytest.mark.learning
def test_prior_learns_an_ordered_toy_language():
    """Sequences alternate between two halves of a 6-word vocabulary (even positions draw from words
    0-2, odd positions from 3-5). After training, sampled latents must land near vocabulary words
    (cosine > 0.9) and follow the alternation far more often than chance (1/2)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vocab = to_sphere(torch.randn(6, 16, generator=g))
    prior = _prior(infill=0.0)
    opt = torch.optim.AdamW(prior.parameters(), lr=2e-3)
    for _ in range(400):
        first = torch.randint(0, 2, (32, 1), generator=g)
        parity = (first + torch.arange(8)[None]) % 2  # (32, 8): which half each position draws from
        words = parity * 3 + torch.randint(0, 3, (32, 8), generator=g)
        loss, _ = prior.loss(vocab[words], torch.ones(32, 8, dtype=torch.bool), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    z = prior.sample(64, 8, steps=30, generator=torch.Generator().manual_seed(1))
    cos = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T  # (64, 8, 6)
    best, word = cos.max(-1)
    on_vocab = float((best > 0.9).float().mean())
    half = word // 3
    alternates = float((half[:, 1:] != half[:, :-1]).float().mean())
    assert on_vocab > 0.8, on_vocab
    assert alternates > 0.8, alternates
