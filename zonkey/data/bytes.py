"""Bytes of documents: the held-out hash, chunking at character boundaries, UTF-8 in and out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from zonkey.data.errors import DataError

__all__ = ["byte_counts", "chunk_bytes", "decode_bytes", "encode_text", "heldout_score", "is_heldout"]


def heldout_score(key: str) -> float:
    """A stable number in [0, 1) for a document key.

    Args:
        key: the document's key (the title for the wiki sample, else the text).

    Returns:
        blake2b (8 bytes, personalised) of the key's UTF-8 bytes over 2**64: the same on every
        machine and Python version.
    """
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8,
                             person=b"zonkey/heldout").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_heldout(key: str, fraction: float) -> bool:
    """Whether the document with this key belongs to the held-out split.

    Args:
        key: the document's key (see :func:`heldout_score`).
        fraction: the held-out fraction in [0, 1).

    Returns:
        ``heldout_score(key) < fraction``.
    """
    return heldout_score(key) < fraction


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


def chunk_bytes(data: bytes, max_bytes: int) -> list[bytes]:
    """Cut ``data`` into about ``ceil(len / max_bytes)`` nearly equal chunks.

    Cuts are moved back only to avoid splitting a UTF-8 character (never to a space or any other
    character class). Input that is not valid UTF-8 (a run of more than 3 continuation bytes) is
    still cut, within the budget.

    Args:
        data: the document's bytes.
        max_bytes: the most bytes of one chunk (>= 4, so any character fits).

    Returns:
        Non-empty chunks of at most ``max_bytes`` bytes; ``b"".join(chunks) == data``. A document
        that fits is returned whole, as one chunk.

    Raises:
        ValueError: ``max_bytes < 4``.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes must be >= 4 (a UTF-8 character can be 4 bytes), got {max_bytes}")
    total = len(data)
    if total <= max_bytes:
        return [bytes(data)]
    chunks: list[bytes] = []
    start = 0
    while total - start > max_bytes:
        remaining = total - start
        pieces = -(-remaining // max_bytes)
        target = start + -(-remaining // pieces)  # <= start + max_bytes
        cut = target
        back = 0
        while back < 3 and cut > start and _is_continuation(data[cut]):
            cut -= 1
            back += 1
        if cut == start or _is_continuation(data[cut]):
            # a tiny max_bytes (the character at ``start`` reaches past the target) or input that
            # is not UTF-8: end the chunk after the character instead, within the budget
            cut = target
            while cut - start < max_bytes and _is_continuation(data[cut]):
                cut += 1
        chunks.append(bytes(data[start:cut]))
        start = cut
    chunks.append(bytes(data[start:]))
    return chunks


def encode_text(text: str) -> tuple[bytes, bool]:
    r"""UTF-8 bytes of ``text`` and whether unencodable characters had to be replaced.

    Args:
        text: any string, possibly with lone surrogates (from a JSON ``\ud800`` escape).

    Returns:
        ``(data, repaired)``: the bytes, with each unencodable character replaced by U+FFFD, and
        whether there was any.
    """
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:
        fixed = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return fixed.encode("utf-8"), True


def byte_counts(docs: Sequence[bytes]) -> Tensor:
    """Count every byte value over ``docs``.

    Args:
        docs: byte strings.

    Returns:
        (256,) int64 counts.
    """
    counts = np.zeros(256, dtype=np.int64)
    for d in docs:
        counts += np.bincount(np.frombuffer(d, dtype=np.uint8), minlength=256)
    return torch.from_numpy(counts)


def decode_bytes(data: Tensor | Sequence[int] | bytes | bytearray | np.ndarray,
                 valid: Tensor | Sequence[bool] | np.ndarray | None = None) -> str:
    """Byte values -> text, with invalid UTF-8 replaced by U+FFFD (``errors="replace"``).

    Args:
        data: (n,) byte values 0..255: a tensor, array, list of ints or ``bytes``.
        valid: optional (n,) mask; only positions marked True are kept (drops padding).

    Returns:
        The decoded text.

    Raises:
        DataError: data that is not 1-D, not integer, or outside 0..255.
    """
    if isinstance(data, (bytes, bytearray)):
        values = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
    else:
        if isinstance(data, Tensor):
            data = data.detach().cpu().numpy()
        values = np.asarray(data)
        if values.ndim != 1:
            raise DataError(f"decode_bytes expects one sequence (1-D), got shape {tuple(values.shape)}")
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise DataError(f"decode_bytes expects integer byte values, got dtype {values.dtype}")
        values = values.astype(np.int64)
    if valid is not None:
        if isinstance(valid, Tensor):
            valid = valid.detach().cpu().numpy()
        mask = np.asarray(valid, dtype=bool)
        if mask.shape != values.shape:
            raise DataError(f"decode_bytes: valid has shape {mask.shape}, data {values.shape}")
        values = values[mask]
    if values.size and (values.min() < 0 or values.max() > 255):
        raise DataError(f"decode_bytes: byte values must lie in 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
