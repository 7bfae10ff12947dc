"""Data-parallel training across processes: what the trainer does differently under ``torchrun``.

``torchrun --nproc-per-node N -m zonkey train RECIPE`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. Each one builds the
same trainer; this module turns that environment into a process group (NCCL on CUDA, gloo on CPU),
wraps the model in :class:`~torch.nn.parallel.DistributedDataParallel`, and supplies the few
decisions that keep N processes one run:

* **One global batch per step, whatever N is.** Every rank computes the recipe's batch of the step
  (a pure function of the data, seed and step) and keeps rows ``rank, rank + N, …`` of it
  (:func:`shard_batch`). Its loss is scaled by ``N · rows_r / b``, so the gradient DDP averages is
  the row-weighted mean of the shards' gradients. A shard without rows (a batch with fewer rows
  than ranks) runs one borrowed row at weight 0: it still reaches every collective.
* **Seeds per rank.** All ranks build the model from the recipe's seed (and DDP broadcasts rank
  0's weights anyway); afterwards rank r > 0 draws from its own seed (:func:`rank_seed`), rank 0
  keeps the single-process stream, so one rank is exactly the single-process run.
* **Only rank 0 writes** checkpoints, metrics and progress. The checkpoint holds every rank's
  generator (:func:`gather_rng`), so a resume with the same N is exact; with another N the ranks
  above 0 start from fresh per-rank seeds (the weights, optimizer and data position carry over).
* **Unused parameters.** The curriculum switches levels and terms on and off, and a level's
  mixed step may draw no segments on one rank, so the set of parameters that receive a gradient
  changes from step to step and between ranks. DDP is built with ``find_unused_parameters=True``
  (a static graph would be wrong once the set changes); its cost is one walk of the autograd graph
  per step.
* **One decision on a non-finite loss.** Before any rank calls ``backward`` the ranks all-reduce
  their weighted loss and a non-finite flag (:func:`agree_loss`); every rank skips, or none does.
  A non-finite gradient needs no extra agreement: DDP's averaged gradients are the same on every
  rank, so their norm is too.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zonkey.data import Batch
from zonkey.errors import ZonkeyError

__all__ = ["Distributed", "agree_loss", "gather_rng", "rank_seed", "restore_rank_rng", "setup", "shard_batch",
           "wrap_model"]


class DistributedSetupError(ZonkeyError, RuntimeError):
    """The torchrun environment cannot be turned into a process group (one line, what and why)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run.

    Attributes:
        rank: global rank, 0..world-1.
        world: number of processes.
        local_rank: rank on this machine (the CUDA device index under NCCL).
        device: the device this rank trains on.
        owns_group: this module created the process group (and :func:`teardown` destroys it).
    """

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={raw!r} is not an integer") from None


def setup(device_name: str) -> Distributed | None:
    """Join the data-parallel run the environment describes, or None for a single process.

    Args:
        device_name: ``train.device`` (``auto``, ``cpu``, ``cuda``; an explicit ``cuda:i`` is
            replaced by ``cuda:LOCAL_RANK``, one device per process).

    Returns:
        The rank's :class:`Distributed`, or None when ``WORLD_SIZE`` is unset or 1.

    Raises:
        DistributedSetupError: a malformed environment, or more CUDA processes on a machine than devices.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return None
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise DistributedSetupError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise DistributedSetupError(f"train.device is {device_name!r} but CUDA is not available here; "
                                    "use 'cpu' or 'auto' (gloo)")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} "
                                        "CUDA devices; start at most one process per device")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                device_id=device if use_cuda else None)
    elif dist.get_world_size() != world:
        raise DistributedSetupError(f"a process group of {dist.get_world_size()} ranks exists, "
                                    f"but WORLD_SIZE is {world}")
    return Distributed(rank=rank, world=world, local_rank=local, device=device, owns_group=owns)


