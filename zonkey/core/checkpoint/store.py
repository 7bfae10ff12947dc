"""Saving checkpoints crash-safely, recovering from an interrupted save, pruning, finding the newest.

Layout of a run directory::

    RUN/recipe.json                 resolved recipe + zonkey_version, schema_version
    RUN/checkpoints/step-00000100/  model.safetensors, [ema.safetensors], [optimizer.safetensors],
                                    rng.safetensors, state.json (written last, lists the files)
    RUN/LATEST                      JSON pointer to the newest complete checkpoint directory
    RUN/model.safetensors           copy of the newest model weights (for ``zonkey.load(RUN)``)
    RUN/ema.safetensors             copy of the newest EMA weights, when there are any

A checkpoint is written into ``RUN/checkpoints/.tmp-*``, every file fsync'ed, renamed into place,
then LATEST is replaced; older checkpoints beyond ``keep`` are removed only after that, so a kill
at any moment leaves the previous checkpoint loadable. Re-saving a step moves the old folder aside
to ``step-N.old`` for the instant between two renames. One writer per run directory is assumed
(rank 0 under DDP).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from safetensors import SafetensorError
from torch import Tensor, nn

from zonkey.core.checkpoint.layout import (
    CHECKPOINTS_DIR,
    EMA_FILE,
    FORMAT_VERSION,
    LATEST_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    OPTIMIZER_META_KEY,
    RNG_FILE,
    STATE_FILE,
    STEP_DIR,
    TMP_PREFIX,
    list_checkpoints,
    step_name,
)
from zonkey.core.checkpoint.recipe_json import write_recipe_json, zonkey_version
from zonkey.core.checkpoint.state import optimizer_to_tensors, rng_state
from zonkey.core.recipe import SCHEMA_VERSION
from zonkey.errors import ZonkeyError
from zonkey.fsguard import mkdir_real, no_link, read_regular, real_dir
from zonkey.inputs import parse_json
from zonkey.io import (
    CheckpointError,
    CheckpointWriteError,
    atomic_write,
    atomic_write_json,
    fsync_dir,
    fsync_file,
    inside,
    json_bytes,
    sha256_file,
    write_bytes,
    write_safetensors,
)

__all__ = ["find_latest_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)


def _remove_dir(path: Path) -> None:
    """Delete a directory so that a crash half-way leaves only a ``.tmp-*`` name behind.

    A symbolic link in its place is removed as a link: nothing it points at is touched.
    """
    real_dir(path.parent, str(path.parent))  # the folder it lies in was not swapped for a link
    doomed = path.with_name(f"{TMP_PREFIX}delete-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
    if doomed.is_symlink() or not doomed.is_dir():
        doomed.unlink(missing_ok=True)
    else:
        shutil.rmtree(doomed, ignore_errors=True)


def _recover(run: Path, ckdir: Path) -> None:
    """Clean what a crashed save left behind (temp files and dirs, a moved-aside ``step-N.old``)."""
    for parent in (run, ckdir):
        for p in parent.iterdir() if parent.is_dir() else ():
            if p.name.startswith(TMP_PREFIX):
                logger.info("removing %s left by an interrupted save", p)
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    for p in list(ckdir.iterdir()):
        m = STEP_DIR.match(p.name)
        if m and m.group(2):
            live = p.with_name(step_name(int(m.group(1))))
            if live.exists():
                _remove_dir(p)
            else:
                logger.warning("restoring %s from %s (a save was interrupted while replacing it)", live, p)
                os.rename(p, live)
    fsync_dir(ckdir)


def _write_durable(path: Path, write: Callable[[Path], None]) -> dict[str, int | str]:
    """Write and flush one file of a checkpoint; its size and SHA-256 go into state.json."""
    write(path)
    fsync_file(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _copy_to_run(src: Path, dst: Path) -> None:
    def copy(tmp: Path) -> None:
        shutil.copyfile(src, tmp)

    atomic_write(dst, copy)


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(inner := getattr(model, "module", None), nn.Module) and type(model).__name__ in (
        "DistributedDataParallel",
        "DataParallel",
    ):
        model = inner
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: nn.Module,
    ema: dict[str, Tensor] | None,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    recipe: dict[str, Any] | BaseModel | None = None,
    keep: int = 2,
    rng_extra: dict[str, Tensor] | None = None,
) -> Path:
    """Save a complete checkpoint of step ``step`` atomically and update LATEST and RUN's weights.

    Args:
        run_dir: the run directory (created if needed).
        step: training step (names the directory ``checkpoints/step-%08d``).
        model: the module (DDP / torch.compile wrappers are unwrapped); its state dict is saved.
        ema: EMA weights by state-dict name (may cover only the parameters), or None.
        optimizer: saved as tensors + JSON (see ``optimizer_to_tensors``), or None.
        state: JSON-able trainer state (step, data position, scheduler, non-finite count, metrics).
        recipe: written to ``RUN/recipe.json`` when given (see ``write_recipe_json``).
        keep: how many checkpoints to keep, the new one included. Others are removed only after
            LATEST points at the new one; checkpoints of a higher step (an abandoned continuation
            of an earlier state) are removed too.
        rng_extra: further generator states saved beside this process's own in the generator file
            (the other ranks' under data-parallel training, keys ``rank<r>.*``).

    Returns:
        The new checkpoint directory.

    Raises:
        CheckpointError: unserialisable state or optimizer state (nothing written), bad arguments.
        CheckpointWriteError: the filesystem failed during the write (a full disk, permissions);
            also an ``OSError``. Any error during the write itself leaves the previous checkpoint
            and LATEST as they were, like a kill would; the partial ``.tmp-*`` directory is removed
            by the next save.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, got {step!r}")
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    run = Path(run_dir)
    ckdir = run / CHECKPOINTS_DIR
    name = step_name(step)
    state_bytes = json_bytes(state, f"{run}: trainer state")  # fail before touching the disk
    opt_parts = None
    if optimizer is not None:
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        opt_parts = (opt_tensors, {OPTIMIZER_META_KEY: json.dumps(opt_meta, allow_nan=True)})

    try:
        final = _write_checkpoint(run, ckdir, step, model, ema, opt_parts, state_bytes, recipe, rng_extra or {})
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise CheckpointWriteError(
            f"{run}: cannot save the checkpoint of step {step} ({reason}); the previous checkpoint is intact",
            exc.errno if isinstance(exc, OSError) else None,
        ) from exc
    _prune(ckdir, step, name, keep)
    return final


def _write_checkpoint(
    run: Path,
    ckdir: Path,
    step: int,
    model: nn.Module,
    ema: dict[str, Tensor] | None,
    opt_parts: tuple[dict[str, Tensor], dict[str, str]] | None,
    state_bytes: bytes,
    recipe: dict[str, Any] | BaseModel | None,
    rng_extra: dict[str, Tensor],
) -> Path:
    """The writes of :func:`save_checkpoint`, in their crash-safe order; returns the new step directory."""
    name = step_name(step)
    mkdir_real(run, str(run))
    mkdir_real(ckdir, f"{run}: {CHECKPOINTS_DIR}")  # a planted link as checkpoints/ is refused, not followed
    _recover(run, ckdir)
    if recipe is not None:
        write_recipe_json(run, recipe)

    version = zonkey_version()
    header = {"format": "pt", "step": str(step), "zonkey_version": version, "schema_version": str(SCHEMA_VERSION)}
    tmp = ckdir / f"{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    files: dict[str, dict[str, int | str]] = {}
    model_sd = _unwrap(model).state_dict()
    files[MODEL_FILE] = _write_durable(tmp / MODEL_FILE, lambda p: write_safetensors(p, model_sd, header))
    if ema is not None:
        files[EMA_FILE] = _write_durable(tmp / EMA_FILE, lambda p: write_safetensors(p, ema, header))
    if opt_parts is not None:
        files[OPTIMIZER_FILE] = _write_durable(
            tmp / OPTIMIZER_FILE, lambda p: write_safetensors(p, opt_parts[0], opt_parts[1])
        )
    files[RNG_FILE] = _write_durable(tmp / RNG_FILE, lambda p: write_safetensors(p, {**rng_state(), **rng_extra}, None))
    info = {
        "format": "zonkey-checkpoint",
        "format_version": FORMAT_VERSION,
        "step": step,
        "zonkey_version": version,
        "schema_version": SCHEMA_VERSION,
        "files": files,
        "trainer": json.loads(state_bytes),
    }
    _write_durable(tmp / STATE_FILE, lambda p: write_bytes(p, json_bytes(info, p)))
    fsync_dir(tmp)

    final = ckdir / name
    real_dir(ckdir, f"{run}: {CHECKPOINTS_DIR}")  # again at the moment of the rename
    no_link(final, f"{run}: {CHECKPOINTS_DIR}")
    old = None
    if final.exists():
        old = final.with_name(name + ".old")
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(ckdir)
    atomic_write_json(run / LATEST_FILE, {"checkpoint": f"{CHECKPOINTS_DIR}/{name}", "step": step})
    if old is not None:
        _remove_dir(old)

    _copy_to_run(final / MODEL_FILE, run / MODEL_FILE)
    if ema is not None:
        _copy_to_run(final / EMA_FILE, run / EMA_FILE)
    elif (run / EMA_FILE).exists():
        (run / EMA_FILE).unlink()
    return final


def _prune(ckdir: Path, step: int, name: str, keep: int) -> None:
    """Remove checkpoints older than the ``keep - 1`` before ``step``, and every later one."""
    real_dir(ckdir, str(ckdir))
    older = [p for s, p in list_checkpoints(ckdir) if s < step]
    doomed = older[: max(0, len(older) - (keep - 1))]
    for s, p in list_checkpoints(ckdir):
        if s > step:
            logger.warning("removing %s: newer than the checkpoint just saved (%s)", p, name)
            doomed.append(p)
    for p in doomed:
        _remove_dir(p)
    if doomed:
        fsync_dir(ckdir)


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint dir of a run: LATEST's target, else the highest ``step-*``.

    A LATEST that is unreadable or points at a missing directory is reported and skipped; the
    ``step-N.old`` left by a save interrupted while replacing step N stands in for it.

    Args:
        run_dir: the run directory.

    Returns:
        The step directory, or None when the run has no complete checkpoint.

    Raises:
        CheckpointError: LATEST points outside the run directory (once resolved).
    """
    run = Path(run_dir)
    ckdir = run / CHECKPOINTS_DIR
    latest = run / LATEST_FILE
    if latest.is_file():
        target = None
        try:
            text = read_regular(latest, str(latest), follow=True).decode("utf-8").strip()
            target = parse_json(text, str(latest))["checkpoint"] if text.startswith(("{", "[")) else text
            if isinstance(target, str) and (len(target) > 4096 or "\n" in target):
                raise TypeError("not a checkpoint path")
        except (ZonkeyError, UnicodeDecodeError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable (%s); using the newest checkpoint dir instead", latest, exc)
        if isinstance(target, str) and target:
            path = run / target
            inside(run, path, str(latest))  # a pointer out of the run is refused, not followed
            if path.is_dir():
                return path
            old = path.with_name(path.name + ".old")
            if (old / STATE_FILE).is_file():
                return old
            logger.warning("%s points at missing %s; using the newest checkpoint dir instead", latest, path)
    found = list_checkpoints(ckdir, include_old=True)
    return found[-1][1] if found else None
