"""The sequence prior's vocabulary head: the likelihood term against a brute-force Gaussian
log-density, classes and the open "other" class, training inputs, sampling, and a micro prior that
learns a context rule no unigram can."""

from __future__ import annotations

import math

import pytest
import torch

from tests.components.prior.pairs import held_out_positions, train_on_pairs
from zonkey.components.prior.heads import BankHead, likelihood_scale
from zonkey.components.prior.sequence import SequencePriorConfig
from zonkey.core.contracts.protocols import Prior, PriorBank
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.sphere import to_sphere

D = 16
pytestmark = pytest.mark.usefixtures("single_thread")


def _prior(k: int = 8, **kw):
    ctx = LevelContext(level=0, d_model=8, max_segment=6, n_compress=2, heads=2, ffn_mult=2, dropout=0.0,
                       attention=None)
    cfg = SequencePriorConfig(head="bank", bank_size=k, d_model=32, layers=2, heads=2, max_len=16, **kw)
    return cfg.build(ctx)


def _bank(k: int, seed: int = 0) -> torch.Tensor:
    return to_sphere(torch.randn(k, D, generator=torch.Generator().manual_seed(seed)))


def _filled(k: int = 8, **kw):
    torch.manual_seed(0)
    prior = _prior(k, **kw)
    bank = _bank(k)
    assert prior.bank is not None
    prior.bank.set_bank(bank, torch.log(torch.full((k,), 0.9 / k)), math.log(0.1))
    return prior, bank


@pytest.mark.parametrize("sigma", [0.05, 0.5, 0.9, 0.99])
def test_the_likelihood_term_is_the_gaussian_log_density_up_to_a_constant(sigma):
    g = torch.Generator().manual_seed(1)
    bank = _bank(32)
    true = 7
    z = math.sqrt(1 - sigma) * bank[true] + math.sqrt(sigma) * torch.randn(D, generator=g)
    # log N(z; sqrt(1 - σ)·B_i, σ·I) for every entry, by brute force
    dist = torch.distributions.Normal(math.sqrt(1 - sigma) * bank, math.sqrt(sigma))
    brute = dist.log_prob(z[None].expand_as(bank)).sum(-1)  # (32,)
    term = likelihood_scale(torch.tensor(sigma)) * (bank @ z)
    assert torch.allclose(term - term[0], brute - brute[0], rtol=1e-4, atol=1e-3)
    assert int(term.argmax()) == int(brute.argmax())
    if sigma <= 0.5:  # the noise has not hidden the entry: the term alone names it
        assert int(term.argmax()) == true


def test_step_zero_is_the_unigram_and_an_empty_bank_is_refused():
    torch.manual_seed(0)
    prior = _prior()
    z = torch.randn(1, 3, D)
    with pytest.raises(RuntimeError, match="bank is empty"):
        prior(z, torch.full((1,), 0.999), torch.zeros(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool))
    # before its bank exists the prior has nothing to learn: a zero loss that still reaches every parameter
    loss, stats = prior.loss(z, torch.ones(1, 3, dtype=torch.bool))
    assert float(loss) == 0.0 and stats["prior_positions"] == 0.0
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in prior.parameters())
    prior, bank = _filled()
    log_freq = torch.log(torch.tensor([0.5, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02]))
    prior.bank.set_bank(bank, log_freq, math.log(0.01))
    # the readout starts at 0 and at σ -> 1 the likelihood term vanishes: the logits are the log-frequencies
    _, logits, _ = prior.predict(torch.zeros(1, 3, D), torch.full((1,), 1 - 1e-6), torch.zeros(1, 3, dtype=torch.bool),
                                 torch.ones(1, 3, dtype=torch.bool))
    assert logits is not None
    p = torch.softmax(logits[0, 0], -1)
    expected = torch.softmax(torch.cat([log_freq, torch.tensor([math.log(0.01)])]), -1)
    assert torch.allclose(p, expected, atol=1e-3)


def test_the_prior_and_its_head_meet_their_protocols():
    prior, _ = _filled()
    assert isinstance(prior, Prior) and isinstance(prior.bank, PriorBank) and prior.bank.ready


