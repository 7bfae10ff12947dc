"""Level l+1 reads level l's latents in BOS order, and its losses train level l."""

from __future__ import annotations

import torch

import zonkey
from zonkey.core.model.hierarchy import latents_to_sequence
from zonkey.core.model.network import build_model
from zonkey.core.recipe import validate_recipe


def test_latents_to_sequence_orders_by_document_and_start():
    lat = torch.arange(12, dtype=torch.float32).view(6, 2).requires_grad_()
    doc = torch.tensor([0, 0, 0, 2, 2, 2])
    seq = latents_to_sequence(lat, doc, b=3)
    assert seq.x.shape == (3, 3, 2)
    assert seq.valid.tolist() == [[True] * 3, [False] * 3, [True] * 3]
    assert torch.equal(seq.x[0], lat[:3].detach()) and torch.equal(seq.x[2], lat[3:].detach())
    assert seq.position.tolist() == [0, 1, 2, 0, 1, 2]
    seq.x.sum().backward()
    assert torch.equal(lat.grad, torch.ones_like(lat))


def _two_level():
    return validate_recipe({"model": {"levels": [
        {"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
         "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0}},
        {"d_model": 32, "max_segment": 8, "n_compress": 2, "heads": 2},
    ]}})


def test_level1_losses_reach_level0_compressor_and_splitter():
    torch.manual_seed(0)
    model = build_model(_two_level())
    tokens = torch.randint(97, 123, (3, 80))
    valid = torch.ones(3, 80, dtype=torch.bool)
    out = model(tokens, valid, scales={"l0": 0.0})  # only level 1's loss
    assert "l1.recon_clean" in out.terms and torch.isfinite(out.loss)
    out.loss.backward()
    comp0 = [p.grad for p in model.levels[0].compressor.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in comp0), "level-1 loss must train level 0"
    split0 = [p.grad for p in model.levels[0].splitter.parameters()]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in split0)


