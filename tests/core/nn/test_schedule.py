"""The shifted cosine schedule and the sampler step of the sequence priors."""

import math

import torch

from zonkey.core.nn import schedule


def test_sigma_rises_with_time_and_with_the_shift():
    u = torch.linspace(0, 1, 101)
    s1 = schedule.sigma_at(u, 1.0)
    s3 = schedule.sigma_at(u, 3.0)
    assert bool((s1[1:] >= s1[:-1]).all())
    assert 0 < float(s1[0]) < 1e-6 and 1 - 1e-6 < float(s1[-1]) <= 1
    # the shift moves every interior time toward pure noise
    assert bool((s3[1:-1] > s1[1:-1]).all())
    # plain cosine at u = 1/2: snr 1, σ = 1/2; shift 3: snr 1/9, σ = 0.9
    assert math.isclose(float(schedule.sigma_at(torch.tensor(0.5), 1.0)), 0.5, rel_tol=1e-5)
    assert math.isclose(float(schedule.sigma_at(torch.tensor(0.5), 3.0)), 0.9, rel_tol=1e-5)


def test_sampler_sigmas_walk_down_to_exactly_zero():
    sig = schedule.sampler_sigmas(10, 3.0)
    assert len(sig) == 11 and sig[-1] == 0.0
    assert all(a > b for a, b in zip(sig[:-1], sig[1:], strict=True))


def test_deterministic_step_with_the_true_clean_latent_stays_on_its_noise_path():
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 5, 16, generator=g)
    eps = torch.randn(3, 5, 16, generator=g)
    zt = schedule.add_noise(z0, torch.full((3,), 0.8), eps)
    nxt = schedule.step(zt, z0, 0.8, 0.3)
    want = schedule.add_noise(z0, torch.full((3,), 0.3), eps)
    assert torch.allclose(nxt, want, atol=1e-5)
    assert torch.equal(schedule.step(zt, z0, 0.8, 0.0), z0)


def test_ancestral_step_keeps_the_marginal_variance():
    # with the true clean latent, an ancestral step lands on sqrt(1-σ')·z0 plus noise of variance σ'
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(20000, 4, generator=g)
    zt = schedule.add_noise(z0[None], torch.tensor([0.9]), torch.randn(1, 20000, 4, generator=g))[0]
    nxt = schedule.step(zt, z0, 0.9, 0.5, eta=1.0, generator=g)
    resid = nxt - math.sqrt(0.5) * z0
    assert abs(float(resid.var()) - 0.5) < 0.02
