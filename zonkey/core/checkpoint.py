"""Checkpoints: safetensors for tensors, JSON for everything else, every save atomic.

No Python object serialization is used anywhere: a checkpoint can be read without running code
from it. Layout of a run directory::

    RUN/recipe.json                 resolved recipe + zonkey_version, schema_version
    RUN/checkpoints/step-00000100/  model.safetensors, [ema.safetensors], [optimizer.safetensors],
                                    rng.safetensors, state.json (written last, lists the files)
    RUN/LATEST                      JSON pointer to the newest complete checkpoint directory
    RUN/model.safetensors           copy of the newest model weights (for ``zonkey.load(RUN)``)
    RUN/ema.safetensors             copy of the newest EMA weights, when there are any

Crash safety. A checkpoint is written into ``RUN/checkpoints/.tmp-*``, every file fsync'ed, then
renamed into place, then LATEST is replaced; older checkpoints beyond ``keep`` are removed only
after that. A kill at any moment therefore leaves the previous checkpoint loadable. Stale
``.tmp-*`` entries are ignored by loading and removed by the next save. Re-saving a step that
already has a directory moves the old one aside to ``step-N.old`` for the instant between two
renames; loading accepts it if ``step-N`` is missing and the next save restores or removes it.
One writer per run directory is assumed (rank 0 under DDP).

Recipes of an older ``schema_version`` are upgraded through :data:`RECIPE_MIGRATIONS` with a logged
message (nanochat's habit); a newer one is refused.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from zonkey.core.recipe import SCHEMA_VERSION, RecipeError, validate_recipe

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # layout of a checkpoint directory and of state.json
RECIPE_FILE = "recipe.json"
LATEST_FILE = "LATEST"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
TMP_PREFIX = ".tmp-"
OPTIMIZER_META_KEY = "zonkey.optimizer"
_STEP_DIR = re.compile(r"^step-(\d+)(\.old)?$")

# schema_version v -> function turning a recipe mapping of version v into one of version v + 1.
RECIPE_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class CheckpointError(RuntimeError):
    """A checkpoint or run directory cannot be written or read. The message names the path."""


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on the requested device).

    Attributes:
        dir: the step directory (or the run directory for a weights-only run).
        step: training step it was saved at.
        model: model state dict.
        ema: EMA weights, or None.
        optimizer: ``(tensors, meta)`` for :func:`optimizer_from_tensors`, or None.
        state: the trainer's JSON state as given to :func:`save_checkpoint`.
        rng: random generator states for :func:`set_rng_state` (empty if none were saved).
    """

    dir: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: tuple[dict[str, Tensor], dict[str, Any]] | None
    state: dict[str, Any]
    rng: dict[str, Tensor]


# ---------------------------------------------------------------------------------------------
# Atomic file writes


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX; a no-op where dirs can't be opened)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a filesystem that cannot open directories: durability of names is best effort
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def _atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp)`` into a sibling temp file, fsync, then os.replace onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically: readers see the old or the new file, never a mix.

    Args:
        path: destination file; its folder is created if needed.
        data: the new content.

    Returns:
        The path written.
    """
    return _atomic_write(Path(path), lambda tmp: _write_bytes(tmp, data))


def _json_bytes(obj: Any, where: str | Path) -> bytes:
    try:
        # NaN/Infinity are kept (Python's json reads them back): metrics may hold a non-finite loss.
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: not JSON-serializable ({exc})") from None
    return (text + "\n").encode("utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically (see :func:`atomic_write_bytes`).

    Raises:
        CheckpointError: ``obj`` is not JSON-serializable (nothing is written).
    """
    return atomic_write_bytes(path, _json_bytes(obj, path))


def _prepare_tensors(tensors: dict[str, Tensor], where: str | Path) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors, no two sharing storage (tied weights are cloned)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not isinstance(t, Tensor):
            raise CheckpointError(f"{where}: expected str -> Tensor entries, got {name!r}: {type(t).__name__}")
        if t.is_meta:
            raise CheckpointError(f"{where}: tensor {name!r} is on the meta device (no data to save)")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() and ptr in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _save_safetensors_to(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None) -> None:
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path}: safetensors metadata must map str to str")
    save_file(_prepare_tensors(tensors, path), str(path), metadata=metadata)


