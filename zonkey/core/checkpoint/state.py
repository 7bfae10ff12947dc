"""Training state as tensors + JSON: the optimizer's state dict and the random generators."""

from __future__ import annotations

import logging
import random
from typing import Any

import torch
from torch import Tensor

from zonkey.core.checkpoint.layout import FORMAT_VERSION
from zonkey.io import CheckpointError

__all__ = ["optimizer_from_tensors", "optimizer_to_tensors", "rng_state", "set_rng_state"]

logger = logging.getLogger(__name__)

# tags of the JSON form: a tensor stored aside, a tuple, a dict whose keys are not plain strings
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


def _class_name(obj: object) -> str:
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

    Args:
        opt: the freshly built optimizer.
        tensors: the state tensors by path name.
        meta: the JSON metadata.

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


def rng_state() -> dict[str, Tensor]:
    """Every random generator a training step may draw from, as tensors.

    Keys: ``torch.cpu``; ``torch.cuda.<i>`` per device once CUDA has been initialised (a process
    that never touched CUDA has no CUDA randomness to resume); ``python.random.*`` for Python's
    ``random`` module and ``numpy.random.*`` for numpy's global generator (when numpy is present),
    both encoded as integer/float tensors so everything lives in one safetensors file. Only this
    process's generators are captured (rank 0's under DDP).

    Returns:
        Name -> 1-D (or scalar) CPU tensor.
    """
    out: dict[str, Tensor] = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # one device per rank: reading every device's generator would open a context on each
            i = torch.cuda.current_device()
            out[f"torch.cuda.{i}"] = torch.cuda.get_rng_state(i)
        else:
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
    state = np.random.get_state(legacy=True)  # the tuple while the global generator is MT19937
    if isinstance(state, tuple) and state[0] == "MT19937":
        _, keys, pos, has_gauss, cached = state
        out["numpy.random.keys"] = torch.from_numpy(keys.astype(np.int64))
        out["numpy.random.pos_has_gauss"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
        out["numpy.random.cached_gaussian"] = torch.tensor(cached, dtype=torch.float64)
    return out


def set_rng_state(d: dict[str, Tensor]) -> None:
    """Restore generators from :func:`rng_state`; keys that are absent leave a generator as it is.

    Args:
        d: what :func:`rng_state` returned (possibly from another machine: CUDA states are
            restored only where the devices exist, with a warning otherwise).
    """
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
