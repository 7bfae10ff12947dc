"""Names and versions of a run directory's files, and the listing of its checkpoint folders."""

from __future__ import annotations

import re
from pathlib import Path

from zonkey.io import TMP_PREFIX

__all__ = [
    "CHECKPOINTS_DIR",
    "EMA_FILE",
    "FORMAT_VERSION",
    "LATEST_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "OPTIMIZER_META_KEY",
    "RECIPE_FILE",
    "RNG_FILE",
    "STATE_FILE",
    "STEP_DIR",
    "TMP_PREFIX",
    "list_checkpoints",
    "step_name",
]

FORMAT_VERSION = 1  # layout of a checkpoint directory and of state.json
RECIPE_FILE = "recipe.json"
LATEST_FILE = "LATEST"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
OPTIMIZER_META_KEY = "zonkey.optimizer"  # safetensors header key of the optimizer's JSON state
STEP_DIR = re.compile(r"^step-(\d+)(\.old)?$")


def step_name(step: int) -> str:
    """Folder name of the checkpoint of ``step`` (``step-00000100``).

    Args:
        step: a non-negative training step.

    Returns:
        The name, zero-padded to 8 digits so that names sort by step.
    """
    return f"step-{step:08d}"


def list_checkpoints(ckdir: Path, *, include_old: bool = False) -> list[tuple[int, Path]]:
    """Complete checkpoint folders (those with state.json), oldest first; ``.tmp-*`` never counts.

    Args:
        ckdir: ``RUN/checkpoints``; a missing folder lists nothing.
        include_old: also list ``step-N.old`` (a save interrupted while replacing step N), sorted
            just before a ``step-N`` of the same step.

    Returns:
        ``(step, path)`` pairs.
    """
    if not ckdir.is_dir():
        return []
    found = []
    for p in ckdir.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (include_old or not m.group(2)) and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), 0 if m.group(2) else 1, p))
    return [(s, p) for s, _, p in sorted(found)]