def atomic_save_safetensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Save tensors to a safetensors file atomically.

    Tensors are detached, moved to CPU and made contiguous. safetensors refuses tensors that share
    storage, so a tensor whose storage was already saved under another name (tied weights) is
    cloned: every name gets its own copy, the file holds every state-dict key and strict loading
    needs no alias table (at the cost of storing a tied matrix twice).

    Args:
        path: destination ``.safetensors`` file.
        tensors: name -> tensor.
        metadata: optional str -> str header metadata.

    Returns:
        The path written.
    """
    path = Path(path)
    return _atomic_write(path, lambda tmp: _save_safetensors_to(tmp, tensors, metadata))


# ---------------------------------------------------------------------------------------------
# Reading with errors that name the file


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None


def _read_safetensors(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing file")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type, OSError, ValueError...
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt safetensors file ({msg})") from None
    return tensors, metadata


def _check_versions(info: dict[str, Any], where: Path) -> None:
    fmt = info.get("format_version", FORMAT_VERSION)
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format_version {fmt} is newer than this zonkey supports ({FORMAT_VERSION}); "
            f"written by zonkey {info.get('zonkey_version', '?')}"
        )
    schema = info.get("schema_version", SCHEMA_VERSION)
    if isinstance(schema, str) and schema.isdigit():
        schema = int(schema)
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise CheckpointError(
            f"{where}: schema_version {schema} is newer than this zonkey supports ({SCHEMA_VERSION}); "
            f"written by zonkey {info.get('zonkey_version', '?')}, upgrade zonkey to read it"
        )


# ---------------------------------------------------------------------------------------------
# Optimizer state <-> tensors + JSON

_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _encode(obj: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """JSON form of ``obj`` with tensors moved to ``tensors`` (exact: tuples and int keys survive)."""
    if isinstance(obj, Tensor):
        name, i = path, 1
        while name in tensors:
            name, i = f"{path}#{i}", i + 1
        tensors[name] = obj
        return {_TENSOR: name}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, _join(path, i), tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, _join(path, k), tensors) for k, v in obj.items()}
        items = [[_encode(k, _join(path, "key"), tensors), _encode(v, _join(path, k), tensors)] for k, v in obj.items()]
        return {_ITEMS: items}
    raise CheckpointError(f"optimizer state: cannot serialize a {type(obj).__name__} at {path!r}")


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1 and _TENSOR in obj:
        name = obj[_TENSOR]
        if name not in tensors:
            raise CheckpointError(f"optimizer state refers to a missing tensor {name!r}")
        return tensors[name]
    if len(obj) == 1 and _TUPLE in obj:
        return tuple(_decode(v, tensors) for v in obj[_TUPLE])
    if len(obj) == 1 and _ITEMS in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj[_ITEMS]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _class_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors and JSON-able metadata, losslessly.

    Per-parameter state tensors (AdamW's ``step``, ``exp_avg``, ``exp_avg_sq``) become tensors
    named by their path (``state.0.exp_avg``); scalars, tuples (``betas``), ``None`` and the param
    group hyper-parameters go into the metadata, with tuples and integer keys tagged so that
    :func:`optimizer_from_tensors` rebuilds the very same state dict and training continues
    bit-identically. The tensors are the live state, not copies: save them before the next step.

    Args:
        opt: any ``torch.optim.Optimizer`` whose state holds tensors and JSON scalars.

    Returns:
        ``(tensors, meta)``; ``meta`` is JSON-serializable.

    Raises:
        CheckpointError: the state holds a value of another type.
    """
    tensors: dict[str, Tensor] = {}
    encoded = _encode(opt.state_dict(), "", tensors)
    meta = {
        "format": "zonkey-optimizer",
        "format_version": FORMAT_VERSION,
        "class": _class_name(opt),
        "state_dict": encoded,
    }
    return tensors, meta


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Load what :func:`optimizer_to_tensors` produced into ``opt`` (built over the same parameters).

    Raises:
        CheckpointError: another optimizer class, a newer format, or groups/parameters that don't match.
    """
    if not isinstance(meta, dict) or meta.get("format") != "zonkey-optimizer" or "state_dict" not in meta:
        raise CheckpointError("optimizer metadata is not a zonkey optimizer state")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"optimizer format_version {version!r} is not supported (reads <= {FORMAT_VERSION})")
    if meta.get("class") != _class_name(opt):
        raise CheckpointError(f"optimizer class mismatch: checkpoint has {meta.get('class')}, got {_class_name(opt)}")
    state_dict = _decode(meta["state_dict"], tensors)
    try:
        opt.load_state_dict(state_dict)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state does not match the optimizer: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Random generator states


def rng_state() -> dict[str, Tensor]:
    """Every random generator a training step may draw from, as tensors.

    Keys: ``torch.cpu``; ``torch.cuda.<i>`` per device once CUDA has been initialised (a process
    that never touched CUDA has no CUDA randomness to resume); ``python.random.*`` for Python's
    ``random`` module and ``numpy.random.*`` for numpy's global generator (when numpy is present),
    both encoded as integer/float tensors so everything lives in one safetensors file. Only this
    process's generators are captured (rank 0's under DDP).
    """
    out: dict[str, Tensor] = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"torch.cuda.{i}"] = s
    version, internal, gauss_next = random.getstate()
    out["python.random.version"] = torch.tensor(version, dtype=torch.int64)
    out["python.random.state"] = torch.tensor(internal, dtype=torch.int64)
    if gauss_next is not None:
        out["python.random.gauss_next"] = torch.tensor(gauss_next, dtype=torch.float64)
    try:
        import numpy as np
    except ImportError:
        return out
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    if kind == "MT19937":
        out["numpy.random.keys"] = torch.from_numpy(keys.astype(np.int64))
        out["numpy.random.pos_has_gauss"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
        out["numpy.random.cached_gaussian"] = torch.tensor(cached, dtype=torch.float64)
    return out


def set_rng_state(d: dict[str, Tensor]) -> None:
    """Restore generators from :func:`rng_state`; keys that are absent leave a generator as it is."""
    if "torch.cpu" in d:
        torch.set_rng_state(d["torch.cpu"].to("cpu", torch.uint8))
    cuda = sorted((k for k in d if k.startswith("torch.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda:
        if not torch.cuda.is_available():
            logger.warning("checkpoint has CUDA generator states but CUDA is not available: not restored")
        else:
            n = torch.cuda.device_count()
            if len(cuda) != n:
                logger.warning("checkpoint has %d CUDA generator states, this machine %d devices", len(cuda), n)
            for k in cuda[:n]:
                torch.cuda.set_rng_state(d[k].to("cpu", torch.uint8), int(k.rsplit(".", 1)[1]))
    if "python.random.state" in d:
        gauss = d.get("python.random.gauss_next")
        random.setstate(
            (
                int(d["python.random.version"]),
                tuple(int(x) for x in d["python.random.state"].tolist()),
                None if gauss is None else float(gauss),
            )
        )
    if "numpy.random.keys" in d:
        import numpy as np

        pos, has_gauss = (int(x) for x in d["numpy.random.pos_has_gauss"].tolist())
        keys = d["numpy.random.keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, pos, has_gauss, float(d["numpy.random.cached_gaussian"])))


# ---------------------------------------------------------------------------------------------
# Recipe JSON


def _zonkey_version() -> str:
    import zonkey

    return zonkey.__version__


def write_recipe_json(run_dir: str | Path, recipe: Any) -> Path:
    """Write ``RUN/recipe.json`` atomically: the resolved recipe plus ``zonkey_version`` and
    ``schema_version``.

    Args:
        run_dir: the run directory (created if needed).
        recipe: a recipe mapping or a validated recipe object (pydantic model).

    Returns:
        The path of recipe.json.
    """
    if hasattr(recipe, "model_dump"):
        recipe = recipe.model_dump(mode="json")
    if not isinstance(recipe, dict):
        raise CheckpointError(f"{run_dir}: a recipe must be a mapping, got {type(recipe).__name__}")
    data = dict(recipe)
    data["schema_version"] = SCHEMA_VERSION
    data["zonkey_version"] = _zonkey_version()
    return atomic_write_json(Path(run_dir) / RECIPE_FILE, data)


def migrate_recipe(data: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """Bring a recipe mapping to the current ``schema_version`` through :data:`RECIPE_MIGRATIONS`.

    Raises:
        CheckpointError: no or a non-integer schema_version, a newer one, or a missing migration.
    """
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: schema_version must be an integer, got {version!r}")
    _check_versions(data, Path(where))
    for v in range(version, SCHEMA_VERSION):
        step = RECIPE_MIGRATIONS.get(v)
        if step is None:
            raise CheckpointError(f"{where}: no migration from schema_version {v} to {v + 1}")
        data = step(dict(data))
        data["schema_version"] = v + 1
        logger.info("%s: migrated recipe from schema_version %d to %d", where, v, v + 1)
    return data


def read_recipe_json(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN/recipe.json``, migrated to the current schema and ready for ``validate_recipe``
    (the writer's ``zonkey_version`` is removed; ``schema_version`` stays, it is a recipe field).

    Raises:
        CheckpointError: missing or invalid file, or a schema_version this zonkey cannot read.
    """
    run = Path(run_dir)
    path = run / RECIPE_FILE
    if not path.is_file():
        raise CheckpointError(f"missing {RECIPE_FILE} in {run}")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    data = migrate_recipe(data, path)
    data.pop("zonkey_version", None)
    return data


