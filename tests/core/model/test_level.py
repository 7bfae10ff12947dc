"""One level's training pass: the stitcher runs in training only when it has losses to give."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.model.network import build_model
from zonkey.core.recipe import validate_recipe
from zonkey.data import encode_texts

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize(("stitcher", "calls"), [("hard", 0), ("learned", 1)])
def test_the_stitcher_trains_only_when_it_has_losses(stitcher, calls):
    rec = micro_recipe().model_dump()
    rec["model"]["levels"][0]["stitcher"] = {"name": stitcher}
    torch.manual_seed(0)
    model = build_model(validate_recipe(rec)).train()
    level = model.levels[0]
    assert level.stitcher is not None and level.cfg.losses.stitch_offset > 0  # weighted in, as by default
    seen = []
    real = level.stitcher.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("true_starts") is not None)
        return real(*args, **kwargs)

    level.stitcher.forward = spy
    batch = encode_texts(["The river flows through the old city.", "A cat sat on the mat."])
    out = model(batch.tokens, batch.valid, generator=torch.Generator().manual_seed(0))
    assert len(seen) == calls
    assert ("l0.stitch_offset" in out.terms) == (calls == 1)
    assert torch.isfinite(out.loss)
