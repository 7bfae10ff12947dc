"""bf16 autocast leaves the existence math in float32: the splitter's probabilities, existence,
shares and the attention bias are exactly what they are without autocast.

On CPU with bfloat16 autocast (what ``train.precision: bf16`` does on CUDA, where the same ops
are cast the same way): a probability of 1 − 1e-4 survives, where bf16 would round it to 1.0.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.components.context import batch, ctx
from zonkey.core.contracts.registry import registry
from zonkey.core.nn.attention import existence_bias
from zonkey.core.nn.existence import float32_logits
from zonkey.core.nn.segments import make_split

NEAR_ONE = 1 - 1e-4


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_bfloat16_rounds_the_probability_the_existence_needs() -> None:
    """Why the care is needed: the value is lost in bf16."""
    assert torch.tensor(NEAR_ONE).to(torch.bfloat16).item() == 1.0


def test_bos_head_logits_are_float32_under_autocast() -> None:
    head = torch.nn.Linear(16, 1)
    h = torch.randn(3, 5, 16)
    plain = head(h)
    with _bf16():
        assert head(h).dtype == torch.bfloat16  # what a plain head gives under autocast
        logits = float32_logits(head, h)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, plain)


def test_learned_splitter_keeps_a_probability_near_one_under_autocast() -> None:
    splitter = registry("splitter").config("learned").build(ctx())
    with torch.no_grad():  # every position's logit is the head's bias: logit(1 − 1e-4)
        splitter.head.weight.zero_()
        splitter.head.bias.fill_(math.log(NEAR_ONE / (1 - NEAR_ONE)))
    x, valid, tokens = batch()
    plain = splitter.bos_probabilities(x, valid)
    with _bf16():
        mixed = splitter.bos_probabilities(x, valid)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, plain)
    torch.testing.assert_close(mixed[valid], torch.full_like(mixed[valid], NEAR_ONE), rtol=0, atol=1e-7)


def test_existence_shares_and_bias_are_exact_under_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    b, n, d, m, k = 3, 24, 8, 6, 2
    x = torch.randn(b, n, d, generator=g)
    valid = torch.ones(b, n, dtype=torch.bool)
    valid[2, 17:] = False
    # probabilities at both ends of the clamp, where rounding would show
    p = torch.rand(b, n, generator=g).where(torch.rand(b, n, generator=g) < 0.5, torch.tensor(NEAR_ONE))
    p[:, 1::5] = 1e-4
    p = p.masked_fill(~valid, 0.0)
    bos = (torch.rand(b, n, generator=g) < 0.3) & valid
    bos[:, 0] = True
    plain = make_split(x, valid, p, bos, m, k)
    with _bf16():
        mixed = make_split(x, valid, p, bos, m, k)
        mixed_bias = existence_bias(mixed.segments.log_existence)
    for name in ("log_existence", "shares"):
        a, r = getattr(mixed.segments, name), getattr(plain.segments, name)
        assert a.dtype == torch.float32 and torch.equal(a, r), name
    assert torch.equal(mixed_bias, existence_bias(plain.segments.log_existence))
    # one step of 1 − 1e-4 costs log(1e-4) of existence, not the clamp's log(1e-6)
    steps = plain.segments.log_existence[:, 1:] - plain.segments.log_existence[:, :-1]
    assert torch.isclose(steps, torch.tensor(math.log(1e-4)), rtol=1e-3).any()


def test_bf16_precision_on_cpu_trains_in_float32_with_a_note(tmp_path) -> None:
    from tests.helpers import micro_recipe
    from zonkey.core.train.trainer import Trainer

    lines: list[str] = []
    t = Trainer(micro_recipe(steps=1, precision="bf16"), tmp_path / "run", progress=False, log=lines.append)
    assert not t.autocast
    assert any("train.precision bf16 applies on CUDA only" in line for line in lines)
    assert t.fit().step == 1


@pytest.mark.gpu
def test_bf16_training_step_on_cuda_keeps_existence_float32(tmp_path) -> None:
    from tests.helpers import micro_recipe
    from zonkey.core.train.trainer import Trainer

    t = Trainer(micro_recipe(steps=2, precision="bf16", device="cuda"), tmp_path / "run", progress=False,
                log=lambda s: None)
    assert t.autocast
    batch = t.batches.batch(0).to(t.device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = t.model(batch.tokens, batch.valid, scales={})
    seg = out.levels[0].split.segments
    assert seg.log_existence.dtype == torch.float32 and seg.shares.dtype == torch.float32
    assert out.levels[0].split.p_bos.dtype == torch.float32
    res = t.fit()
    assert res.step == 2 and math.isfinite(res.last_loss)