def _level1_grads(alpha: float, beta: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    data = _two_level().model_dump(mode="json")
    data["model"]["levels"][0]["grad_from_above"] = {"latents": beta, "split": alpha}
    torch.manual_seed(0)
    model = build_model(validate_recipe(data))
    tokens = torch.randint(97, 123, (3, 80))
    valid = torch.ones(3, 80, dtype=torch.bool)
    torch.manual_seed(1)
    out = model(tokens, valid, scales={"l0": 0.0})  # only level 1's loss
    out.loss.backward()
    grads = {f"splitter.{n}": p.grad.clone() if p.grad is not None else torch.zeros_like(p)
             for n, p in model.levels[0].splitter.named_parameters()}
    grads.update({f"compressor.{n}": p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                  for n, p in model.levels[0].compressor.named_parameters()})
    return out.loss.detach(), grads


def test_split_grad_from_above_scales_only_the_split_gradient():
    loss1, g1 = _level1_grads(1.0)
    loss0, g0 = _level1_grads(0.0)
    lossh, gh = _level1_grads(0.5)
    assert torch.allclose(loss1, loss0, rtol=1e-5) and torch.allclose(loss1, lossh, rtol=1e-5), "the forward pass must not change"
    split1 = sum(float(g.abs().sum()) for k, g in g1.items() if k.startswith("splitter."))
    assert split1 > 0
    assert all(float(g.abs().sum()) == 0 for k, g in g0.items() if k.startswith("splitter."))
    for k, g in gh.items():
        if k.startswith("splitter."):
            assert torch.allclose(g, 0.5 * g1[k], rtol=1e-4, atol=1e-7), k
    # the compressor still learns from the level above, by the same amount
    for k, g in g0.items():
        if k.startswith("compressor."):
            assert torch.allclose(g, g1[k], rtol=1e-4, atol=1e-7), k


def test_grad_from_above_scales_everything_level1_sends_down():
    loss1, g1 = _level1_grads(1.0)
    loss0, g0 = _level1_grads(1.0, beta=0.0)
    lossq, gq = _level1_grads(0.0, beta=0.25)
    assert torch.allclose(loss1, loss0, rtol=1e-5) and torch.allclose(loss1, lossq, rtol=1e-5)
    assert all(float(g.abs().sum()) == 0 for g in g0.values()), "beta 0: level 1 must not change level 0"
    for k, g in gq.items():
        # compressor: beta; split: beta × alpha = 0
        want = torch.zeros_like(g) if k.startswith("splitter.") else 0.25 * g1[k]
        assert torch.allclose(g, want, rtol=1e-4, atol=1e-7), k


def test_level_weight_scales_its_loss():
    torch.manual_seed(0)
    model = build_model(_two_level())
    tokens = torch.randint(97, 123, (2, 60))
    valid = torch.ones(2, 60, dtype=torch.bool)
    torch.manual_seed(1)
    half = model(tokens, valid, scales={"l1": 0.5})
    torch.manual_seed(1)
    full = model(tokens, valid)
    w = model.levels[1].cfg.losses
    l1 = sum(getattr(w, k.split(".", 1)[1]) * v for k, v in full.terms.items() if k.startswith("l1."))
    assert torch.allclose(full.loss - half.loss, 0.5 * l1, rtol=1e-4, atol=1e-5)


def test_switched_off_top_levels_are_skipped():
    torch.manual_seed(0)
    model = build_model(_two_level())
    tokens = torch.randint(97, 123, (2, 60))
    valid = torch.ones(2, 60, dtype=torch.bool)
    out = model(tokens, valid, scales={"l1": 0.0})
    assert not any(k.startswith("l1.") for k in out.terms) and len(out.levels) == 1


def _with_level1_losses(losses: dict, short_last: bool = False):
    """A seeded two-level model whose level 1 has ``losses``, run once on random lowercase text."""
    torch.manual_seed(0)
    rec = _two_level().model_dump()
    rec["model"]["levels"][1]["losses"] = losses
    model = build_model(validate_recipe(rec))
    tokens = torch.randint(97, 123, (3, 80))
    valid = torch.ones(3, 80, dtype=torch.bool)
    if short_last:
        valid[2, 50:] = False
    return model, tokens, valid, model(tokens, valid)


def test_mlm_term_at_level1_is_finite_and_trains_the_compressor():
    model, _, _, out = _with_level1_losses({"mlm": 1.0})
    assert "l1.mlm" in out.terms and torch.isfinite(out.terms["l1.mlm"]) and float(out.terms["l1.mlm"]) > 0
    out.terms["l1.mlm"].backward()
    assert model.levels[1].mask_vector.grad is not None
    assert float(model.levels[1].compressor.cls.grad.abs().sum() + model.levels[1].mlm_head.weight.grad.abs().sum()) > 0


def test_split_shows_every_level():
    torch.manual_seed(0)
    model = build_model(_two_level())
    res = zonkey.split(model, ["The cat sat on the mat. It purred."])
    levels = res[0]["levels"]
    assert len(levels) == 2
    assert "".join(levels[0]["segments"]) == "".join(levels[1]["segments"]) == "The cat sat on the mat. It purred."
    assert len(levels[1]["p_bos"]) == len(levels[0]["segments"])


def test_decode_term_scores_level1_slots_through_level0():
    """``losses.decode`` at level 1: its own-span slots stand for level-0 segments in order, are
    decoded by level 0's denoiser and scored against the bytes; gradients reach both levels."""
    from zonkey.core.model.network import own_slot_rows

    model, tokens, valid, out = _with_level1_losses({"decode": 1.0}, short_last=True)
    seg0, seg1 = out.levels[0].split.segments, out.levels[1].split.segments
    # level 1's own spans tile each document's level-0 segments: the rows are exactly 0..s0-1
    assert torch.equal(own_slot_rows(seg1, seg0), torch.arange(seg0.num))
    dec = out.terms["l1.decode"]
    assert torch.isfinite(dec) and float(dec) > 0 and 0.0 <= out.stats["l1.decode_acc"] <= 1.0
    dec.backward()
    assert float(model.levels[1].denoiser.out.weight.grad.abs().sum()) > 0
    assert float(model.levels[0].denoiser.out.weight.grad.abs().sum()) > 0
    # with the weight at 0 the term is not computed at all
    assert "l1.decode" not in _with_level1_losses({"decode": 0.0}, short_last=True)[3].terms


def test_unweighted_mixed_step_is_not_run():
    """While the curriculum weighs a level's diffusion and dirty terms at 0, the objective's extra
    denoiser passes are skipped (and their terms are not reported)."""
    torch.manual_seed(0)
    model = build_model(_two_level())
    level = model.levels[0]
    calls = []
    inner = level.denoiser.forward

    def counting(*a, **k):
        calls.append(a[0].shape[0])
        return inner(*a, **k)

    level.denoiser.forward = counting
    tokens = torch.randint(97, 123, (2, 60))
    valid = torch.ones(2, 60, dtype=torch.bool)
    off = {"l1": 0.0, "l0.diffusion": 0.0, "l0.recon_dirty": 0.0}
    out = model(tokens, valid, scales=off)
    assert len(calls) == 1, "the clean pass alone"
    assert "l0.diffusion" not in out.terms and "l0.recon_dirty" not in out.terms and torch.isfinite(out.loss)
    out.loss.backward()
    calls.clear()
    out = model(tokens, valid, scales={"l1": 0.0, "l0.recon_dirty": 0.0})
    assert len(calls) == 3, "clean pass + the mixed step's two denoiser passes"
    assert "l0.diffusion" in out.terms


def test_decode_fraction_decodes_a_subset_of_level1_slots():
    rec = _two_level().model_dump()
    rec["model"]["levels"][1]["losses"] = {"decode": 1.0}
    seen = {}
    for frac in (1.0, 0.5):
        rec["model"]["levels"][1]["decode_fraction"] = frac
        torch.manual_seed(0)
        model = build_model(validate_recipe(rec))
        level0 = model.levels[0]
        calls = []
        inner = level0.denoiser.forward
        level0.denoiser.forward = lambda *a, calls=calls, inner=inner, **k: (calls.append(a[0].shape[0]), inner(*a, **k))[1]
        tokens = torch.randint(97, 123, (3, 80))
        valid = torch.ones(3, 80, dtype=torch.bool)
        out = model(tokens, valid)
        assert torch.isfinite(out.terms["l1.decode"])
        seen[frac] = (calls[-1], out.levels[0].split.segments.num)  # the decode pass is level 0's last call
    rows_all, s0 = seen[1.0]
    assert rows_all == s0, "every level-0 segment is decoded from level 1 at fraction 1"
    rows_half, s0h = seen[0.5]
    assert rows_half == round(0.5 * s0h)
