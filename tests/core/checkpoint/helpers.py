"""Shared pieces of the checkpoint tests: a tiny model with tied weights, a training step that
draws from every generator, and assertions on saved tensors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zonkey.core.checkpoint import save_checkpoint

VOCAB, WIDTH = 11, 8


class Net(nn.Module):
    """Tiny model with the awkward parts: tied weights, dropout, an integer buffer."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, width)
        self.body = nn.Sequential(nn.Linear(width, 16), nn.GELU(), nn.Dropout(0.2), nn.Linear(16, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, VOCAB, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.norm(self.body(self.emb(x))))


def make(seed: int = 0) -> tuple[Net, torch.optim.AdamW, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(seed)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    return model, opt, sched


def train_step(model: Net, opt: torch.optim.Optimizer, sched, ema: dict[str, torch.Tensor]) -> None:
    # draws from torch, Python and numpy generators so that all three must be restored
    n = random.randrange(3, 7)
    x = torch.randint(0, VOCAB, (4, n))
    noise = torch.from_numpy(np.random.standard_normal((4, n, VOCAB)).astype(np.float32))
    loss = F.cross_entropy((model(x) + 0.01 * noise).flatten(0, 1), x.flatten())
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    with torch.no_grad():
        for k, p in model.named_parameters():
            ema[k].lerp_(p, 0.1)


def new_ema(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in model.named_parameters()}


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def save(run: Path, step: int, model: nn.Module, *, opt=None, ema=None, keep: int = 2, **kw) -> Path:
    return save_checkpoint(run, step=step, model=model, ema=ema, optimizer=opt, state={"step": step, **kw}, keep=keep)


def step_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def assert_clean(run: Path) -> None:
    leftovers = [p for p in run.rglob("*") if p.name.startswith(".tmp-") or p.name.endswith(".old")]
    assert leftovers == []
