"""The level-0 byte loss: the paper's tied-logit cross-entropy, its focal and class-balanced variants."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zonkey.core.model.network import build_model
from zonkey.core.nn.losses import byte_balance_weights, token_loss
from zonkey.core.nn.sphere import atanh_cos_logits
from zonkey.core.recipe import validate_recipe


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(256, 16, generator=g)
    targets = torch.randint(0, 256, (5, 6), generator=g)
    # slots near their targets' embeddings, some much nearer than others
    x_hat = table[targets] + torch.randn(5, 6, 16, generator=g) * torch.linspace(0.1, 3.0, 6)[:, None]
    weights = torch.rand(5, 6, generator=g)
    return x_hat, targets, table, weights


def test_plain_token_loss_is_the_share_weighted_cross_entropy():
    x_hat, targets, table, weights = _inputs()
    loss, correct = token_loss(x_hat, targets, table, weights)
    logits = atanh_cos_logits(x_hat, table)
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    assert torch.allclose(loss, (ce * weights).sum() / weights.sum(), rtol=1e-5)
    assert torch.equal(correct, logits.argmax(-1) == targets)


def test_focal_scales_each_byte_by_one_minus_its_probability():
    x_hat, targets, table, weights = _inputs(1)
    logits = atanh_cos_logits(x_hat, table)
    p = logits.softmax(-1).gather(-1, targets[..., None])[..., 0]
    ce = -p.log()
    for gamma in (1.0, 2.0):
        loss, _ = token_loss(x_hat, targets, table, weights, focal=gamma)
        want = (ce * (1 - p) ** gamma * weights).sum() / weights.sum()
        assert torch.allclose(loss, want, rtol=1e-4), gamma
    # confident bytes lose more of their weight than hard ones: the loss falls, and the hardest
    # byte's share of it rises
    plain, _ = token_loss(x_hat, targets, table, weights)
    focal, _ = token_loss(x_hat, targets, table, weights, focal=2.0)
    assert focal < plain
    hard = ce.argmax()
    share_plain = (ce * weights).flatten()[hard] / (ce * weights).sum()
    fw = ce * (1 - p) ** 2 * weights
    assert fw.flatten()[hard] / fw.sum() > share_plain


def test_focal_gradient_is_finite_on_a_perfect_prediction():
    table = torch.randn(256, 4)
    targets = torch.tensor([[3, 7]])
    x_hat = table[targets].clone().requires_grad_()
    loss, _ = token_loss(x_hat, targets, table, torch.ones(1, 2), focal=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x_hat.grad).all()


def _level0(focal: float, balance: float = 0.0):
    return validate_recipe({"model": {"byte_loss": {"focal": focal, "balance": balance}, "levels": [
        {"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
         "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0}},
    ]}})


def test_token_focal_reaches_the_level_zero_byte_loss():
    tokens = torch.randint(97, 123, (2, 60))
    valid = torch.ones(2, 60, dtype=torch.bool)
    out = {}
    for focal in (0.0, 2.0):
        torch.manual_seed(0)
        model = build_model(_level0(focal))
        torch.manual_seed(1)
        out[focal] = model(tokens, valid).terms
    # same weights, same draws: only the byte terms differ, and focal makes them smaller
    assert out[2.0]["l0.token"] < out[0.0]["l0.token"]
    for k, v in out[0.0].items():
        if k not in ("l0.token", "l0.recon_dirty"):
            assert torch.allclose(v, out[2.0][k], rtol=1e-5, atol=1e-7), k


def test_token_focal_on_a_level_is_an_error():
    from zonkey.core.recipe import RecipeError

    # the byte loss sits beside the byte table (model.byte_loss), so no level can set it
    data = _level0(0.0).model_dump(mode="json")
    data["model"]["levels"].append({"d_model": 32, "max_segment": 4, "n_compress": 2, "heads": 2, "token_focal": 1.0})
    with pytest.raises(RecipeError, match=r"levels\.1\.token_focal: unknown key .*model\.byte_loss\.focal \(only level 0 has a byte loss\)"):
        validate_recipe(data)


def test_balance_weights_favour_rare_bytes_and_keep_the_mean():
    counts = torch.zeros(256, dtype=torch.long)
    counts[32], counts[101], counts[74], counts[195] = 10_000, 5_000, 40, 3
    assert torch.equal(byte_balance_weights(counts, 0.0, 30.0), torch.ones(256))
    for alpha in (0.3, 0.5, 1.0):
        w = byte_balance_weights(counts, alpha, 1e9)  # uncapped
        f = (counts + 1).double() / (counts + 1).sum()
        assert abs(float((f * w.double()).sum()) - 1.0) < 1e-6, alpha  # mean 1 over the bytes
        assert w[195] > w[74] > w[101] > w[32], alpha  # rarer weighs more
        ratio = float(w[74] / w[101])
        assert abs(ratio - (5001 / 41) ** alpha) < 1e-3 * ratio
    capped = byte_balance_weights(counts, 1.0, 30.0)
    assert float(capped.max()) == 30.0 and float(capped[32]) < 1.0


def test_token_balance_weights_the_level_zero_byte_loss():
    """With byte weights set, a rare byte's share of the token loss rises; all ones change nothing."""
    tokens = torch.full((2, 60), 101)
    tokens[:, 7] = 74  # one rare byte per document
    valid = torch.ones(2, 60, dtype=torch.bool)
    out = {}
    for name, w_rare in (("ones", 1.0), ("rare", 20.0)):
        torch.manual_seed(0)
        model = build_model(_level0(0.0, balance=0.5))
        model.levels[0].byte_weights[74] = w_rare
        torch.manual_seed(1)
        out[name] = model(tokens, valid).terms
    torch.manual_seed(0)
    plain = build_model(_level0(0.0))
    assert "byte_weights" not in plain.state_dict()  # never saved: old checkpoints load as before
    torch.manual_seed(1)
    base = plain(tokens, valid).terms
    assert torch.allclose(base["l0.token"], out["ones"]["l0.token"])
    assert not torch.allclose(out["rare"]["l0.token"], out["ones"]["l0.token"])
    for k, v in base.items():
        if k not in ("l0.token", "l0.recon_dirty"):
            assert torch.allclose(v, out["rare"][k], rtol=1e-5, atol=1e-7), k


