"""The ``context`` prior: its context never reads the position it predicts, its "other" class's
likelihood is a Gaussian density compared exactly with the entries', its sampler modes, and a
micro prior that learns a context rule no unigram can."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.components.prior.pairs import held_out_positions, train_on_pairs
from zonkey.components.prior.context import ContextPriorConfig
from zonkey.components.prior.heads import BankHead
from zonkey.core.contracts.protocols import Prior
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere

D = 16
pytestmark = pytest.mark.usefixtures("single_thread")


def _filled(k: int = 8, **kw):
    torch.manual_seed(0)
    ctx = LevelContext(level=0, d_model=8, max_segment=6, n_compress=2, heads=2, ffn_mult=2, dropout=0.0,
                       attention=None)
    fields = {"bank_size": k, "d_model": 32, "layers": 1, "max_len": 16, "window": 2, **kw}
    prior = ContextPriorConfig(**fields).build(ctx)
    bank = to_sphere(torch.randn(k, D, generator=torch.Generator().manual_seed(0)))
    assert prior.bank is not None
    prior.bank.set_bank(bank, torch.log(torch.full((k,), 0.9 / k)), math.log(0.1))
    return prior, bank


def test_it_is_a_prior_and_refuses_shares_over_one():
    prior, _ = _filled()
    assert isinstance(prior, Prior) and prior.bank is not None and prior.bank.ready
    with pytest.raises(ValueError, match="clean_rows"):
        _filled(clean_rows=0.7, anchors=0.5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), at=st.integers(0, 8), known_at=st.booleans(), seed=st.integers(0, 10_000))
def test_the_context_of_a_position_never_reads_that_position(n, at, known_at, seed):
    """Changing what position ``at`` shows the others (its latent, its class, whether it is known)
    leaves its own hidden state and context exactly as they were; its neighbours' change."""
    at = at % n
    prior, bank = _filled()
    prior.eval()
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(0, 8, (1, n), generator=g)
    z = bank[words]
    self_z = torch.randn(1, n, D, generator=g)
    sigma = torch.rand(1, generator=g) * 0.98 + 0.01
    known = torch.rand(1, n, generator=g) < 0.5
    valid = torch.ones(1, n, dtype=torch.bool)
    cond = torch.randn(1, n, D, generator=g)
    h1, c1 = prior.hidden_split(z, self_z, sigma, known, valid, cond)
    z2, known2, cond2 = z.clone(), known.clone(), cond.clone()
    z2[0, at] = bank[(int(words[0, at]) + 1) % 8]  # another segment
    known2[0, at] = known_at
    cond2[0, at] = torch.randn(D, generator=g)
    h2, c2 = prior.hidden_split(z2, self_z, sigma, known2, valid, cond2)
    assert torch.allclose(h1[0, at], h2[0, at], atol=1e-5) and torch.allclose(c1[0, at], c2[0, at], atol=1e-5)
    others = [i for i in range(n) if i != at]
    assert not torch.allclose(c1[0, others], c2[0, others], atol=1e-6)


@pytest.mark.parametrize("sigma", [0.02, 0.3, 0.8, 0.97])
def test_the_other_class_likelihood_is_a_gaussian_density_compared_exactly(sigma):
    """logit(other) − logit(i), readout and frequencies aside, is log N(z; a·μ, (a²v + σ)I) −
    log N(z; a·B_i, σI) by brute force, with a = √(1 − σ) and v = (R² − ‖μ‖²)/D (R the sphere's radius)."""
    head = BankHead(4, D, 6)
    g = torch.Generator().manual_seed(2)
    bank = to_sphere(torch.randn(6, D, generator=g))
    head.set_bank(bank, torch.zeros(6), 0.0)
    h = torch.randn(3, 4, generator=g)
    z = torch.randn(3, D, generator=g) * 2.0
    s = torch.full((3,), sigma)
    logits, post, mu = head.logits(h, z, s)
    base = head.readout(h) + head.log_freq
    lik = (logits - base).detach()
    a = math.sqrt(1 - sigma)
    v = ((bank[0].pow(2).sum() - mu.pow(2).sum(-1)) / D).clamp(0.05, 1.0).detach()  # R² = ‖B_i‖²
    other = torch.distributions.Normal(a * mu.detach(), (a * a * v + sigma).sqrt()[:, None]).log_prob(z).sum(-1)
    entry = torch.distributions.Normal(a * bank[None], math.sqrt(sigma)).log_prob(z[:, None]).sum(-1)  # (3, 6)
    assert torch.allclose(lik[:, -1:] - lik[:, :-1], other[:, None] - entry, rtol=1e-4, atol=1e-2)
    assert torch.allclose(post.norm(dim=-1), bank.norm(dim=-1)[:3], atol=1e-4)  # on the sphere


def test_a_latent_off_the_bank_is_other_and_one_on_it_is_its_entry_at_low_noise():
    head = BankHead(4, D, 6)
    g = torch.Generator().manual_seed(3)
    bank = to_sphere(torch.randn(6, D, generator=g))
    head.set_bank(bank, torch.zeros(6), 0.0)
    sigma = 0.05
    off = to_sphere(torch.randn(1, D, generator=g))
    z = math.sqrt(1 - sigma) * torch.cat([bank[2:3], off]) + math.sqrt(sigma) * torch.randn(2, D, generator=g)
    logits, _, _ = head.logits(torch.zeros(2, 4), z, torch.full((2,), sigma))
    assert logits.argmax(-1).tolist() == [2, 6]


