"""The EMA's grouped update and the trainer's AdamW: the same arithmetic as the plain forms."""

from __future__ import annotations

import torch
from torch import nn

from zonkey.core.train.optim import EMA, adamw


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    net.register_buffer("table", torch.arange(3))  # an integer buffer: copied, never averaged
    net.register_buffer("scale", torch.ones(3))  # a float buffer: averaged at the global step
    return net


def test_the_ema_update_is_bit_identical_to_the_per_tensor_formula() -> None:
    net, decay = _net(), 0.99
    ema = EMA(net, decay)
    shadow = {k: v.detach().float().clone() if v.dtype.is_floating_point else v.clone()
              for k, v in net.state_dict().items()}
    counts = {k: 0 for k, _ in net.named_parameters()}
    params = dict(net.named_parameters())
    first = next(iter(params))
    for step in range(25):
        for name, p in params.items():  # the first weight trains only from step 8: its own decay
            p.grad = None if name == first and step < 8 else torch.ones_like(p)
            p.data.add_(0.1 * torch.randn_like(p))
        net.scale.add_(0.5)
        net.table.add_(1)
        ema.update(net, step)
        for k, v in net.state_dict().items():
            if not v.dtype.is_floating_point:
                shadow[k].copy_(v)
                continue
            n = step
            if k in params:
                counts[k] += params[k].grad is not None
                n = counts[k] - 1
                if n < 0:
                    shadow[k].copy_(v)
                    continue
            d = min(decay, (1 + n) / (10 + n))
            shadow[k].mul_(d).add_(v.float(), alpha=1 - d)
    for k, v in shadow.items():
        assert torch.equal(ema.shadow[k], v), k
    assert not torch.equal(ema.shadow[first], net.state_dict()[first])


def test_the_trainers_adamw_follows_the_default_implementation() -> None:
    nets = [_net(), _net()]
    groups = [[{"params": [p for p in n.parameters() if p.ndim >= 2], "weight_decay": 0.1},
               {"params": [p for p in n.parameters() if p.ndim < 2], "weight_decay": 0.0}] for n in nets]
    fast = adamw(groups[0], 3e-3, (0.9, 0.95))
    plain = torch.optim.AdamW(groups[1], lr=3e-3, betas=(0.9, 0.95))
    x = torch.randn(16, 4)
    for step in range(30):
        for opt, net in ((fast, nets[0]), (plain, nets[1])):
            for g in opt.param_groups:
                g["lr"] = 3e-3 * (1 - step / 30)
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(nets[0][0].weight, _net()[0].weight)  # both trained away from the start


def test_buffers_a_module_names_in_ema_copy_are_held_as_they_are_not_averaged():
    class Holder(torch.nn.Module):
        ema_copy = ("bank",)

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.register_buffer("bank", torch.zeros(3))
            self.register_buffer("scale", torch.zeros(3))

    net = torch.nn.Sequential(Holder())
    ema = EMA(net, decay=0.9)
    with torch.no_grad():
        net[0].bank.fill_(5.0)
        net[0].scale.fill_(5.0)
    ema.update(net, step=100)
    assert torch.equal(ema.shadow["0.bank"], torch.full((3,), 5.0))  # copied
    assert float(ema.shadow["0.scale"][0]) < 5.0  # averaged at the global step
