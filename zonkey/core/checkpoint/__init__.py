"""Checkpoints: safetensors for tensors, JSON for everything else, every save atomic.

No Python object serialization is used anywhere: a checkpoint can be read without running code
from it. The parts:

* :mod:`~zonkey.core.checkpoint.layout`: file names, versions, the listing of step folders;
* :mod:`~zonkey.core.checkpoint.state`: optimizer state and random generators as tensors + JSON;
* :mod:`~zonkey.core.checkpoint.recipe_json`: ``recipe.json``, its versions and migrations;
* :mod:`~zonkey.core.checkpoint.store`: crash-safe saving, recovery, pruning, the newest checkpoint;
* :mod:`~zonkey.core.checkpoint.load`: loading, strict state loading, EMA weights.

``state.json`` lists every file of a checkpoint with its size and SHA-256, checked when the file
is loaded (``verify=False`` skips the hashes); every path read from a run directory must resolve
inside it. The atomic writes and checked reads themselves live in :mod:`zonkey.io`. The model is rebuilt
from a run by ``ZonkeyModel.from_run`` (this package never imports the model).
"""

from zonkey.core.checkpoint.layout import (
    CHECKPOINTS_DIR,
    EMA_FILE,
    FORMAT_VERSION,
    LATEST_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    OPTIMIZER_META_KEY,
    RECIPE_FILE,
    RNG_FILE,
    STATE_FILE,
    TMP_PREFIX,
)
from zonkey.core.checkpoint.load import (
    Checkpoint,
    load_checkpoint,
    load_state_strict,
    load_weights,
    overlay_ema,
)
from zonkey.core.checkpoint.recipe_json import (
    RECIPE_MIGRATIONS,
    migrate_recipe,
    read_recipe_json,
    read_run_recipe,
    run_dir_of,
    write_recipe_json,
)
from zonkey.core.checkpoint.state import (
    optimizer_from_tensors,
    optimizer_to_tensors,
    rng_state,
    set_rng_state,
)
from zonkey.core.checkpoint.store import find_latest_checkpoint, save_checkpoint
from zonkey.io import (
    CheckpointError,
    CheckpointWriteError,
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
)

__all__ = [
    "CHECKPOINTS_DIR",
    "EMA_FILE",
    "FORMAT_VERSION",
    "LATEST_FILE",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "OPTIMIZER_META_KEY",
    "RECIPE_FILE",
    "RECIPE_MIGRATIONS",
    "RNG_FILE",
    "STATE_FILE",
    "TMP_PREFIX",
    "Checkpoint",
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_save_safetensors",
    "atomic_write_bytes",
    "atomic_write_json",
    "find_latest_checkpoint",
    "load_checkpoint",
    "load_state_strict",
    "load_weights",
    "migrate_recipe",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "overlay_ema",
    "read_recipe_json",
    "read_run_recipe",
    "rng_state",
    "run_dir_of",
    "save_checkpoint",
    "set_rng_state",
    "write_recipe_json",
]
