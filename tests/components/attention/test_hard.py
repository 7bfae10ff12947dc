"""The ``hard`` attention backend (the ablation without soft existence): thresholded positions are
padding, and no gradient reaches the existence."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.components.attention.cases import attention_case
from zonkey.components.attention.hard import hard_attention
from zonkey.core.nn.attention import probabilistic_attention

pytestmark = pytest.mark.usefixtures("single_thread")


def test_hard_treats_positions_below_the_threshold_as_padding_and_ignores_existence_otherwise() -> None:
    q, k, v, _ = attention_case(b=1, n=4)
    log_e = torch.tensor([[0.0, math.log(0.6), math.log(0.4), math.log(0.9)]], dtype=torch.float64)
    out = hard_attention(q, k, v, log_e, threshold=0.5)
    keep = torch.tensor([True, True, False, True])
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[None, None, None, :])
    torch.testing.assert_close(out[:, :, keep], expected[:, :, keep], rtol=0, atol=1e-12)
    assert (out[:, :, ~keep] == 0).all()  # a thresholded-away position is padding: its row is 0 too
    looser = hard_attention(q, k, v, log_e, threshold=0.3)
    torch.testing.assert_close(looser, F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-12)


def test_hard_sends_no_gradient_to_the_existence() -> None:
    q, k, v, log_e = attention_case()
    q.requires_grad_(True)
    log_e.requires_grad_(True)
    probabilistic_attention(q, k, v, log_e, backend="hard").sum().backward()
    assert log_e.grad is None
    assert q.grad is not None and torch.isfinite(q.grad).all()