@pytest.mark.parametrize(("mode", "order"), [("mean", "confidence"), ("draw", "confidence"),
                                             ("commit", "confidence"), ("commit", "random")])
def test_every_sampler_mode_keeps_known_positions_and_is_seeded(mode, order):
    prior, bank = _filled()
    known_z = bank[torch.tensor([[0, 1, 2, 3, 4, 5]] * 2)]
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, :2] = True
    out = [prior.sample(2, 6, steps=5, generator=torch.Generator().manual_seed(3), known_z=known_z, known=known,
                        mode=mode, order=order) for _ in range(2)]
    assert torch.equal(out[0], out[1]) and torch.equal(out[0][known], known_z[known])
    cls = prior.bank.classes(out[0][~known])
    inside = cls < prior.bank.size
    assert torch.allclose(out[0][~known][inside], bank[cls[inside]], atol=1e-5)


def test_the_random_commit_order_fixes_any_position_at_every_step():
    """With eight positions and eight steps both orders fix one position a step; ``random`` picks
    it uniformly at every step, so over 24 seeds the position fixed at each of the first three
    steps is not always the same few."""
    prior, bank = _filled()
    prior.eval()
    fixed: dict[int, list[int]] = {0: [], 1: [], 2: []}
    seen: list[torch.Tensor] = []

    def record(i, est):
        now = prior.bank.classes(est[0]) < prior.bank.size
        if i in fixed:
            new = now & ~seen[-1] if seen else now
            fixed[i].append(int(new.float().argmax()))
        seen.append(now)

    known_z = bank[torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])]
    known = torch.zeros(1, 8, dtype=torch.bool)
    for seed in range(24):
        seen.clear()
        prior.sample(1, 8, steps=8, generator=torch.Generator().manual_seed(seed), known_z=known_z,
                     known=known, mode="commit", order="random", on_step=record)
    for i in (0, 1, 2):
        assert len(fixed[i]) == 24 and len(set(fixed[i])) >= 3, (i, fixed[i])


def test_the_loss_scores_every_position_and_reaches_the_context_path():
    prior, bank = _filled()
    g = torch.Generator().manual_seed(0)
    z0 = bank[torch.randint(0, 8, (4, 6), generator=g)]
    z0[0, 0] = to_sphere(torch.randn(D, generator=g))
    loss, stats = prior.loss(z0, torch.ones(4, 6, dtype=torch.bool), g)
    assert stats["prior_positions"] == 24 and torch.isfinite(loss)
    loss.backward()
    assert prior.window.weight.grad is not None and prior.window.weight.grad.abs().sum() > 0
    assert prior.embed.weight.grad is not None and prior.bank.other.weight.grad is not None


@pytest.mark.learning
def test_a_micro_context_prior_learns_a_context_rule_that_a_unigram_cannot():
    """Words come in fixed pairs (word 2j is always followed by word 2j + 1, rows start with an
    even word); every word is equally frequent, so a unigram predicts a position at 1/8."""
    prior, bank = _filled(k=8)
    g = torch.Generator().manual_seed(0)
    train_on_pairs(prior, bank, g, 150)
    words, target, lp, cls = held_out_positions(prior, bank, g)
    top1 = float((lp.argmax(-1) == cls).float().mean())
    assert top1 > 0.8, top1
    for mode in ("mean", "commit"):
        z = prior.sample(16, 8, steps=20, generator=torch.Generator().manual_seed(1), mode=mode)
        c = prior.bank.classes(z).view(16, 4, 2)
        pairs = float(((c[..., 0] % 2 == 0) & (c[..., 1] == c[..., 0] + 1)).float().mean())
        assert pairs > 0.5, (mode, pairs)  # chance: 1/16


def test_a_rows_pseudo_log_likelihood_is_the_sum_of_its_positions_held_out_one_at_a_time():
    """One pass scores every position given the others: the same as hiding each position in turn."""
    prior, bank = _filled()
    prior.eval()
    g = torch.Generator().manual_seed(4)
    z0 = bank[torch.randint(0, 8, (3, 5), generator=g)]
    z0[1, 2] = to_sphere(torch.randn(D, generator=g))  # an "other" segment
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[2, 4] = False
    one_pass = prior.row_log_likelihood(z0, valid)
    by_hand = torch.zeros(3)
    for i in range(5):
        lp, cls = prior.position_log_probs(z0, valid, torch.full((3,), i))
        by_hand += torch.where(valid[:, i], lp.gather(1, cls[:, None])[:, 0], torch.zeros(()))
    assert torch.allclose(one_pass, by_hand, atol=1e-4)


def test_other_scale_draws_fewer_segments_outside_the_bank_and_keeps_them_possible():
    prior, bank = _filled()
    prior.bank.set_bank(bank, torch.log(torch.full((8,), 0.5 / 8)), math.log(0.5))  # "other" half the mass
    prior.eval()

    def other_share(scale: float) -> float:
        z = prior.sample(64, 6, steps=4, generator=torch.Generator().manual_seed(0), mode="draw",
                         other_scale=scale)
        return float((prior.bank.classes(z) == prior.bank.size).float().mean())

    full, scaled = other_share(1.0), other_share(0.05)
    assert full > 0.2 and scaled < full / 3, (full, scaled)
    assert other_share(0.3) > 0  # scaled down, not closed