# ---------------------------------------------------------------------------------------------
# Saving


def _step_name(step: int) -> str:
    return f"step-{step:08d}"


def _list_checkpoints(ckdir: Path, *, include_old: bool = False) -> list[tuple[int, Path]]:
    """Complete checkpoint dirs (those with state.json), oldest first; ``.tmp-*`` never counts."""
    if not ckdir.is_dir():
        return []
    found = []
    for p in ckdir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (include_old or not m.group(2)) and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), 0 if m.group(2) else 1, p))
    return [(s, p) for s, _, p in sorted(found)]


def _remove_dir(path: Path) -> None:
    """Delete a directory so that a crash half-way leaves only a ``.tmp-*`` name behind."""
    doomed = path.with_name(f"{TMP_PREFIX}delete-{path.name}-{uuid.uuid4().hex[:8]}")
    os.rename(path, doomed)
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
        m = _STEP_DIR.match(p.name)
        if m and m.group(2):
            live = p.with_name(_step_name(int(m.group(1))))
            if live.exists():
                _remove_dir(p)
            else:
                logger.warning("restoring %s from %s (a save was interrupted while replacing it)", live, p)
                os.rename(p, live)
    _fsync_dir(ckdir)


def _write_durable(path: Path, write: Callable[[Path], None]) -> dict[str, int]:
    write(path)
    _fsync_file(path)
    return {"bytes": path.stat().st_size}