def test_trainer_sets_balance_weights_from_the_training_bytes(tmp_path):
    from zonkey.core.train.trainer import Trainer

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(["aaaa aaaa aaaa Zq"] * 40) + "\n")
    rec = _level0(0.0, balance=0.5).model_dump(mode="json")
    rec["data"] = {"source": str(corpus), "max_doc_bytes": 64, "batch_bytes": 256, "heldout_fraction": 0.01}
    rec["train"] = {"steps": 1, "threads": 1}
    logs = []
    tr = Trainer(validate_recipe(rec), tmp_path / "run", progress=False, log=logs.append)
    w = tr.model.levels[0].byte_weights
    assert w[ord("Z")] > w[ord(" ")] > w[ord("a")]
    assert any("byte_loss.balance 0.5" in line for line in logs)


def test_token_balance_on_a_level_is_an_error():
    from zonkey.core.recipe import RecipeError

    data = _level0(0.0).model_dump(mode="json")
    data["model"]["levels"].append({"d_model": 32, "max_segment": 4, "n_compress": 2, "heads": 2, "token_balance": 0.5})
    with pytest.raises(RecipeError, match=r"levels\.1\.token_balance: unknown key .*model\.byte_loss\.balance \(only level 0"):
        validate_recipe(data)


def test_existence_bce_tail_stands_in_for_the_slots_not_computed() -> None:
    """``tail``: a row's last kept slot counts once for itself and once for every slot after it; a
    row kept whole and the padded call are unchanged; with the later slots' existence equal to the
    last kept one's, the stand-in equals the padded BCE."""
    from zonkey.core.nn.losses import existence_bce

    m = 6
    target = torch.full((2, m), float("-inf"))
    target[0, :2] = 0.0  # row 0: a 2-slot segment, its first non-existing slot is 2
    target[1, :] = 0.0  # row 1: fills every slot
    steps = torch.tensor([[-0.1, -0.2, -1.5, 0.0, 0.0, 0.0], [-0.05] * m])
    pred = steps.cumsum(dim=1)  # row 0 stays flat past slot 2: the slots after it exist as much as it does
    keep = torch.zeros(2, m, dtype=torch.bool)
    keep[0, :3] = True
    keep[1, :] = True
    full = existence_bce(pred, target)
    dropped = existence_bce(pred, target, keep)
    stand_in = existence_bce(pred, target, keep, tail=True)
    assert float(dropped) < float(full)
    torch.testing.assert_close(stand_in, full)
    assert float(existence_bce(pred, target, torch.ones_like(keep), tail=True)) == pytest.approx(float(full))
