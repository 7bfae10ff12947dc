"""Which compressors expose per-slot states (``encode``, the ``SlotStatesCompressor`` protocol), and
that a level asking for masked prediction refuses one that does not."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import D, K, M, ctx
from zonkey.core.contracts.protocols import Compressor, SlotStatesCompressor
from zonkey.core.contracts.registry import registry
from zonkey.core.model.network import build_model
from zonkey.core.recipe import validate_recipe


def test_cls_gives_latents_and_a_state_per_slot():
    comp = registry("compressor").config("cls").build(ctx())
    assert isinstance(comp, SlotStatesCompressor)
    x, le = torch.randn(3, M, D), torch.zeros(3, M)
    z, states = comp.encode(x, le)
    assert z.shape == (3, K * D) and states.shape == (3, M, D)
    torch.testing.assert_close(comp(x, le), z)


def test_mean_pooling_has_no_slot_states():
    comp = registry("compressor").config("mean").build(ctx())
    assert isinstance(comp, Compressor) and not isinstance(comp, SlotStatesCompressor)


def _level(compressor: str, mlm: float):
    return validate_recipe({"model": {"levels": [{
        "d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2,
        "compressor": {"name": compressor, "layers": 1}, "losses": {"mlm": mlm},
    }]}})


def test_masked_prediction_needs_a_compressor_with_slot_states():
    with pytest.raises(ValueError, match=r"model.levels.0.losses.mlm needs a compressor with per-slot states"):
        build_model(_level("mean", 0.1))
    build_model(_level("mean", 0.0))
    assert build_model(_level("cls", 0.1)).levels[0].mask_vector.shape == (16,)