def test_classes_find_bank_entries_and_call_the_rest_other():
    prior, bank = _filled()
    head = prior.bank
    assert head is not None
    z0 = torch.stack([bank[3], bank[5] * 1.0001, to_sphere(torch.randn(D))])
    assert head.classes(z0).tolist() == [3, 5, head.size]


def test_a_smaller_bank_leaves_its_unused_entries_impossible():
    prior, bank = _filled(k=8)
    head = prior.bank
    head.set_bank(bank[:5], torch.zeros(5), -1.0)
    assert torch.isinf(head.log_freq[5:8]).all() and head.classes(bank[6:7]).item() == head.size
    with pytest.raises(ValueError, match="does not fit"):
        head.set_bank(_bank(9), torch.zeros(9), -1.0)


def test_the_estimate_is_the_mean_of_the_distribution_and_commit_takes_its_argmax():
    head = BankHead(4, D, 3)
    bank = _bank(3)
    head.set_bank(bank, torch.zeros(3), 0.0)
    logits = torch.tensor([[0.0, math.log(3.0), -1e9, -1e9], [-1e9, -1e9, -1e9, 0.0]])
    other = to_sphere(torch.randn(2, D))
    est = head.estimate(logits, other)
    assert torch.allclose(est[0], 0.25 * bank[0] + 0.75 * bank[1], atol=1e-5)
    assert torch.allclose(est[1], other[1], atol=1e-5)
    picked, cls = head.commit(logits, other)
    assert cls.tolist() == [1, 3]  # the second position commits to "other": its own estimate
    assert torch.allclose(picked[0], bank[1]) and torch.allclose(picked[1], other[1])


def test_training_draws_put_anchors_and_band_noise_where_asked():
    prior, _ = _filled(noise="band", anchors=0.7, infill=0.3)
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(400, 12, dtype=torch.bool)
    known = prior._known(valid, g)
    rows_some = known.any(1).float().mean()
    assert 0.85 < rows_some <= 1.0  # infill rows and anchor rows both know something
    share = known[known.any(1)].float().mean()
    assert 0.3 < share < 0.8
    sigma = prior.draw_sigma(4000, torch.device("cpu"), g)
    med = float(sigma.median())
    assert 0.95 < med < 0.99  # logit(σ) ~ Gumbel(3.3, 0.85): median σ ≈ 0.975
    assert float((sigma < 0.8).float().mean()) < 0.02


def test_the_loss_is_cross_entropy_plus_the_other_estimates_error():
    prior, bank = _filled()
    g = torch.Generator().manual_seed(0)
    words = torch.randint(0, 8, (4, 6), generator=g)
    z0 = bank[words]
    z0[0, 0] = to_sphere(torch.randn(D, generator=g))  # one segment outside the bank
    loss, stats = prior.loss(z0, torch.ones(4, 6, dtype=torch.bool), g)
    assert torch.isfinite(loss) and loss > 0
    assert 0 <= stats["prior_other_share"] <= 1 and 0 <= stats["prior_top1"] <= 1
    loss.backward()
    assert prior.bank.other.weight.grad is not None and prior.bank.readout.weight.grad is not None


def test_sample_keeps_known_positions_exactly_is_seeded_and_commits_to_classes():
    prior, bank = _filled()
    known_z = bank[torch.tensor([[0, 1, 2, 3, 4, 5]] * 2)]
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, :2] = True
    a = prior.sample(2, 6, steps=4, generator=torch.Generator().manual_seed(3), known_z=known_z, known=known)
    b = prior.sample(2, 6, steps=4, generator=torch.Generator().manual_seed(3), known_z=known_z, known=known)
    assert torch.equal(a, b) and torch.equal(a[known], known_z[known])
    cls = prior.bank.classes(a[~known])
    other = cls == prior.bank.size
    # every generated position is a bank entry exactly, or the "other" estimate
    assert torch.allclose(a[~known][~other], bank[cls[~other]], atol=1e-5)


