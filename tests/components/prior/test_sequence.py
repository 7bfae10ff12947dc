"""The ``sequence`` prior: shapes, masking, known positions, and that it learns an ordered toy language."""

import pytest
import torch

from zonkey.components.prior.sequence import SequencePriorConfig
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere


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


def test_scattered_rows_hold_many_short_gaps():
    prior = _prior(infill=1.0, scatter=1.0)
    valid = torch.ones(64, 16, dtype=torch.bool)
    known = prior._known_spans(valid, torch.Generator().manual_seed(0))
    unknown = ~known
    # a single span would give exactly one run of unknown positions per row; scattered rows give several
    runs = (unknown[:, 1:] & ~unknown[:, :-1]).sum(1) + unknown[:, 0].long()
    assert float(runs.float().mean()) > 1.5
    share = float(unknown.float().mean())
    assert 0.05 <= share <= 0.5


def test_unconstrained_estimates_are_not_on_the_sphere_but_samples_are():
    torch.manual_seed(0)
    prior = _prior(sphere_out=False)
    z = torch.randn(2, 5, 16)
    out = prior(z, torch.full((2,), 0.9), torch.zeros(2, 5, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool))
    radius = to_sphere(torch.ones(1, 16)).norm()
    assert not torch.allclose(out.norm(dim=-1), radius.expand(2, 5), atol=1e-2)
    s = prior.sample(2, 5, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(s.norm(dim=-1), radius.expand(2, 5), atol=1e-4)


def test_memory_trains_on_the_last_batches_rows():
    prior = _prior(memory=2)
    prior.train()
    seen = []
    real_crop = prior._crop
    prior._crop = lambda z0, valid, gen: (seen.append(z0.shape[0]) or real_crop(z0, valid, gen))
    for n in (5, 7, 6, 4):  # batches of 3 rows with different lengths
        z = to_sphere(torch.randn(3, n, 16))
        prior.loss(z, torch.ones(3, n, dtype=torch.bool), torch.Generator().manual_seed(n))
    assert seen == [3, 6, 9, 9]  # the batch itself, then up to two remembered batches
    prior.eval()
    prior.loss(to_sphere(torch.randn(3, 5, 16)), torch.ones(3, 5, dtype=torch.bool))
    assert seen[-1] == 3  # evaluation losses use the batch alone


def _known_rows(b: int = 3, n: int = 6):
    known_z = to_sphere(torch.randn(b, n, 16, generator=torch.Generator().manual_seed(5)))
    known = torch.zeros(b, n, dtype=torch.bool)
    known[:2, :2] = True  # rows 0 and 1 have context; row 2 has none
    known[:2, 4:] = True
    return known_z, known


def test_guidance_moves_only_the_unknown_positions_of_rows_with_context():
    torch.manual_seed(0)
    prior = _prior()
    prior.eval()
    known_z, known = _known_rows()

    def draw(w):
        return prior.sample(3, 6, steps=4, generator=torch.Generator().manual_seed(2), known_z=known_z, known=known,
                            guidance=w)

    plain, same, guided = draw(1.0), prior.sample(3, 6, steps=4, generator=torch.Generator().manual_seed(2),
                                                   known_z=known_z, known=known), draw(3.0)
    assert torch.equal(plain, same)  # 1 is off
    assert torch.equal(guided[known], known_z[known])
    assert torch.equal(guided[2], plain[2])  # a row without context is not guided
    assert not torch.allclose(guided[0, 2:4], plain[0, 2:4], atol=1e-4)
    radius = to_sphere(torch.ones(1, 16)).norm()
    assert torch.allclose(guided.norm(dim=-1), radius.expand(3, 6), atol=1e-4)


def test_guidance_zero_ignores_the_context():
    """w = 0 keeps only the estimate given nothing: the gap is what the same draw without context gives."""
    torch.manual_seed(0)
    prior = _prior()
    prior.eval()
    known_z, known = _known_rows()
    g0 = prior.sample(3, 6, steps=4, generator=torch.Generator().manual_seed(2), known_z=known_z, known=known,
                      guidance=0.0)
    free = prior.sample(3, 6, steps=4, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(g0[~known], free[~known], atol=1e-5)


def test_project_below_puts_late_estimates_on_the_sphere():
    torch.manual_seed(0)
    prior = _prior(sphere_out=False)
    prior.eval()
    radius = float(to_sphere(torch.ones(1, 16)).norm())

    def on_sphere_per_step(project_below):
        seen = []
        prior.sample(2, 5, steps=6, generator=torch.Generator().manual_seed(1), project_below=project_below,
                     on_step=lambda i, est: seen.append(bool(torch.allclose(est.norm(dim=-1),
                                                                           torch.full((2, 5), radius), atol=1e-4))))
        return seen

    assert on_sphere_per_step(1.0) == [True] * 6
    assert not any(on_sphere_per_step(0.0))
    late = on_sphere_per_step(0.5)
    assert late[-1] and not late[0]


def test_mixture_one_is_refused():
    with pytest.raises(ValueError, match="mixture"):
        SequencePriorConfig(mixture=1)


def test_mixture_shapes_weights_and_seeded_draws():
    torch.manual_seed(0)
    prior = _prior(mixture=4)
    z = torch.randn(2, 5, 16)
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    nothing = torch.zeros(2, 5, dtype=torch.bool)
    means, logw = prior.components(z, torch.full((2,), 0.9), nothing, valid)
    assert means.shape == (2, 5, 4, 16) and logw is not None and logw.shape == (2, 5, 4)
    assert torch.allclose(logw.exp().sum(-1), torch.ones(2, 5), atol=1e-5)
    a = prior(z, torch.full((2,), 0.9), nothing, valid, generator=torch.Generator().manual_seed(1))
    b = prior(z, torch.full((2,), 0.9), nothing, valid, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.all(a[1, 3:] == 0)
    # every drawn estimate is one of its position's candidates
    hit = (means[0] - a[0][:, None]).abs().amax(-1).min(-1).values
    assert torch.all(hit < 1e-6)
    loss, stats = prior.loss(to_sphere(torch.randn(3, 6, 16)), torch.ones(3, 6, dtype=torch.bool),
                             torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 < stats["prior_mixture_used"] <= 1
    with pytest.raises(ValueError, match="guidance"):
        known = torch.zeros(1, 4, dtype=torch.bool)
        known[0, 0] = True
        prior.sample(1, 4, steps=2, known=known, known_z=torch.zeros(1, 4, 16), guidance=2.0)


@pytest.mark.learning
def test_mixture_draws_words_where_the_mean_is_a_blur():
    """Positions draw independently from 4 words. In one sampler step from pure noise, the single
    estimate can only be the words' mean (a blur, far from each word), while the mixture's draw
    lands on a word and draws every word."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    vocab = to_sphere(torch.randn(4, 16, generator=g))
    results = {}
    for k in (0, 8):
        prior = _prior(infill=0.0, self_cond=0.0, mixture=k)
        opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
        for _ in range(120):
            words = torch.randint(0, 4, (8, 6), generator=g)
            loss, _ = prior.loss(vocab[words], torch.ones(8, 6, dtype=torch.bool), generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
        prior.eval()
        z = prior.sample(64, 6, steps=1, generator=torch.Generator().manual_seed(1))
        cos = torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(vocab, dim=-1).T
        best, word = cos.max(-1)
        results[k] = (float((best > 0.9).float().mean()), int(word[best > 0.9].unique().numel()))
    assert results[0][0] < 0.2, results
    assert results[8][0] > 0.8 and results[8][1] == 4, results
