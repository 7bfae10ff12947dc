"""The ``learned`` splitter (§4): it reads only its level's vectors, ``context: causal`` reads no
position after its own, and it learns through the existence of its segments."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import batch, ctx
from zonkey.core.contracts.registry import registry


def test_learned_splitter_reads_only_its_vectors():
    """The learned splitter must not see bytes: giving it the byte tokens changes nothing."""
    torch.manual_seed(0)
    sp = registry("splitter").config("learned").build(ctx()).eval()
    x, valid, tokens = batch()
    a = sp(x, valid, sample=False, tokens=None).p_bos
    b = sp(x, valid, sample=False, tokens=tokens).p_bos
    c = sp(x, valid, sample=False, tokens=torch.zeros_like(tokens)).p_bos
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("kernels", [(3, 5), (2, 4)])
def test_learned_splitter_context(kernels):
    """``context: causal``: the BOS probability at i does not change when anything after i does;
    ``both`` (the default) does read the right-hand neighbours."""
    torch.manual_seed(0)
    causal = registry("splitter").config("learned", context="causal", kernels=kernels).build(ctx()).eval()
    both = registry("splitter").config("learned", kernels=kernels).build(ctx()).eval()
    for sp in (causal, both):  # untrained heads are flat: give them weights that read the features
        torch.nn.init.normal_(sp.head.weight)
    x, valid, _ = batch()
    x2 = x.clone()
    x2[:, 10:] = torch.randn_like(x2[:, 10:])
    pc, pc2 = causal(x, valid, sample=False).p_bos, causal(x2, valid, sample=False).p_bos
    assert torch.allclose(pc[:, :10], pc2[:, :10], atol=1e-6)
    assert not torch.allclose(pc[:, 10:], pc2[:, 10:])
    pb, pb2 = both(x, valid, sample=False).p_bos, both(x2, valid, sample=False).p_bos
    assert not torch.allclose(pb[:, 9], pb2[:, 9]), "the bidirectional splitter should see position 10 from 9"


def test_learned_splitter_gets_gradient_through_existence():
    torch.manual_seed(0)
    sp = registry("splitter").config("learned").build(ctx())
    x, valid, _ = batch()
    out = sp(x, valid, sample=True)
    loss = (out.segments.shares * torch.randn_like(out.segments.shares)).sum() + out.segments.log_existence.clamp_min(-30).sum()
    loss.backward()
    grads = [p.grad for p in sp.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize("context", ["both", "causal"])
def test_learned_splitter_window_covering_the_sequence_is_full_attention(context):
    """The default window (512) covers a 512-position chunk: the probabilities are bit for bit those of
    full attention, in training mode (with gradients) as at inference."""
    torch.manual_seed(0)
    sp = registry("splitter").config("learned", context=context, layers=2).build(ctx())
    torch.nn.init.normal_(sp.head.weight)
    assert sp.window == 512
    x, valid, _ = batch(n=512)
    windowed = sp.bos_probabilities(x, valid)
    sp.window = None  # type: ignore[assignment]  # the encoder then attends over the whole sequence
    full = sp.bos_probabilities(x, valid)
    assert torch.equal(windowed, full)


@pytest.mark.parametrize("context", ["both", "causal"])
def test_learned_splitter_pieces_equal_one_pass(context):
    """At inference a long sequence is split piece by piece with its receptive field on both sides;
    the probabilities equal those of one windowed pass over the whole sequence."""
    torch.manual_seed(0)
    sp = registry("splitter").config("learned", context=context, layers=2, window=6, piece=1000).build(ctx()).eval()
    torch.nn.init.normal_(sp.head.weight)
    x, valid, _ = batch(n=300, seed=1)
    valid[1, 250:] = True
    valid[1, 280:] = False
    with torch.no_grad():
        one = sp.bos_probabilities(x, valid)
        sp.piece = 37
        pieces = sp.bos_probabilities(x, valid)
    torch.testing.assert_close(pieces, one, rtol=0, atol=1e-6)
    # the window is real: a change reaches only the positions whose receptive field holds it
    x2 = x.clone()
    x2[:, 200] += 5.0
    with torch.no_grad():
        moved = (sp.bos_probabilities(x2, valid) - pieces).abs()[0]
    before, after = sp.reach
    assert (moved[: 200 - after] == 0).all() and (moved[201 + before:] == 0).all()
    assert moved[200] > 0 and moved[200 + before // 2] > 0
