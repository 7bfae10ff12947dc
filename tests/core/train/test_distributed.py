"""Data-parallel training: two gloo ranks on CPU against one process over the same global batch.

One ``torch.distributed.run`` launch (about 15 s on two busy cores) trains the micro recipe with
two ranks; the checks read what it left. The single-process reference runs the same global batch
as the same two shards (rows 0::2 and 1::2, each with its rank's generator), so it computes the
gradient DDP averages, by autograd accumulation instead of an all-reduce.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from tests.helpers import micro_recipe
from zonkey.core import checkpoint as ckpt
from zonkey.core.recipe import recipe_to_dict
from zonkey.core.train.distributed import rank_seed, shard_batch
from zonkey.core.train.trainer import Trainer
from zonkey.data import Batch

REPO = Path(__file__).resolve().parents[3]
STEPS, MID, NAN_STEP = 4, 2, 1  # NAN_STEP: rank 1's loss is NaN there (0-based step)


class TwoShards(nn.Module):
    """The model run as two ranks would run it, in one process: each shard with its own generator."""

    def __init__(self, trainer: Trainer, rank1_state: Tensor | None = None) -> None:
        super().__init__()
        self.model, self.trainer, seed = trainer.model, trainer, trainer.cfg.seed
        if rank1_state is None:
            mine = torch.get_rng_state()
            torch.manual_seed(rank_seed(seed, 1))
            rank1_state = torch.get_rng_state()
            torch.set_rng_state(mine)
        self.rank1_state = rank1_state

    def forward(self, tokens: Tensor, valid: Tensor, *, scales: dict[str, float]):
        rows = torch.arange(tokens.shape[0])
        batch = Batch(tokens, valid, rows, rows)
        s0, w0 = shard_batch(batch, 0, 2)
        out0 = self.model(s0.tokens, s0.valid, scales=scales)
        mine = torch.get_rng_state()
        torch.set_rng_state(self.rank1_state)
        s1, w1 = shard_batch(batch, 1, 2)
        out1 = self.model(s1.tokens, s1.valid, scales=scales)
        self.rank1_state = torch.get_rng_state()
        torch.set_rng_state(mine)
        if self.trainer.step == NAN_STEP:
            out1 = dataclasses.replace(out1, loss=out1.loss * float("nan"))
        return dataclasses.replace(out0, loss=(out0.loss * w0 + out1.loss * w1) / 2)


def _comparable(name: str, t: Tensor) -> Tensor:
    """The part of a tensor whose training is not rounding noise: the key third of a ``qkv`` bias gets
    an exactly zero gradient in exact arithmetic (a softmax ignores a per-query constant), so its
    computed gradient is rounding error, which Adam scales up to a full step of either sign."""
    if name.endswith("attn.qkv.bias"):
        d = t.shape[0] // 3
        return torch.cat([t[:d], t[2 * d:]])
    return t


def _assert_weights_close(got: dict[str, Tensor], want: dict[str, Tensor], atol: float = 1e-5) -> None:
    for k in (k for k in got if got[k].is_floating_point()):
        torch.testing.assert_close(_comparable(k, got[k]), _comparable(k, want[k]), rtol=1e-4, atol=atol,
                                   msg=lambda m, k=k: f"{k}: {m}")


def _reference(trainer: Trainer, rank1_state: Tensor | None = None) -> dict[str, Tensor]:
    trainer.net = TwoShards(trainer, rank1_state)
    trainer._boundary_values = lambda: {}  # rank 0's shard is not the batch the trainer holds
    trainer.fit()
    return trainer.model.state_dict()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    recipe = out / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe(steps=STEPS, log_every=1))))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "core" / "train" / "ddp_worker.py"), str(recipe), str(out), str(MID), str(NAN_STEP)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_two_gloo_ranks_agree_and_match_one_process_over_the_same_global_batch(two_ranks: Path, tmp_path: Path) -> None:
    r0, r1 = load_file(str(two_ranks / "rank0.safetensors")), load_file(str(two_ranks / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    assert [k for k in r0 if not torch.equal(r0[k], r1[k])] == []
    ref = _reference(Trainer(micro_recipe(steps=STEPS, log_every=1), tmp_path / "one", progress=False, log=lambda s: None))
    trained = [k for k in r0 if r0[k].is_floating_point()]
    moved = [k for k in trained if not torch.equal(r0[k], ckpt.load_checkpoint(two_ranks / "run-mid").model[k])]
    assert len(moved) > len(trained) // 2  # the steps did train: the comparison is not of initial weights
    _assert_weights_close(r0, ref)


def test_only_rank_0_writes_and_the_checkpoint_holds_every_rank(two_ranks: Path) -> None:
    rows = [json.loads(line) for line in (two_ranks / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # one row per step, not one per rank
    c = ckpt.load_checkpoint(two_ranks / "run")
    assert c.step == STEPS and c.state["world"] == 2
    assert c.state["skipped"] == 1  # rank 1's NaN: both ranks skipped that step (had one not, the run would hang)
    assert rows[NAN_STEP]["loss"] is None and all(r["loss"] is not None for i, r in enumerate(rows) if i != NAN_STEP)
    assert "rank1.torch.cpu" in c.rng and "rank0.torch.cpu" not in c.rng
    # the global batch is the recipe's: a step counts the bytes of the whole batch, not of a shard
    one = Trainer(micro_recipe(steps=STEPS), two_ranks / "unused", progress=False, log=lambda s: None)
    assert c.state["bytes_seen"] == sum(one.batches.batch(i).num_bytes for i in range(STEPS))


def test_resume_with_the_same_ranks_continues_their_streams(two_ranks: Path, tmp_path: Path) -> None:
    """The mid-run checkpoint of two ranks, continued as two shards from rank 1's saved generator,
    reaches the weights of the uninterrupted two-rank run."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_ranks / "run-mid", run)
    saved = ckpt.load_checkpoint(run).rng["rank1.torch.cpu"]
    t = Trainer(micro_recipe(steps=STEPS, log_every=1), run, resume=True, progress=False, log=lambda s: None)
    assert t.step == MID
    ref = _reference(t, saved.to(torch.uint8))
    _assert_weights_close(load_file(str(two_ranks / "rank0.safetensors")), ref)


def test_resume_with_another_rank_count(two_ranks: Path, tmp_path: Path) -> None:
    """A checkpoint of two ranks resumes in one process: same weights, optimizer and step, on to the end."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(two_ranks / "run-mid", run)
    t = Trainer(micro_recipe(steps=STEPS), run, resume=True, progress=False, log=lambda s: None)
    mid = ckpt.load_checkpoint(run)
    assert t.step == MID and all(torch.equal(t.model.state_dict()[k], v) for k, v in mid.model.items())
    res = t.fit()
    assert res.step == STEPS and res.skipped_steps == 1 and math.isfinite(res.last_loss)  # the one skip is before MID
    c = ckpt.load_checkpoint(run)
    assert c.step == STEPS and c.state["world"] == 1
