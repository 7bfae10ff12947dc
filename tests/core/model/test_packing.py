"""``model.packing: buckets`` and ``varlen`` against the padded reference, end to end through a two-level model."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zonkey.core.model.level import Level
from zonkey.core.model.network import build_model
from zonkey.core.recipe import RecipeError, validate_recipe

TEXT = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex an old jukebox; "
        "pack my box with five dozen liquor jugs and go home at once. ")


def _recipe(packing: str, slots: str = "causal", **level0: Any) -> Any:
    den = {"name": "ddmm", "decoder": "linear", "decoder_layers": 1, "layers": 2, "slots": slots}
    return validate_recipe({
        "model": {
            "attention": {"name": "sdpa"},
            "packing": packing,
            "levels": [
                {"d_model": 16, "max_segment": 10, "n_compress": 2, "heads": 2, "ffn_mult": 2,
                 "splitter": {"name": "whitespace"}, "compressor": {"name": "cls", "layers": 1, "skip": True},
                 "denoiser": den, "objective": {"name": "ddmm", "fraction": 0.5}, "stitcher": {"name": "hard"},
                 "losses": {"recon_dirty": 0.3, "diffusion": 0.3}, **level0},
                {"d_model": 32, "max_segment": 6, "n_compress": 2, "heads": 2, "ffn_mult": 1,
                 "splitter": {"name": "fixed", "every": 3}, "compressor": {"name": "cls", "layers": 1, "skip": True},
                 "denoiser": den, "objective": {"name": "ddmm", "fraction": 0.5}, "stitcher": {"name": "hard"},
                 "losses": {"recon_dirty": 0.3, "diffusion": 0.3, "mlm": 0.1, "decode": 1.0}},
            ],
        },
    }, source="<packing>")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.tensor(list((TEXT * 2).encode()), dtype=torch.long)
    tokens = torch.stack([data[:120], data[40:160], data[10:130]])
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[2, 97:] = False
    return tokens, valid


def _run(packing: str) -> tuple[dict[str, float], dict[str, torch.Tensor], dict[str, float]]:
    torch.manual_seed(0)
    model = build_model(_recipe(packing)).train()
    # every segment fits its bucket: the denoisers' existence past the first slot is ~e^-8 per slot,
    # so the slots a bucket leaves out carry no loss (the splitters have no parameters)
    for level in model.levels:
        for head in (level.denoiser.bos, level.denoiser.rough_bos):
            torch.nn.init.constant_(head.bias, 8.0)
    tokens, valid = _batch()
    out = model(tokens, valid, generator=torch.Generator().manual_seed(5))
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in out.terms.items()}, grads, out.stats


@pytest.mark.parametrize("packing", ["buckets", "varlen"])
def test_packed_losses_and_gradients_equal_the_padded_ones(packing: str) -> None:
    terms_pad, grads_pad, _ = _run("off")
    terms_pack, grads_pack, stats = _run(packing)
    # the packed run computed far fewer slots at both levels
    assert stats["l0.packed_slots"] < 0.8 and stats["l1.packed_slots"] < 0.8
    assert terms_pack.keys() == terms_pad.keys() and {"l1.decode", "l1.mlm", "l0.token"} <= terms_pad.keys()
    for k, v in terms_pad.items():
        assert terms_pack[k] == pytest.approx(v, rel=1e-4, abs=1e-5), k
    assert grads_pack.keys() == grads_pad.keys()
    for k, g in grads_pad.items():
        torch.testing.assert_close(grads_pack[k], g, rtol=1e-3, atol=1e-5, msg=k)


def test_packing_needs_causal_denoiser_slots_and_a_known_value() -> None:
    with pytest.raises(RecipeError) as err:
        _recipe("buckets", slots="bidirectional")
    assert "packing" in str(err.value) and "slots: causal" in str(err.value) and "\n" not in str(err.value).strip()
    with pytest.raises(RecipeError, match="packing"):
        _recipe("pack")
    assert _recipe("off", slots="bidirectional").model.packing == "off"


def test_a_level_whose_denoiser_cannot_pack_names_the_option() -> None:
    cfg = _recipe("off", slots="bidirectional").model.levels[0]
    attn = build_model(_recipe("off")).attention
    with pytest.raises(ValueError, match=r"model\.packing: buckets .* denoiser 'ddmm' cannot \(give it slots: causal\)"):
        Level(cfg, 0, attn, packing="buckets")
    auto = _recipe("off", denoiser={"name": "ddmm", "decoder": "autoregressive", "slots": "causal"}).model.levels[0]
    Level(auto, 0, attn, packing="buckets")  # one slot at a time still decodes a bucket's length
    with pytest.raises(ValueError, match=r"model\.packing: varlen .* denoiser 'ddmm' cannot \(an autoregressive decoder"):
        Level(auto, 0, attn, packing="varlen")
    with pytest.raises(ValueError, match="model.packing must be one of"):
        Level(cfg, 0, attn, packing="pack")  # type: ignore[arg-type]


@pytest.mark.parametrize("packing", ["buckets", "varlen"])
def test_inference_encoding_at_own_length_equals_the_padded_one(packing: str) -> None:
    torch.manual_seed(0)
    pad = build_model(_recipe("off")).eval()
    pack = build_model(_recipe(packing)).eval()
    pack.load_state_dict(pad.state_dict())
    tokens, valid = _batch()
    with torch.no_grad():
        a, b = pad.encode(tokens, valid), pack.encode(tokens, valid)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(q.latents, p.latents, rtol=1e-5, atol=1e-5)


def test_a_level_can_set_its_own_packing() -> None:
    """``levels.L.packing`` overrides the model's: a level left padded may keep bidirectional slots."""
    raw = _recipe("varlen").model_dump(mode="json")
    raw["model"]["levels"][1]["packing"] = "off"
    model = build_model(validate_recipe(raw, source="<packing>"))
    assert [level.packing for level in model.levels] == ["varlen", "off"]
    tokens, valid = _batch()
    out = model.train()(tokens, valid, generator=torch.Generator().manual_seed(5))
    assert "l0.packed_slots" in out.stats and "l1.packed_slots" not in out.stats
    raw = _recipe("varlen").model_dump(mode="json")
    raw["model"]["levels"][1]["denoiser"]["slots"] = "bidirectional"
    with pytest.raises(RecipeError, match=r"packing: varlen .*levels\.1\.denoiser\.slots: causal"):
        validate_recipe(raw, source="<packing>")
    raw["model"]["levels"][1]["packing"] = "off"
    assert validate_recipe(raw, source="<packing>").model.level_packing(1) == "off"


def test_packing_tail_reaches_packed_levels_only() -> None:
    raw = _recipe("varlen").model_dump(mode="json")
    raw["model"]["packing_tail"] = "stand_in"
    raw["model"]["levels"][1]["packing"] = "off"
    model = build_model(validate_recipe(raw, source="<packing>"))
    assert [level.packing_tail for level in model.levels] == [True, False]
    assert not any(level.packing_tail for level in build_model(_recipe("varlen")).levels)


def test_a_level_can_set_its_own_packing_tail() -> None:
    raw = _recipe("varlen").model_dump(mode="json")
    raw["model"]["levels"][1]["packing_tail"] = "stand_in"
    model = build_model(validate_recipe(raw, source="<packing>"))
    assert [level.packing_tail for level in model.levels] == [False, True]