def _copy_to_run(src: Path, dst: Path) -> None:
    _atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
        "DistributedDataParallel",
        "DataParallel",
    ):
        model = model.module
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def save_checkpoint(
    run_dir: str | Path,
    *,
    step: int,
    model: nn.Module,
    ema: dict[str, Tensor] | None,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    recipe: Any = None,
    keep: int = 2,
) -> Path:
    """Save a complete checkpoint of step ``step`` atomically and update LATEST and RUN's weights.

    Args:
        run_dir: the run directory (created if needed).
        step: training step (names the directory ``checkpoints/step-%08d``).
        model: the module (DDP / torch.compile wrappers are unwrapped); its state dict is saved.
        ema: EMA weights by state-dict name (may cover only the parameters), or None.
        optimizer: saved as tensors + JSON (see :func:`optimizer_to_tensors`), or None.
        state: JSON-able trainer state (step, data position, scheduler, non-finite count, metrics).
        recipe: written to ``RUN/recipe.json`` when given (see :func:`write_recipe_json`).
        keep: how many checkpoints to keep, the new one included. Others are removed only after
            LATEST points at the new one; checkpoints of a higher step (an abandoned continuation
            of an earlier state) are removed too.

    Returns:
        The new checkpoint directory.

    Raises:
        CheckpointError: unserialisable state or optimizer state (nothing written), bad arguments.
            Any error during the write itself leaves the previous checkpoint and LATEST as they
            were, like a kill would; the partial ``.tmp-*`` directory is removed by the next save.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative integer, got {step!r}")
    if keep < 1:
        raise CheckpointError(f"keep must be >= 1, got {keep}")
    run = Path(run_dir)
    ckdir = run / CHECKPOINTS_DIR
    name = _step_name(step)
    state_bytes = _json_bytes(state, f"{run}: trainer state")  # fail before touching the disk
    opt_parts = None
    if optimizer is not None:
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        opt_parts = (opt_tensors, {OPTIMIZER_META_KEY: json.dumps(opt_meta, allow_nan=True)})

    ckdir.mkdir(parents=True, exist_ok=True)
    _recover(run, ckdir)
    if recipe is not None:
        write_recipe_json(run, recipe)

    version = _zonkey_version()
    header = {"format": "pt", "step": str(step), "zonkey_version": version, "schema_version": str(SCHEMA_VERSION)}
    tmp = ckdir / f"{TMP_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    files: dict[str, dict[str, int]] = {}
    model_sd = _unwrap(model).state_dict()
    files[MODEL_FILE] = _write_durable(tmp / MODEL_FILE, lambda p: _save_safetensors_to(p, model_sd, header))
    if ema is not None:
        files[EMA_FILE] = _write_durable(tmp / EMA_FILE, lambda p: _save_safetensors_to(p, ema, header))
    if opt_parts is not None:
        files[OPTIMIZER_FILE] = _write_durable(
            tmp / OPTIMIZER_FILE, lambda p: _save_safetensors_to(p, opt_parts[0], opt_parts[1])
        )
    files[RNG_FILE] = _write_durable(tmp / RNG_FILE, lambda p: _save_safetensors_to(p, rng_state(), None))
    info = {
        "format": "zonkey-checkpoint",
        "format_version": FORMAT_VERSION,
        "step": step,
        "zonkey_version": version,
        "schema_version": SCHEMA_VERSION,
        "files": files,
        "trainer": json.loads(state_bytes),
    }
    _write_durable(tmp / STATE_FILE, lambda p: _write_bytes(p, _json_bytes(info, p)))
    _fsync_dir(tmp)

    final = ckdir / name
    old = None
    if final.exists():
        old = final.with_name(name + ".old")
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_dir(ckdir)
    atomic_write_json(run / LATEST_FILE, {"checkpoint": f"{CHECKPOINTS_DIR}/{name}", "step": step})
    if old is not None:
        _remove_dir(old)

    _copy_to_run(final / MODEL_FILE, run / MODEL_FILE)
    if ema is not None:
        _copy_to_run(final / EMA_FILE, run / EMA_FILE)
    elif (run / EMA_FILE).exists():
        (run / EMA_FILE).unlink()

    older = [p for s, p in _list_checkpoints(ckdir) if s < step]
    doomed = older[: max(0, len(older) - (keep - 1))]
    for s, p in _list_checkpoints(ckdir):
        if s > step:
            logger.warning("removing %s: newer than the checkpoint just saved (%s)", p, name)
            doomed.append(p)
    for p in doomed:
        _remove_dir(p)
    if doomed:
        _fsync_dir(ckdir)
    return final


# ---------------------------------------------------------------------------------------------
# Loading


def find_latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint dir of a run: LATEST's target, else the highest ``step-*``.

    A LATEST that is unreadable or points at a missing directory is reported and skipped; the
    ``step-N.old`` left by a save interrupted while replacing step N stands in for it.
    """
    run = Path(run_dir)
    ckdir = run / CHECKPOINTS_DIR
    latest = run / LATEST_FILE
    if latest.is_file():
        target = None
        try:
            text = latest.read_text(encoding="utf-8").strip()
            target = json.loads(text)["checkpoint"] if text.startswith("{") else text
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            logger.warning("%s: unreadable (%s); using the newest checkpoint dir instead", latest, exc)
        if isinstance(target, str) and target:
            path = run / target
            if path.is_dir():
                return path
            old = path.with_name(path.name + ".old")
            if (old / STATE_FILE).is_file():
                return old
            logger.warning("%s points at missing %s; using the newest checkpoint dir instead", latest, path)
    found = _list_checkpoints(ckdir, include_old=True)
    return found[-1][1] if found else None


