"""Loading checkpoints: the newest of a run, strict state loading, EMA weights over the model's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zonkey.core.checkpoint.layout import (
    CHECKPOINTS_DIR,
    EMA_FILE,
    LATEST_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    OPTIMIZER_META_KEY,
    RNG_FILE,
    STATE_FILE,
    STEP_DIR,
)
from zonkey.core.checkpoint.recipe_json import check_versions
from zonkey.core.checkpoint.store import find_latest_checkpoint
from zonkey.inputs import InputError, parse_json
from zonkey.io import CheckpointError, inside, read_json, read_safetensors, sha256_file

__all__ = ["Checkpoint", "load_checkpoint", "load_state_strict", "load_weights", "overlay_ema"]


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the requested device).

    Attributes:
        dir: the step directory (or the run directory for a weights-only run).
        step: training step it was saved at.
        model: model state dict.
        ema: EMA weights, or None.
        optimizer: ``(tensors, meta)`` for ``optimizer_from_tensors``, or None.
        state: the trainer's JSON state as given to ``save_checkpoint``.
        rng: random generator states for ``set_rng_state`` (empty if none were saved).
    """

    dir: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: tuple[dict[str, Tensor], dict[str, Any]] | None
    state: dict[str, Any]
    rng: dict[str, Tensor]


def _load_weights_only(run: Path, device: str | torch.device) -> Checkpoint:
    # no state.json, so no hashes to check: only the containment of the two files
    model, meta = read_safetensors(inside(run, run / MODEL_FILE, str(run)), device)
    check_versions(meta, run / MODEL_FILE)
    ema = read_safetensors(inside(run, run / EMA_FILE, str(run)), device)[0] if (run / EMA_FILE).is_file() else None
    step = int(meta["step"]) if meta.get("step", "").isdigit() else 0
    return Checkpoint(dir=run, step=step, model=model, ema=ema, optimizer=None, state={}, rng={})


def _check_files(step_dir: Path, info: Any, root: Path) -> dict[str, Any]:
    """The files state.json lists, each inside ``root`` and present with the recorded size."""
    state_path = step_dir / STATE_FILE
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict) or not isinstance(info.get("step"), int):
        raise CheckpointError(f"{state_path}: not a zonkey checkpoint state (needs 'step' and 'files')")
    check_versions(info, state_path)
    files = info["files"]
    if MODEL_FILE not in files:
        raise CheckpointError(f"{state_path}: lists no {MODEL_FILE}")
    for fname, entry in files.items():
        fpath = step_dir / fname
        inside(root, fpath, str(state_path))
        if not fpath.is_file():
            raise CheckpointError(f"{fpath}: missing file (listed in {STATE_FILE})")
        want = entry.get("bytes") if isinstance(entry, dict) else None
        if isinstance(want, int) and fpath.stat().st_size != want:
            raise CheckpointError(
                f"{fpath}: truncated or modified ({fpath.stat().st_size} bytes, {STATE_FILE} says {want})"
            )
    return files


def _verify(step_dir: Path, files: dict[str, Any], names: Iterable[str]) -> None:
    """Each named file's SHA-256 against the one state.json recorded (older checkpoints have none)."""
    for fname in names:
        entry = files.get(fname)
        want = entry.get("sha256") if isinstance(entry, dict) else None
        if want is None:
            continue
        fpath = step_dir / fname
        if not isinstance(want, str) or sha256_file(fpath) != want.lower():
            raise CheckpointError(
                f"{fpath}: content does not match the sha256 in {STATE_FILE} (corrupt or modified; "
                "--no-verify loads it anyway)"
            )


