"""Padded byte batches: :class:`Batch`, step-addressable byte-budget :class:`ByteBatches`, raw texts.

The packing scheme (why batches are sized by bytes and addressed by step) is described in
``docs/data.md``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from zonkey.data.bytes import decode_bytes, encode_text
from zonkey.data.errors import DataError

__all__ = ["Batch", "ByteBatches", "encode_texts", "make_batch"]


@dataclass
class Batch:
    """A padded batch of byte sequences.

    Attributes:
        tokens: (b, n) int64 byte values 0..255, 0 in padding (NUL is a legal byte: only
            ``valid`` tells padding from text).
        valid: (b, n) bool, True on real bytes (a prefix of every row).
        doc_index: (b,) int64 the source document of each row (chunks of one document share it:
            they are not different documents, e.g. for in-batch negatives).
        chunk_index: (b,) int64 the row's index in the chunk list it was drawn from (for texts
            encoded with :func:`encode_texts`, both are simply 0..b-1); defaults to ``doc_index``.
    """

    tokens: Tensor  # (b, n) int64
    valid: Tensor  # (b, n) bool
    doc_index: Tensor  # (b,) int64
    chunk_index: Tensor | None = None  # (b,) int64

    def __post_init__(self) -> None:
        if self.chunk_index is None:
            self.chunk_index = self.doc_index

    @property
    def num_bytes(self) -> int:
        """Real (non-padding) bytes in the batch."""
        return int(self.valid.sum())

    @property
    def lengths(self) -> Tensor:
        """(b,) number of real bytes per row."""
        return self.valid.sum(dim=1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(b, n)``: rows and padded width."""
        b, n = self.tokens.shape
        return int(b), int(n)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> Batch:
        """The same batch on ``device``.

        Args:
            device: target device.
            non_blocking: passed to ``Tensor.to`` (useful from pinned memory).

        Returns:
            A new :class:`Batch`.
        """
        assert self.chunk_index is not None  # set by __post_init__
        return Batch(
            tokens=self.tokens.to(device, non_blocking=non_blocking),
            valid=self.valid.to(device, non_blocking=non_blocking),
            doc_index=self.doc_index.to(device, non_blocking=non_blocking),
            chunk_index=self.chunk_index.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """The same batch in pinned host memory (for asynchronous copies to a GPU)."""
        assert self.chunk_index is not None  # set by __post_init__
        return Batch(self.tokens.pin_memory(), self.valid.pin_memory(), self.doc_index.pin_memory(),
                     self.chunk_index.pin_memory())

    def texts(self) -> list[str]:
        """The rows decoded as text (padding removed, invalid UTF-8 replaced)."""
        return [decode_bytes(self.tokens[i], valid=self.valid[i]) for i in range(self.tokens.shape[0])]


def make_batch(chunks: Sequence[bytes], width: int, doc_index: npt.ArrayLike,
               chunk_index: npt.ArrayLike) -> Batch:
    """Pad byte strings into a :class:`Batch`.

    Args:
        chunks: b byte strings, each at most ``width`` long.
        width: n, the padded row length.
        doc_index: (b,) document of each row.
        chunk_index: (b,) chunk index of each row.

    Returns:
        The batch, tokens/valid (b, n).
    """
    rows = len(chunks)
    array = np.zeros((rows, width), dtype=np.uint8)
    lengths = np.empty(rows, dtype=np.int64)
    for r, chunk in enumerate(chunks):
        lengths[r] = len(chunk)
        array[r, : len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    tokens = torch.from_numpy(array).long()
    valid = torch.arange(width).unsqueeze(0) < torch.from_numpy(lengths).unsqueeze(1)
    return Batch(
        tokens=tokens,
        valid=valid,
        doc_index=torch.as_tensor(np.asarray(doc_index, dtype=np.int64)),
        chunk_index=torch.as_tensor(np.asarray(chunk_index, dtype=np.int64)),
    )


def encode_texts(texts: Sequence[str], max_len: int | None = None) -> Batch:
    """Raw strings -> a padded :class:`Batch` (for evaluation, splitting, infilling).

    Args:
        texts: the strings, one row each.
        max_len: if given, the most UTF-8 bytes a text may have.

    Returns:
        A :class:`Batch` with tokens/valid (b, n), n the longest text in bytes, and
        doc_index = chunk_index = 0..b-1.

    Raises:
        DataError: no texts, a text that is not a str or is empty (naming its index), or one longer
            than ``max_len`` bytes (nothing is truncated silently: cut it with ``chunk_bytes``).
    """
    if isinstance(texts, (str, bytes)):
        raise DataError("encode_texts expects a list of strings, not a single string")
    encoded: list[bytes] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"text {i} is {type(text).__name__}, not str")
        if not text:
            raise DataError(f"text {i} is empty: a document needs at least one byte")
        data, _ = encode_text(text)
        if max_len is not None and len(data) > max_len:
            raise DataError(f"text {i} is {len(data)} bytes, longer than max_len={max_len}; "
                            "cut it with chunk_bytes first")
        encoded.append(data)
    if not encoded:
        raise DataError("encode_texts got no texts")
    width = max(len(d) for d in encoded)
    index = list(range(len(encoded)))
    return make_batch(encoded, width, index, index)


def _epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}/{epoch}".encode(), digest_size=16, person=b"zonkey/batches").digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))