def teardown(ctx: Distributed | None) -> None:
    """Destroy the process group :func:`setup` created (after a last barrier)."""
    if ctx is not None and ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s generator, started at ``step`` (rank 0 never uses it: it keeps the recipe's stream)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8, person=b"zonkey/ranks").digest()
    return int.from_bytes(digest, "big") >> 1  # what torch.manual_seed takes


def shard_batch(batch: Batch, rank: int, world: int) -> tuple[Batch, float]:
    """Rank ``rank``'s rows of the global batch and the weight of its loss.

    Args:
        batch: the step's global batch, (b, n).
        rank: this rank.
        world: number of ranks.

    Returns:
        (rows ``rank::world`` as a batch (b_r, n), ``world · b_r / b``). A rank with no rows gets
        row 0 at weight 0.
    """
    b = batch.tokens.shape[0]
    rows = torch.arange(rank, b, world)
    weight = world * len(rows) / b
    if len(rows) == 0:
        rows, weight = torch.zeros(1, dtype=torch.long), 0.0
    assert batch.chunk_index is not None  # set by Batch.__post_init__
    return Batch(batch.tokens[rows], batch.valid[rows], batch.doc_index[rows], batch.chunk_index[rows]), weight


def wrap_model(model: nn.Module, ctx: Distributed) -> nn.Module:
    """The model under DDP: rank 0's weights broadcast, gradients averaged over the ranks.

    ``find_unused_parameters=True`` because the set of parameters a step uses changes with the
    curriculum and with what each rank's shard draws (the module docstring says why not a static
    graph). Buffers are not broadcast each step: every buffer is computed identically on each rank
    (fitted tables, byte weights) and none is updated by a forward pass.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # newer torch renames the switch (and still syncs once at construction, which is harmless here)
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync: dict[str, Any] = {"forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True, **no_sync)


def agree_loss(loss: Tensor, ctx: Distributed | None) -> tuple[float, bool]:
    """Every rank's verdict on this step's loss, reached together before any backward.

    Args:
        loss: this rank's (weighted) scalar loss.
        ctx: the run, or None for a single process.

    Returns:
        (the mean of the ranks' weighted losses, every rank's loss finite). On one process:
        (the loss, whether it is finite).
    """
    value = loss.detach().float()
    if ctx is None:
        v = float(value)
        return v, math.isfinite(v)
    ok = torch.isfinite(value)
    pair = torch.stack([torch.where(ok, value, torch.zeros_like(value)), (~ok).float()]).to(ctx.device)
    dist.all_reduce(pair)
    return float(pair[0]) / ctx.world, float(pair[1]) == 0.0


def _own_rng(ctx: Distributed) -> dict[str, Tensor]:
    out = {"torch.cpu": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        out["torch.cuda"] = torch.cuda.get_rng_state(ctx.device)
    return out


def gather_rng(ctx: Distributed | None) -> dict[str, Tensor]:
    """Every rank's torch generators, for rank 0's checkpoint (a collective: all ranks call it).

    Returns:
        On rank 0, ``{"rank<r>.torch.cpu": …, "rank<r>.torch.cuda": …}`` for r ≥ 1 (rank 0's own
        generators are saved as in a single process); empty elsewhere and on a single process.
    """
    if ctx is None:
        return {}
    states: list[dict[str, Tensor] | None] = [None] * ctx.world
    dist.all_gather_object(states, _own_rng(ctx))
    if not ctx.main:
        return {}
    return {f"rank{r}.{k}": v.cpu() for r, s in enumerate(states) if r > 0 and s is not None for k, v in s.items()}


def restore_rank_rng(ctx: Distributed, saved: dict[str, Tensor], saved_world: int | None, seed: int,
                     step: int) -> bool:
    """Set rank r > 0's generators on resume: its saved ones when the run had the same ranks, else fresh ones.

    Rank 0 restores the checkpoint's own generators (as a single process does); this is for the others.

    Returns:
        Whether the saved generators were restored (False: seeded from ``rank_seed(seed, rank, step)``).
    """
    key = f"rank{ctx.rank}.torch.cpu"
    if saved_world == ctx.world and key in saved:
        torch.set_rng_state(saved[key].to("cpu", torch.uint8))
        cuda = saved.get(f"rank{ctx.rank}.torch.cuda")
        if cuda is not None and ctx.device.type == "cuda":
            torch.cuda.set_rng_state(cuda.to("cpu", torch.uint8), ctx.device)
        return True
    torch.manual_seed(rank_seed(seed, ctx.rank, step))
    return False
