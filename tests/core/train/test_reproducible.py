"""The same seed, thread count and machine give bit-identical weights."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers import micro_recipe
from zonkey.core import checkpoint as ckpt
from zonkey.core.train.trainer import Trainer


def _train(run: Path, seed: int) -> ckpt.Checkpoint:
    threads = torch.get_num_threads()
    try:
        Trainer(micro_recipe(steps=6, seed=seed, threads=1), run, progress=False, log=lambda s: None).fit()
    finally:
        torch.set_num_threads(threads)
    return ckpt.load_checkpoint(run)


def _differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def test_two_trainings_with_one_seed_and_one_thread_are_bit_identical(tmp_path: Path) -> None:
    first, second = _train(tmp_path / "a", seed=3), _train(tmp_path / "b", seed=3)
    assert not _differ(first.model, second.model)
    assert first.ema is not None and second.ema is not None and not _differ(first.ema, second.ema)
    assert first.optimizer is not None and second.optimizer is not None
    assert not _differ(first.optimizer[0], second.optimizer[0])
    assert first.state["bytes_seen"] == second.state["bytes_seen"]
    other = _train(tmp_path / "c", seed=4)
    assert _differ(first.model, other.model), "another seed gave the same weights: the test could not fail"