def _load_weights_only(run: Path, device: str | torch.device) -> Checkpoint:
    model, meta = _read_safetensors(run / MODEL_FILE, device)
    _check_versions(meta, run / MODEL_FILE)
    ema = _read_safetensors(run / EMA_FILE, device)[0] if (run / EMA_FILE).is_file() else None
    step = int(meta["step"]) if meta.get("step", "").isdigit() else 0
    return Checkpoint(dir=run, step=step, model=model, ema=ema, optimizer=None, state={}, rng={})


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", include_optimizer: bool = True
) -> Checkpoint:
    """Load a checkpoint directory, or the newest checkpoint of a run directory.

    Args:
        path: a step directory (holds state.json) or a run directory: LATEST is followed; without
            it the highest complete ``checkpoints/step-*``; without any, ``RUN/model.safetensors``
            (and ``RUN/ema.safetensors``) alone. ``.tmp-*`` leftovers are ignored.
        device: where the tensors are loaded.
        include_optimizer: False skips the optimizer file and the generator states (inference).

    Returns:
        The :class:`Checkpoint`.

    Raises:
        CheckpointError: nothing to load, a missing or corrupt file (truncated or invalid
            safetensors, bad JSON), or a newer format or schema version. The message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    step_dir = path if (path / STATE_FILE).is_file() or _STEP_DIR.match(path.name) else find_latest_checkpoint(path)
    if step_dir is None:
        if (path / MODEL_FILE).is_file():
            return _load_weights_only(path, device)
        raise CheckpointError(
            f"{path}: no checkpoint found (no {LATEST_FILE}, no {CHECKPOINTS_DIR}/step-*, no {MODEL_FILE})"
        )

    state_path = step_dir / STATE_FILE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path}: missing file (incomplete checkpoint)")
    info = _read_json(state_path)
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict) or not isinstance(info.get("step"), int):
        raise CheckpointError(f"{state_path}: not a zonkey checkpoint state (needs 'step' and 'files')")
    _check_versions(info, state_path)
    files = info["files"]
    if MODEL_FILE not in files:
        raise CheckpointError(f"{state_path}: lists no {MODEL_FILE}")
    for fname, entry in files.items():
        fpath = step_dir / fname
        if not fpath.is_file():
            raise CheckpointError(f"{fpath}: missing file (listed in {STATE_FILE})")
        want = entry.get("bytes") if isinstance(entry, dict) else None
        if isinstance(want, int) and fpath.stat().st_size != want:
            raise CheckpointError(
                f"{fpath}: truncated or modified ({fpath.stat().st_size} bytes, {STATE_FILE} says {want})"
            )

    model = _read_safetensors(step_dir / MODEL_FILE, device)[0]
    ema = _read_safetensors(step_dir / EMA_FILE, device)[0] if EMA_FILE in files else None
    optimizer = None
    rng: dict[str, Tensor] = {}
    if include_optimizer:
        if OPTIMIZER_FILE in files:
            opt_path = step_dir / OPTIMIZER_FILE
            tensors, header = _read_safetensors(opt_path, device)
            if OPTIMIZER_META_KEY not in header:
                raise CheckpointError(f"{opt_path}: no {OPTIMIZER_META_KEY!r} metadata")
            try:
                optimizer = (tensors, json.loads(header[OPTIMIZER_META_KEY]))
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{opt_path}: invalid optimizer metadata JSON ({exc.msg})") from None
        if RNG_FILE in files:
            rng = _read_safetensors(step_dir / RNG_FILE, "cpu")[0]
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


def load_model(run_dir: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a trained model from a run (or step) directory, in eval mode.

    Reads and validates ``recipe.json``, builds the model with ``zonkey.core.model.build_model``
    and loads the newest checkpoint strictly. With ``use_ema`` the EMA weights replace the model
    weights they cover (buffers an EMA does not track come from the model weights).

    Raises:
        CheckpointError: missing/invalid recipe.json, an invalid recipe, no checkpoint, corrupt
            files, or weights that don't match the model.
    """
    path = Path(run_dir)
    run = path.parent.parent if (path / STATE_FILE).is_file() else path
    recipe_path = run / RECIPE_FILE
    data = read_recipe_json(run)
    try:
        recipe = validate_recipe(data, source=str(recipe_path))
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from None
    from zonkey.core.model import build_model

    model = build_model(recipe)
    ckpt = load_checkpoint(path, include_optimizer=False)
    weights, where = ckpt.model, ckpt.dir / MODEL_FILE
    if use_ema and ckpt.ema is not None:
        weights, where = overlay_ema(model, ckpt.model, ckpt.ema), ckpt.dir / EMA_FILE
    load_state_strict(model, weights, where)
    return model.to(device).eval()


def overlay_ema(module: nn.Module, weights: dict[str, Tensor], ema: dict[str, Tensor]) -> dict[str, Tensor]:
    """Model weights with the EMA values on top, tied names included.

    An EMA usually tracks ``named_parameters()``, which lists a tied tensor once: every other
    state-dict name of that tensor gets the EMA value too, otherwise loading the raw value under
    the second name would overwrite the EMA one in the shared storage.
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
