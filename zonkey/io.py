"""Durable file I/O: atomic writes of bytes, JSON and safetensors, and reads with clear errors.

A write goes to a temporary sibling (``.tmp-<name>.<pid>.<random>``), is fsync'ed, then
``os.replace``'d onto the destination and the folder is fsync'ed: a reader sees the old file or
the new one, never a mix, and a kill at any moment leaves at worst a ``.tmp-*`` file behind. No
Python object serialization is used: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from zonkey.errors import CheckpointError, CheckpointWriteError
from zonkey.fsguard import open_regular, read_regular
from zonkey.inputs import InputError, parse_json

__all__ = [
    "TMP_PREFIX",
    "CheckpointError",
    "CheckpointWriteError",
    "atomic_save_safetensors",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "fsync_file",
    "group_readable",
    "json_bytes",
    "inside",
    "read_json",
    "read_metrics",
    "read_safetensors",
    "sha256_file",
    "write_bytes",
    "write_safetensors",
]

TMP_PREFIX = ".tmp-"  # names starting with it are unfinished writes: readers ignore them



def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in chunks.

    Args:
        path: an existing regular file.

    Returns:
        64 lowercase hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inside(root: Path, path: Path, what: str) -> Path:
    """``path`` resolved (symbolic links followed), refused unless it stays inside ``root``.

    A run directory may come from someone else: a pointer or a link in it must not make zonkey
    read files elsewhere.

    Args:
        root: the directory the path must stay in (resolved too).
        path: the path to check, absolute or relative to the working directory.
        what: names the file the path was read from, first in the message.

    Returns:
        The resolved path.

    Raises:
        CheckpointError: the resolved path lies outside ``root``.
    """
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        raise CheckpointError(f"{what}: {path} resolves outside {root} ({resolved}); refused")
    return resolved


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (POSIX; a no-op where dirs can't be opened).

    Args:
        path: the folder whose entries changed.
    """
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


def fsync_file(path: Path) -> None:
    """Flush ``path``'s content to the disk.

    Args:
        path: an existing regular file.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Write through ``write(tmp)`` into a sibling temp file, fsync, then replace ``path`` with it.

    Args:
        path: destination file; its folder is created if needed.
        write: writes the whole content to the path it is given.

    Returns:
        The path written.

    Raises:
        BaseException: whatever ``write`` or the filesystem raise; the temp file is removed and
            ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (not atomic on its own: see :func:`atomic_write_bytes`).

    Args:
        path: destination file.
        data: the content.
    """
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
    return atomic_write(Path(path), lambda tmp: write_bytes(tmp, data))


def json_bytes(obj: Any, where: str | Path) -> bytes:
    """Indented UTF-8 JSON of ``obj`` with a final newline.

    Args:
        obj: JSON-able value; NaN and infinities are kept (metrics may hold a non-finite loss).
        where: names the file or value in the error.

    Returns:
        The encoded text.

    Raises:
        CheckpointError: ``obj`` is not JSON-serializable.
    """
    try:
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: not JSON-serializable ({exc})") from None
    return (text + "\n").encode("utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically (see :func:`atomic_write_bytes`).

    Args:
        path: destination file.
        obj: JSON-able value.

    Returns:
        The path written.

    Raises:
        CheckpointError: ``obj`` is not JSON-serializable (nothing is written).
    """
    return atomic_write_bytes(path, json_bytes(obj, path))


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


def group_readable(path: Path) -> None:
    """Give ``path`` the mode a new file gets from the umask (``0o666 & ~umask``).

    Some writers (safetensors) create their files owner-only; a run's files are all readable by
    whoever the umask lets read the rest of the run (the group, on a shared machine).
    """
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _sort_header_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted.

    safetensors writes the metadata in hash order, which differs between processes: two identical
    saves would give files with different hashes. The tensors' entries are already in a fixed
    order; their data does not move (offsets count from the end of the header).
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size).decode("utf-8"))
        meta = header.get("__metadata__")
        if not isinstance(meta, dict) or len(meta) < 2:
            return
        ordered = {"__metadata__": dict(sorted(meta.items())), **{k: v for k, v in header.items()
                                                                   if k != "__metadata__"}}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) <= size:  # the same entries in another order: the same length, padded as before
            f.seek(8)
            f.write(text + b" " * (size - len(text)))
            return
        rest = f.read()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + rest)


def write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None) -> None:
    """Write a safetensors file (not atomic on its own: see :func:`atomic_save_safetensors`).

    The header's metadata keys are sorted (identical saves give identical bytes) and the file gets
    the umask's mode like every other file of a run (see :func:`group_readable`).

    Args:
        path: destination file.
        tensors: name -> tensor of any shape, device or layout (see :func:`atomic_save_safetensors`).
        metadata: optional str -> str header metadata.

    Raises:
        CheckpointError: metadata that is not str -> str, a non-tensor entry or a meta tensor.
    """
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path}: safetensors metadata must map str to str")
    save_file(_prepare_tensors(tensors, path), str(path), metadata=metadata)
    _sort_header_metadata(path)
    group_readable(path)


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

    Raises:
        CheckpointError: see :func:`write_safetensors`.
    """
    path = Path(path)
    return atomic_write(path, lambda tmp: write_safetensors(tmp, tensors, metadata))


def read_json(path: Path) -> Any:
    """Parse a UTF-8 JSON file through the one JSON reader (:func:`zonkey.inputs.parse_json`).

    Args:
        path: the file.

    Returns:
        The parsed value.

    Raises:
        CheckpointError: a missing or unreadable file, not a regular file (a FIFO, a device), text
            that is not UTF-8, invalid JSON (with line and column), nesting past the depth limit
            or a lone surrogate in a string.
    """
    if not path.exists():
        raise CheckpointError(f"{path}: missing file")
    data = read_regular(path, str(path), follow=True)
    try:
        return parse_json(data, str(path))
    except InputError as exc:
        raise CheckpointError(str(exc)) from None


def read_safetensors(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    """Every tensor of a safetensors file and its header metadata.

    Args:
        path: the file.
        device: where the tensors are loaded.

    Returns:
        ``(tensors, metadata)``: name -> tensor as saved, and the str -> str metadata (empty if none).

    Raises:
        CheckpointError: a missing file, or one safetensors cannot parse (truncated, garbage).
    """
    if not path.exists():
        raise CheckpointError(f"{path}: missing file")
    os.close(open_regular(path, str(path), follow=True))  # unreadable, a FIFO: said so, not "corrupt"
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type, OSError, ValueError...
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt safetensors file ({msg})") from None
    return tensors, metadata


def read_metrics(path: Path, *, follow: bool = True) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``, each a JSON object with a non-negative integer ``step``.

    Args:
        path: the file (a FIFO, a device or a folder is refused at once, never read).
        follow: whether a symbolic link as the file itself is followed.

    Returns:
        The rows in file order (blank lines skipped).

    Raises:
        CheckpointError: an unreadable or special file, or a line that is not a JSON object with a
            ``step`` (the message gives ``path:line``).
    """
    data = read_regular(path, str(path), follow=follow)
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = parse_json(line, f"{path}:{i}")
        except InputError as exc:
            raise CheckpointError(str(exc).replace(": invalid JSON", ": not a JSON line", 1)) from None
        if not isinstance(row, dict):
            raise CheckpointError(f"{path}:{i}: not a JSON object")
        step = row.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"{path}:{i}: 'step' must be a non-negative integer, got {step!r}")
        rows.append(row)
    return rows