class ByteBatches:
    """Deterministic, step-addressable byte-budget batches over a list of chunks.

    ``batch(step)`` is epoch ``step // steps_per_epoch``, batch ``step % steps_per_epoch`` of it;
    each epoch covers every chunk exactly once. Every batch satisfies ``b * n <= batch_bytes``
    where ``n`` (= ``tokens.shape[1]``) is its longest chunk, rounded up to ``pad_to_multiple``
    (capped at ``batch_bytes``). The shape of an epoch is fixed once (chunks sorted longest first,
    packed greedily); each epoch permutes chunks within their class (``batch_bytes // len``) and
    the order of the batches, from a generator seeded with ``(seed, epoch)``.

    Args:
        chunks: non-empty byte strings, each at most ``batch_bytes`` long.
        batch_bytes: the budget ``b * n`` of one batch.
        seed: seeds every epoch's permutation (with the epoch number).
        doc_ids: optional document id of each chunk, reported as ``Batch.doc_index`` (default:
            the chunk index).
        pad_to_multiple: round ``n`` up to a multiple of this (e.g. 8 for tensor cores).
        lengths: each chunk's length, where it is known without reading the chunk (chunks read
            from disk on access); default: measured.

    Raises:
        DataError: no chunks, an empty chunk, or a chunk longer than ``batch_bytes``.
    """

    def __init__(self, chunks: Sequence[bytes], batch_bytes: int, *, seed: int = 0,
                 doc_ids: Sequence[int] | npt.NDArray[np.int64] | None = None, pad_to_multiple: int = 1,
                 lengths: npt.ArrayLike | None = None) -> None:
        if batch_bytes < 1:
            raise DataError(f"batch_bytes must be >= 1, got {batch_bytes}")
        if pad_to_multiple < 1:
            raise DataError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
        if len(chunks) == 0:
            raise DataError("no chunks to batch (the split is empty)")
        if doc_ids is not None and len(doc_ids) != len(chunks):
            raise DataError(f"doc_ids has {len(doc_ids)} entries for {len(chunks)} chunks")
        self.chunks = chunks
        self.batch_bytes = int(batch_bytes)
        self.seed = int(seed)
        self.pad_to_multiple = int(pad_to_multiple)
        self.doc_ids = np.asarray(doc_ids if doc_ids is not None else range(len(chunks)), dtype=np.int64)

        if lengths is None:
            lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        lengths = np.asarray(lengths, dtype=np.int64)
        if len(lengths) != len(chunks):
            raise DataError(f"lengths has {len(lengths)} entries for {len(chunks)} chunks")
        if lengths.min() == 0:
            raise DataError(f"chunk {int(np.argmin(lengths))} is empty")
        if lengths.max() > batch_bytes:
            i = int(np.argmax(lengths))
            raise DataError(f"chunk {i} is {int(lengths[i])} bytes, more than batch_bytes={batch_bytes}")
        m = self.pad_to_multiple
        self.lengths = lengths
        self.padded = np.minimum(-(-lengths // m) * m, batch_bytes)
        rows_allowed = batch_bytes // self.padded  # the class of each chunk
        # fixed shape of an epoch: longest first (ties by index), greedy packing
        self._order = np.lexsort((np.arange(len(chunks)), -self.padded))
        self._group = rows_allowed[self._order]  # non-decreasing along positions
        bounds = [0]
        n = len(chunks)
        i = 0
        while i < n:
            i = min(n, i + int(self._group[i]))
            bounds.append(i)
        self._bounds = np.asarray(bounds, dtype=np.int64)
        self._plans: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch (the same for every epoch)."""
        return len(self._bounds) - 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def num_chunks(self) -> int:
        """Chunks in one epoch."""
        return len(self.chunks)

    @property
    def num_bytes(self) -> int:
        """Real bytes in one epoch."""
        return int(self.lengths.sum())

    def epoch_of(self, step: int) -> int:
        """The epoch global ``step`` falls in."""
        return step // self.steps_per_epoch

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        plan = self._plans.get(epoch)
        if plan is None:
            rng = _epoch_generator(self.seed, epoch)
            keys = rng.random(len(self._order))
            positions = np.lexsort((keys, self._group))  # a permutation within each class
            order = self._order[positions]
            batch_order = rng.permutation(self.steps_per_epoch)
            plan = (order, batch_order)
            self._plans[epoch] = plan
            while len(self._plans) > 2:
                self._plans.popitem(last=False)
        return plan

    def indices(self, step: int) -> np.ndarray:
        """Chunk indices of batch ``step`` (rows in order).

        Args:
            step: global step, >= 0.

        Returns:
            (b,) int64 indices into ``chunks``.

        Raises:
            DataError: a negative step.
        """
        if step < 0:
            raise DataError(f"step must be >= 0, got {step}")
        epoch, j = divmod(int(step), self.steps_per_epoch)
        order, batch_order = self._plan(epoch)
        k = int(batch_order[j])
        return order[self._bounds[k]: self._bounds[k + 1]]

    def epoch_indices(self, epoch: int) -> list[np.ndarray]:
        """Chunk indices of every batch of ``epoch`` in step order."""
        start = epoch * self.steps_per_epoch
        return [self.indices(start + j) for j in range(self.steps_per_epoch)]

    def batch(self, step: int) -> Batch:
        """The batch at global ``step`` (deterministic given the seed).

        Args:
            step: global step, >= 0.

        Returns:
            A :class:`Batch` with tokens/valid (b, n), ``b * n <= batch_bytes``.
        """
        idx = self.indices(step)
        width = int(self.padded[idx].max())
        return make_batch([self.chunks[i] for i in idx], width, self.doc_ids[idx], idx)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Every batch of one epoch, in step order (e.g. one pass over the held-out chunks)."""
        start = epoch * self.steps_per_epoch
        for j in range(self.steps_per_epoch):
            yield self.batch(start + j)
