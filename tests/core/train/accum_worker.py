"""One rank of the gradient-accumulation test under data parallelism (not a test module).

Usage: ``python -m torch.distributed.run --nproc-per-node 2 tests/core/train/accum_worker.py RECIPE OUT``.
Trains RECIPE (its ``train.grad_accum`` slices per step) into ``OUT/run`` with every slice's
randomness seeded by its content (:class:`ContentSeeded`), then writes this rank's weights to
``OUT/rank<r>.safetensors``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import Tensor, nn

from zonkey.core.recipe import Recipe
from zonkey.core.train.trainer import Trainer


class ContentSeeded(nn.Module):
    """The trainer's network with torch's generator seeded from each slice's bytes before its pass.

    A slice's noise then depends on its rows only, not on which rank or which pass of the step
    computes it, so two ranks × N slices and one process × 2N slices (the same row sets) agree.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, tokens: Tensor, valid: Tensor, **kwargs):
        rows = torch.arange(1, tokens.shape[0] + 1, dtype=torch.int64)[:, None]
        torch.manual_seed(int(((tokens * valid) * rows).sum()) + 7919 * int(tokens.shape[0]))
        return self.net(tokens, valid, **kwargs)


def main() -> None:
    recipe, out = Recipe.load(sys.argv[1]), Path(sys.argv[2])
    trainer = Trainer(recipe, out / "run", progress=False)
    trainer.net = ContentSeeded(trainer.net)
    trainer.fit()
    weights = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(weights, str(out / f"rank{os.environ['RANK']}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
