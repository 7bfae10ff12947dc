"""``train.grad_accum``: N row slices per optimizer step give the update of the whole batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import Tensor, nn

from tests.core.train.accum_worker import ContentSeeded
from tests.core.train.test_distributed import _assert_weights_close
from tests.helpers import micro_recipe
from zonkey.core.contracts.outputs import ModelOutput
from zonkey.core.recipe import recipe_to_dict, validate_recipe
from zonkey.core.train.accumulate import micro_batches
from zonkey.core.train.trainer import Trainer
from zonkey.data import Batch

REPO = Path(__file__).resolve().parents[3]
QUIET = {"progress": False, "log": lambda s: None}


def _recipe(**train) -> object:
    """The micro recipe with 8-row batches (room for 4 slices of 2 rows)."""
    data = recipe_to_dict(micro_recipe(**train))
    data["data"]["batch_bytes"] = 768
    return validate_recipe(data, source="<micro, 8 rows>")


class RowMean(nn.Module):
    """A deterministic loss that is a mean over rows (of the squared mean byte embedding of each row),
    on the model's own byte table: its gradient over a batch is the row-weighted mean of its slices'."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows: list[int] = []

    def forward(self, tokens: Tensor, valid: Tensor, *, scales: dict[str, float]) -> ModelOutput:
        self.rows.append(int(tokens.shape[0]))
        x = self.model.table[tokens] * valid[..., None]
        loss = (x.sum(1) / valid.sum(1, keepdim=True)).pow(2).sum(-1).mean()
        return ModelOutput(loss=loss, terms={"row_mean": loss}, stats={}, levels=[])


def test_slices_partition_the_rows_and_their_shares_add_to_one() -> None:
    tokens = torch.arange(7)[:, None].expand(7, 3).contiguous()
    batch = Batch(tokens, torch.ones(7, 3, dtype=torch.bool), torch.arange(7))
    parts = micro_batches(batch, 3)
    assert sorted(int(t) for p, _ in parts for t in p.tokens[:, 0]) == list(range(7))
    assert [w for _, w in parts] == pytest.approx([3 / 7, 2 / 7, 2 / 7])
    assert micro_batches(batch, 1) == [(batch, 1.0)]
    more = micro_batches(Batch(tokens[:2], torch.ones(2, 3, dtype=torch.bool), torch.arange(2)), 3)
    assert [w for _, w in more] == [0.5, 0.5, 0.0]  # a slice with no row: row 0 at share 0


@pytest.mark.parametrize("n", [2, 4])
def test_n_slices_give_the_gradient_and_the_update_of_the_whole_batch(tmp_path: Path, n: int) -> None:
    whole = Trainer(_recipe(steps=3), tmp_path / "one", **QUIET)
    sliced = Trainer(_recipe(steps=3, grad_accum=n), tmp_path / "acc", **QUIET)
    whole.net, sliced.net = RowMean(whole.model), RowMean(sliced.model)
    whole.train_step()
    sliced.train_step()
    b = whole.net.rows[0]
    assert whole.net.rows == [b] and len(sliced.net.rows) == n and sum(sliced.net.rows) == b
    torch.testing.assert_close(sliced.model.embed.grad, whole.model.embed.grad, rtol=1e-5, atol=1e-7)
    whole.step = sliced.step = 1
    whole.fit()
    sliced.fit()
    torch.testing.assert_close(sliced.model.embed, whole.model.embed, rtol=1e-5, atol=1e-6)
    assert not torch.equal(whole.model.embed, Trainer(_recipe(steps=3), tmp_path / "init", **QUIET).model.embed)


def test_the_model_trains_with_slices_and_one_is_the_plain_step(tmp_path: Path) -> None:
    t = Trainer(_recipe(steps=2, grad_accum=3, log_every=1), tmp_path / "run", **QUIET)
    calls: list[int] = []
    net = t.net
    t.net = ContentSeeded(net)
    t.net.register_forward_pre_hook(lambda m, args, kw: calls.append(int(args[0].shape[0])), with_kwargs=True)
    res = t.fit()
    assert len(calls) == 6 and res.skipped_steps == 0 and res.last_loss == res.last_loss
    with pytest.raises(Exception, match="train.grad_accum"):
        _recipe(grad_accum=0)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp-accum")
    recipe = out / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(_recipe(steps=3, grad_accum=2, log_every=1))))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "core" / "train" / "accum_worker.py"), str(recipe), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_two_gloo_ranks_of_two_slices_match_one_process_of_four(two_ranks: Path, tmp_path: Path) -> None:
    """Rank r's slice j holds global rows r + 2j :: 4, one process's slice r + 2j the same rows, each
    slice's noise seeded by its bytes: the ranks' averaged update equals the one process's."""
    r0, r1 = load_file(str(two_ranks / "rank0.safetensors")), load_file(str(two_ranks / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    one = Trainer(_recipe(steps=3, grad_accum=4, log_every=1), tmp_path / "one", **QUIET)
    one.net = ContentSeeded(one.model)
    one.fit()
    init = Trainer(_recipe(steps=3), tmp_path / "init", **QUIET).model.state_dict()
    moved = [k for k in r0 if r0[k].is_floating_point() and not torch.equal(r0[k], init[k])]
    assert len(moved) > len(r0) // 2
    # the ranks' all-reduce adds the slices' gradients in another order than one process does; Adam
    # scales that rounding up on a weight whose gradient is near 0 (on one CPU: 2.1e-5 on one of the
    # compressor's 512 feed-forward weights, all others within 1e-5). 5e-5 stays far under one Adam
    # step at lr 3e-3
    _assert_weights_close(r0, one.model.state_dict(), atol=5e-5)
