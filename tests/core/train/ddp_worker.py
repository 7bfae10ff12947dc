"""One rank of the data-parallel tests, started by ``torch.distributed.run`` (not a test module).

Usage: ``python -m torch.distributed.run --nproc-per-node N tests/core/train/ddp_worker.py RECIPE OUT MID NAN``.
Trains RECIPE into ``OUT/run`` to step MID, where rank 0 copies the run to ``OUT/run-mid``, then
on to ``train.steps``; every rank then writes its own final weights to ``OUT/rank<r>.safetensors``.
At step NAN (0-based) the last rank's loss is made NaN: every rank must skip that step together.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

from zonkey.core.recipe import Recipe
from zonkey.core.train.trainer import Trainer


class PoisonedLastRank(nn.Module):
    """The trainer's network, with a NaN loss on the last rank at one step."""

    def __init__(self, trainer: Trainer, nan_step: int) -> None:
        super().__init__()
        self.trainer, self.net, self.nan_step = trainer, trainer.net, nan_step
        assert trainer.dist is not None
        self.poisoned = trainer.dist.rank == trainer.dist.world - 1

    def forward(self, *args, **kwargs):
        out = self.net(*args, **kwargs)
        if self.poisoned and self.trainer.step == self.nan_step:
            out = dataclasses.replace(out, loss=out.loss * float("nan"))
        return out


def main() -> None:
    recipe, out, mid = Recipe.load(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    trainer = Trainer(recipe, out / "run", progress=False)
    trainer.net = PoisonedLastRank(trainer, int(sys.argv[4]))
    trainer.fit(stop_at=mid)
    assert trainer.dist is not None and dist.is_initialized()
    if trainer.dist.main:
        shutil.copytree(out / "run", out / "run-mid")
    dist.barrier()
    trainer.fit()
    weights = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(weights, str(out / f"rank{os.environ['RANK']}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
