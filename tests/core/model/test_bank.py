"""The emergent vocabulary: segments counted by their bytes, and a bank whose latents equal what
the encoder gives those segments inside text, also after the encoder moved."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_recipe
from zonkey.core.model.bank import build_bank, count_segments, encode_segments
from zonkey.core.model.network import build_model
from zonkey.core.recipe import validate_recipe
from zonkey.data import encode_texts

pytestmark = pytest.mark.usefixtures("single_thread")

TEXTS = ["The river flows through the old city.", "The cat sat on the mat, and the dog sat too.",
         "A river, a city and a cat."]


def _model():
    rec = micro_recipe().model_dump()
    rec["model"]["levels"][0]["splitter"]["existence"] = "straight_through"
    torch.manual_seed(0)
    return build_model(validate_recipe(rec)).eval()


def _in_text_latents(model):
    """{segment bytes: its latents wherever it occurs} from the ordinary encoder walk over TEXTS."""
    batch = encode_texts(TEXTS)
    p = model.encode(batch.tokens, batch.valid, upto=1)[0]
    seg = p.split.segments
    rows = batch.tokens[seg.doc[:, None], seg.positions]
    m = model.levels[0].cfg.max_segment
    found: dict[bytes, list[torch.Tensor]] = {}
    for i, n in enumerate(seg.span.clamp(max=m).tolist()):
        found.setdefault(bytes(rows[i, :n].tolist()), []).append(p.latents[i])
    return found


def test_segments_are_counted_by_their_bytes():
    model = _model()
    counts = count_segments(model, TEXTS)
    assert sum(counts.values()) == sum(len(v) for v in _in_text_latents(model).values())
    assert b"".join(s for s in counts) and all(1 <= len(s) <= model.levels[0].cfg.max_segment for s in counts)


@torch.no_grad()
def test_a_bank_matches_a_direct_encode_of_its_segments_also_after_the_encoder_moved():
    model = _model()
    for moved in (False, True):
        if moved:  # the encoder moves (as in training): the rebuilt bank follows it
            for p in model.levels[0].compressor.parameters():
                p.add_(0.05 * torch.randn_like(p))
        bank = build_bank(model, TEXTS, size=8)
        assert len(bank.strings) == 8 and bank.latents.shape == (8, model.levels[0].latent_dim)
        assert 0 < bank.coverage <= 1 and bank.log_freq[0] >= bank.log_freq[-1]
        assert torch.allclose(bank.latents, encode_segments(model, bank.strings))
        seen = _in_text_latents(model)
        for s, z in zip(bank.strings, bank.latents, strict=True):
            for occurrence in seen[s]:
                assert torch.allclose(occurrence, z, atol=1e-5), s


def test_a_segment_that_cannot_be_a_latent_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="must have 1 to"):
        encode_segments(model, [b""])
    with pytest.raises(ValueError, match="must have 1 to"):
        encode_segments(model, [b"x" * (model.levels[0].cfg.max_segment + 1)])


@torch.no_grad()
def test_training_classes_follow_the_segments_bytes_and_the_bank_follows_a_moved_encoder():
    """The trainer names each position's bank entry by its segment's bytes (what the bank keeps),
    so the classes stay exact after the encoder moved, where the nearest stale latent would not;
    re-encoding the kept segments brings the latents back to the encoder's."""
    from zonkey.components.prior.context import ContextPriorConfig
    from zonkey.core.model.hierarchy import latents_to_sequence
    from zonkey.core.model.network import ZonkeyModel

    model = _model()
    level = model.levels[0]
    level.prior = ContextPriorConfig(bank_size=8, d_model=16, max_len=64).build(level.ctx)
    bank = build_bank(model, TEXTS, size=8)
    head = level.prior.bank
    head.set_bank(bank.latents, bank.log_freq, bank.other_log_freq, bank.strings)
    assert head.strings() == bank.strings
    batch = encode_texts(TEXTS)
    p = model.encode(batch.tokens, batch.valid, upto=1)[0]
    seq = latents_to_sequence(p.latents, p.split.segments.doc, len(TEXTS))
    by_bytes = ZonkeyModel._bank_classes(level, p.split.segments, batch.tokens, seq)
    assert by_bytes is not None
    cls = by_bytes[seq.valid]
    inside = cls < head.size
    assert inside.any() and (~inside).any()
    # an in-bank position's latent is its entry's, exactly (the encoder has not moved)
    assert torch.allclose(seq.x[seq.valid][inside], head.bank[cls[inside]], atol=1e-4)
    for q in level.compressor.parameters():
        q.add_(0.3 * torch.randn_like(q))
    moved = latents_to_sequence(model.encode(batch.tokens, batch.valid, upto=1)[0].latents,
                                p.split.segments.doc, len(TEXTS))
    assert not torch.allclose(moved.x[seq.valid][inside], head.bank[cls[inside]], atol=1e-2)  # stale
    assert model.encode_banks() == 1
    assert torch.allclose(moved.x[seq.valid][inside], head.bank[cls[inside]], atol=1e-4)