def test_position_log_probs_are_a_distribution_at_the_target():
    prior, bank = _filled()
    z0 = bank[torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])]
    lp, cls = prior.position_log_probs(z0, torch.ones(2, 4, dtype=torch.bool), torch.tensor([1, 3]))
    assert lp.shape == (2, 9) and cls.tolist() == [1, 7]
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2), atol=1e-5)


@pytest.mark.learning
def test_a_micro_prior_learns_a_context_rule_that_a_unigram_cannot():
    """Words come in fixed pairs (word 2j is always followed by word 2j + 1, and rows start with an
    even word). Every word is equally frequent, so a unigram predicts a held-out position at 1/8;
    given its neighbours the rule decides it."""
    torch.manual_seed(0)
    prior, bank = _filled(k=8, infill=0.2, anchors=0.6, noise="band")
    g = torch.Generator().manual_seed(0)
    train_on_pairs(prior, bank, g, 400)
    words, target, lp, cls = held_out_positions(prior, bank, g)
    assert torch.equal(cls, words[torch.arange(64), target])
    top1 = float((lp.argmax(-1) == cls).float().mean())
    assert top1 > 0.6, top1  # a unigram: 1/8
    # and the estimate it samples from follows the rule: a sampled row's pairs are pairs
    z = prior.sample(16, 8, steps=20, generator=torch.Generator().manual_seed(1))
    c = prior.bank.classes(z).view(16, 4, 2)
    pairs = float(((c[..., 0] % 2 == 0) & (c[..., 1] == c[..., 0] + 1)).float().mean())
    assert pairs > 0.5, pairs  # chance: 1/16


def test_a_tied_readout_gives_the_free_heads_logits_at_the_start_and_learns_through_the_bank():
    """Both readouts start at zero, so both heads' logits are the log-frequency plus the same
    likelihood terms; the tied head's context logit of entry i is ⟨q(h), B_i⟩."""
    bank = _bank(8)
    g = torch.Generator().manual_seed(2)
    heads = [BankHead(12, D, 8, readout=r) for r in ("free", "tied")]
    for head in heads:
        head.set_bank(bank, torch.log(torch.full((8,), 0.9 / 8)), math.log(0.1))
    heads[1].other.load_state_dict(heads[0].other.state_dict())  # the same "other" mean
    h, z, sigma = torch.randn(5, 12, generator=g), torch.randn(5, D, generator=g), torch.rand(5, generator=g)
    (free, _, _), (tied, _, _) = (head.logits(h, z, sigma) for head in heads)
    assert torch.allclose(free, tied, atol=1e-5)
    tied_head = heads[1]
    with torch.no_grad():
        tied_head.query.bias.copy_(bank[3] * 0.5)  # a context that points at entry 3
    moved, _, _ = tied_head.logits(h, z, sigma)
    assert torch.allclose(moved[:, :8] - tied[:, :8], (0.5 * bank[3] @ bank.T).expand(5, 8), atol=1e-4)
    assert not hasattr(tied_head, "readout")  # no (K + 1) × width weight
    moved.logsumexp(-1).sum().backward()
    assert tied_head.query.weight.grad is not None and tied_head.bias.grad is not None


def test_a_micro_context_prior_with_a_tied_readout_learns_the_pair_rule():
    from zonkey.components.prior.context import ContextPriorConfig
    torch.manual_seed(0)
    ctx = LevelContext(level=0, d_model=8, max_segment=6, n_compress=2, heads=2, ffn_mult=2, dropout=0.0,
                       attention=None)
    prior = ContextPriorConfig(bank_size=8, d_model=32, layers=1, max_len=16, window=2, readout="tied").build(ctx)
    bank = _bank(8)
    prior.head.set_bank(bank, torch.log(torch.full((8,), 0.9 / 8)), math.log(0.1))
    g = torch.Generator().manual_seed(0)
    train_on_pairs(prior, bank, g, 150)
    _, _, lp, cls = held_out_positions(prior, bank, g)
    top1 = float((lp.argmax(-1) == cls).float().mean())
    assert top1 > 0.8, top1  # a unigram: 1/8
