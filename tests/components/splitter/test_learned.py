"""The ``learned`` splitter (§4): it reads only its level's vectors, ``context: causal`` reads no
position after its own, and it learns through the existence of its segments."""

from __future__ import annotations

import pytest
import torch

from tests.components.context import batch, ctx
from zonkey.core.registry import registry


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