def _read_optimizer(path: Path, device: str | torch.device) -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors, header = read_safetensors(path, device)
    if OPTIMIZER_META_KEY not in header:
        raise CheckpointError(f"{path}: no {OPTIMIZER_META_KEY!r} metadata")
    try:
        return tensors, parse_json(header[OPTIMIZER_META_KEY], f"{path}: optimizer metadata")
    except InputError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", include_optimizer: bool = True, verify: bool = True
) -> Checkpoint:
    """Load a checkpoint directory, or the newest checkpoint of a run directory.

    Every path read from the directory given (LATEST's pointer, the step directory, the files
    state.json lists) must resolve inside it, symbolic links followed.

    Args:
        path: a step directory (holds state.json) or a run directory: LATEST is followed; without
            it the highest complete ``checkpoints/step-*``; without any, ``RUN/model.safetensors``
            (and ``RUN/ema.safetensors``) alone. ``.tmp-*`` leftovers are ignored.
        device: where the tensors are loaded.
        include_optimizer: False skips the optimizer file and the generator states (inference).
        verify: check every file read against the SHA-256 state.json recorded for it (checkpoints
            saved before hashes were recorded have none and load unchecked). Sizes and the
            safetensors format are checked either way.

    Returns:
        The :class:`Checkpoint`.

    Raises:
        CheckpointError: nothing to load, a missing or corrupt file (truncated or invalid
            safetensors, bad JSON, a content hash that does not match), a path that leads out of
            the run directory, or a newer format or schema version. The message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    root = path  # what the files must stay in: the directory given, a run or a step directory
    if (path / STATE_FILE).is_file() or STEP_DIR.match(path.name):
        step_dir: Path | None = path
    else:
        step_dir = find_latest_checkpoint(path)
        if step_dir is not None:
            inside(path, step_dir, str(path))
    if step_dir is None:
        if (path / MODEL_FILE).is_file():
            return _load_weights_only(path, device)
        raise CheckpointError(
            f"{path}: no checkpoint found (no {LATEST_FILE}, no {CHECKPOINTS_DIR}/step-*, no {MODEL_FILE})"
        )

    state_path = step_dir / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing file (incomplete checkpoint)")
    info = read_json(state_path)
    files = _check_files(step_dir, info, root)

    model = read_safetensors(step_dir / MODEL_FILE, device)[0]
    ema = read_safetensors(step_dir / EMA_FILE, device)[0] if EMA_FILE in files else None
    optimizer = None
    rng: dict[str, Tensor] = {}
    if include_optimizer:
        if OPTIMIZER_FILE in files:
            optimizer = _read_optimizer(step_dir / OPTIMIZER_FILE, device)
        if RNG_FILE in files:
            rng = read_safetensors(step_dir / RNG_FILE, "cpu")[0]
    if verify:  # after parsing, so that a file safetensors refuses is reported as such
        read = [MODEL_FILE, EMA_FILE] + ([OPTIMIZER_FILE, RNG_FILE] if include_optimizer else [])
        _verify(step_dir, files, (f for f in read if f in files))
    trainer = info.get("trainer", {})
    return Checkpoint(
        dir=step_dir, step=info["step"], model=model, ema=ema, optimizer=optimizer,
        state=trainer if isinstance(trainer, dict) else {}, rng=rng,
    )


def _fmt_list(keys: Iterable[str], limit: int = 20) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"[{shown}{more}]"


def load_state_strict(module: nn.Module, tensors: dict[str, Tensor], where: str | Path) -> None:
    """``module.load_state_dict(tensors, strict=True)``, with every mismatch in one error.

    Args:
        module: the freshly built module.
        tensors: state dict to load.
        where: the file or directory the tensors come from (first thing in the message).

    Raises:
        CheckpointError: ``"<where>: checkpoint does not match the model: missing keys [...],
            unexpected keys [...], shape mismatch for 'x': checkpoint (3, 4) vs model (4, 4)"``.
    """
    expected = module.state_dict()
    missing = set(expected) - set(tensors)
    unexpected = set(tensors) - set(expected)
    shapes = [
        f"shape mismatch for {k!r}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_fmt_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_fmt_list(unexpected)}")
    problems.extend(shapes)
    if problems:
        raise CheckpointError(f"{where}: checkpoint does not match the model: " + ", ".join(problems))
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: checkpoint does not match the model: {' '.join(str(exc).split())}") from None


def overlay_ema(module: nn.Module, weights: dict[str, Tensor], ema: dict[str, Tensor]) -> dict[str, Tensor]:
    """Model weights with the EMA values on top, tied names included.

    An EMA usually tracks ``named_parameters()``, which lists a tied tensor once: every other
    state-dict name of that tensor gets the EMA value too, otherwise loading the raw value under
    the second name would overwrite the EMA one in the shared storage.

    Args:
        module: the model the weights are for (its state dict reveals which names are tied).
        weights: the full model state dict.
        ema: EMA values by name (may cover a subset).

    Returns:
        A state dict with every name of ``weights``, EMA values where there are any.
    """
    out = {**weights, **ema}
    aliases: dict[tuple, list[str]] = defaultdict(list)
    for name, t in module.state_dict().items():
        if t.numel():
            aliases[(t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride())].append(name)
    for names in aliases.values():
        source = next((n for n in names if n in ema), None)
        if source is not None:
            out.update({n: ema[source] for n in names})
    return out


def load_weights(module: nn.Module, path: str | Path, *, use_ema: bool = True, verify: bool = True) -> None:
    """Load the newest weights of a run (or step) directory into ``module``, strictly.

    With ``use_ema`` the EMA weights replace the model weights they cover (buffers an EMA does
    not track come from the model weights). Optimizer and generator states are not read.

    Args:
        module: the model, built from the run's recipe.
        path: ``RUN`` or ``RUN/checkpoints/step-N``.
        use_ema: prefer the EMA weights when the checkpoint has them.
        verify: check the files' SHA-256 (see :func:`load_checkpoint`).

    Raises:
        CheckpointError: no checkpoint, corrupt files, or weights that don't match the model
            (the message names the weights file).
    """
    ckpt = load_checkpoint(path, include_optimizer=False, verify=verify)
    weights, where = ckpt.model, ckpt.dir / MODEL_FILE
    if use_ema and ckpt.ema is not None:
        weights, where = overlay_ema(module, ckpt.model, ckpt.ema), ckpt.dir / EMA_FILE
    load_state_strict(module, weights, where)
