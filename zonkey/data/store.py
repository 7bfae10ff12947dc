"""Documents read from memory-mapped Arrow tables, and the chunks of a split read back on demand.

A local or hub source is converted once by ``datasets`` into Arrow files in its cache and
memory-mapped; nothing here copies the text into Python objects beyond one record batch at a
time. One pass over the column (:func:`index_documents`) records, per non-empty document, its row,
its held-out score and the lengths of its chunks; :class:`LazyChunks` then reads a chunk by row
and byte offset when a batch asks for it. What stays in memory is a few numbers per document and
per chunk (about 40 bytes per chunk with the batch plan), not the text: a corpus larger than RAM
trains, and its pages are read from disk as batches need them.

The documents, keys, held-out scores and chunks are exactly those of reading the whole column into
lists (``tests/data/test_store.py`` checks both ways against each other).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import numpy.typing as npt

from zonkey.data.bytes import chunk_bytes, encode_text, heldout_score
from zonkey.data.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import pyarrow as pa

__all__ = [
    "ArrowColumn",
    "DocumentIndex",
    "LazyChunks",
    "TextColumn",
    "column_texts",
    "dataset_column",
    "index_documents",
    "text_batches",
]

_BATCH_ROWS = 4096  # rows turned into Python strings at a time while indexing


def column_texts(arr: pa.Array | pa.ChunkedArray, column: str, where: str, names: Sequence[str],
                 offset: int = 0) -> list[str | None]:
    """Text values of (a piece of) an Arrow column; DataError for a non-text column or undecodable row.

    Args:
        arr: the values.
        column: the column's name.
        where: what error messages name as the source.
        names: every column of the table (listed in the error for a non-text column).
        offset: the row of ``arr[0]`` in the whole column (for error messages).

    Returns:
        One str (or None for a missing value) per row.
    """
    import pyarrow as pa

    kind = arr.type
    if pa.types.is_null(kind):
        return [None] * len(arr)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return arr.to_pylist()
        except UnicodeDecodeError:
            for row, value in enumerate(arr):
                try:
                    value.as_py()
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: row {offset + row} of column {column!r} is not valid UTF-8 "
                                    f"(byte {e.start} of the value)") from None
            raise
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        out: list[str | None] = []
        for row, value in enumerate(arr.to_pylist()):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: row {offset + row} of column {column!r} is not valid UTF-8 "
                                f"(byte {e.start} of the value)") from None
        return out
    raise DataError(f"{where}: column {column!r} holds {kind}, not text; set data.text_column "
                    f"to a text column (columns: {', '.join(names)})")


@dataclass
class ArrowColumn:
    """The text column of a loaded dataset: its memory-mapped pieces and the Arrow files behind them."""

    pieces: list[pa.Array]
    name: str
    names: list[str]  # every column of the dataset
    files: list[str]  # its Arrow cache files in row order (empty: the table is in memory)


def dataset_column(ds: datasets.Dataset, column: str, where: str) -> ArrowColumn:
    """The text column of a loaded dataset; DataError naming the columns there are if it is missing."""
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                        "set data.text_column")
    files = [] if getattr(ds, "_indices", None) is not None else [f["filename"] for f in ds.cache_files]
    pieces = _mapped_pieces(files, column) if files else list(ds.data.column(column).chunks)
    return ArrowColumn(pieces, column, list(ds.column_names), files)


def _mapped_pieces(files: Sequence[str], column: str) -> list[pa.Array]:
    """``column`` of Arrow stream files, memory-mapped for random access.

    Mapped here rather than through ``datasets`` so that the kernel is told the reads are random
    (``MADV_RANDOM``: no read-ahead window is read from disk around each chunk a batch asks for).
    """
    import mmap

    import pyarrow as pa

    pieces: list[pa.Array] = []
    for fname in files:
        with open(fname, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                continue
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(mapped, "madvise"):
            mapped.madvise(mmap.MADV_RANDOM)
        for batch in pa.ipc.open_stream(pa.py_buffer(mapped)):
            pieces.append(batch.column(column))
    return pieces


def _record_batches(col: ArrowColumn) -> Iterator[pa.Array]:
    """The column's values in row order, one record batch at a time.

    From the Arrow files, read with ordinary reads rather than through the memory map: the pages
    of one pass over the whole corpus are not kept mapped into this process (only the chunks a
    batch later asks for are).
    """
    if not col.files:
        yield from col.pieces
        return
    import pyarrow as pa

    for fname in col.files:
        with pa.OSFile(fname) as f:
            for batch in pa.ipc.open_stream(f):
                yield batch.column(col.name)


def text_batches(col: ArrowColumn, where: str) -> Iterator[list[str | None]]:
    """The column's texts in row order, a bounded batch of rows at a time."""
    row = 0
    for piece in _record_batches(col):
        for start in range(0, len(piece), _BATCH_ROWS):
            part = piece.slice(start, _BATCH_ROWS)
            yield column_texts(part, col.name, where, col.names, offset=row)
            row += len(part)
    if row != sum(len(p) for p in col.pieces):
        raise DataError(f"{where}: read {row} rows from {', '.join(col.files)}, the table has "
                        f"{sum(len(p) for p in col.pieces)} (a changed datasets cache? delete it and retry)")


class TextColumn:
    """Random access to the text of any row of one or more Arrow columns (memory-mapped pieces)."""

    def __init__(self, pieces: Sequence[pa.Array]) -> None:
        self.pieces = [p for p in pieces if len(p)]
        sizes = np.fromiter((len(p) for p in self.pieces), dtype=np.int64, count=len(self.pieces))
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes
        self._last: tuple[int, bytes] | None = None  # consecutive chunks of a document share one read

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def document(self, row: int) -> bytes:
        """The UTF-8 bytes of ``row`` (as the index encoded them: unencodable characters replaced)."""
        if self._last is not None and self._last[0] == row:
            return self._last[1]
        k = int(np.searchsorted(self.ends, row, side="right"))
        value = self.pieces[k][row - int(self.starts[k])].as_py()
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        data = encode_text(text)[0]
        self._last = (row, data)
        return data


@dataclass
class DocumentIndex:
    """The non-empty documents of an Arrow-backed source, without their text.

    Attributes:
        column: where each document's text is read from.
        rows: (d,) int64 the row of each non-empty document, in source order.
        scores: (d,) float64 each document's held-out score (:func:`~zonkey.data.bytes.heldout_score`
            of its text).
        doc_bytes: (d,) int64 each document's length in bytes.
        n_chunks: (d,) int64 chunks of each document.
        chunk_len: (c,) int32 every chunk's length, documents in order.
        n_empty: missing or whitespace-only documents skipped.
        n_repaired: documents whose unencodable characters were replaced by U+FFFD.
        max_doc_bytes: the chunk size the chunks were cut to.
    """

    column: TextColumn
    rows: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float64]
    doc_bytes: npt.NDArray[np.int64]
    n_chunks: npt.NDArray[np.int64]
    chunk_len: npt.NDArray[np.int32]
    n_empty: int
    n_repaired: int
    max_doc_bytes: int

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self, ids: npt.NDArray[np.int64]) -> LazyChunks:
        """The chunks of documents ``ids`` (sorted), numbered 0..len(ids)-1 as their documents."""
        first = np.cumsum(self.n_chunks) - self.n_chunks  # each document's first chunk
        counts = self.n_chunks[ids]
        total = int(counts.sum())
        side_first = np.cumsum(counts) - counts  # first chunk of each chosen document on this side
        doc = np.repeat(np.arange(len(ids), dtype=np.int64), counts)
        within = np.arange(total, dtype=np.int64) - side_first[doc]  # chunk number inside its document
        chunk = first[ids][doc] + within  # index into chunk_len
        lengths = self.chunk_len[chunk].astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        doc_start = starts[side_first[doc]] if total else starts
        return LazyChunks(self.column, self.rows[ids][doc], starts - doc_start, lengths, doc)


def index_documents(column: TextColumn, values: Iterator[list[str | None]], max_doc_bytes: int) -> DocumentIndex:
    """One pass over a source's texts: rows, held-out scores and chunk lengths of the non-empty ones.

    Args:
        column: the texts by row (what the returned index reads chunks from).
        values: the same texts in row order, in batches (each str, or None for a missing value).
        max_doc_bytes: the most bytes of one chunk (:func:`~zonkey.data.bytes.chunk_bytes`).

    Returns:
        The :class:`DocumentIndex`.
    """
    rows: list[npt.NDArray[np.int64]] = []
    scores: list[npt.NDArray[np.float64]] = []
    sizes: list[npt.NDArray[np.int64]] = []
    counts: list[npt.NDArray[np.int64]] = []
    lens: list[npt.NDArray[np.int32]] = []
    n_empty = n_repaired = 0
    row = 0
    for batch in values:
        b_rows, b_scores, b_sizes, b_counts, b_lens = [], [], [], [], []
        for text in batch:
            if text is None or not text.strip():
                n_empty += 1
                row += 1
                continue
            data, repaired = encode_text(text)
            n_repaired += repaired
            parts = [len(data)] if len(data) <= max_doc_bytes else [len(c) for c in chunk_bytes(data, max_doc_bytes)]
            b_rows.append(row)
            b_scores.append(heldout_score(text))
            b_sizes.append(len(data))
            b_counts.append(len(parts))
            b_lens.extend(parts)
            row += 1
        rows.append(np.asarray(b_rows, dtype=np.int64))
        scores.append(np.asarray(b_scores, dtype=np.float64))
        sizes.append(np.asarray(b_sizes, dtype=np.int64))
        counts.append(np.asarray(b_counts, dtype=np.int64))
        lens.append(np.asarray(b_lens, dtype=np.int32))

    def cat(parts: list[Any], dtype: Any) -> Any:
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)

    return DocumentIndex(column, cat(rows, np.int64), cat(scores, np.float64), cat(sizes, np.int64),
                         cat(counts, np.int64), cat(lens, np.int32), n_empty, n_repaired, max_doc_bytes)


class LazyChunks(Sequence[bytes]):
    """The chunks of one split, each read from the memory-mapped column when it is asked for.

    Attributes:
        lengths: (c,) int64 each chunk's length (known without reading it).
        doc: (c,) int64 each chunk's document on this side (0.., in source order).
    """

    def __init__(self, column: TextColumn, rows: npt.NDArray[np.int64], starts: npt.NDArray[np.int64],
                 lengths: npt.NDArray[np.int64], doc: npt.NDArray[np.int64]) -> None:
        self.column = column
        self.rows = rows
        self.starts = starts
        self.lengths = lengths
        self.doc = doc

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"chunk {i} of {n}")
        i = i % n
        start = int(self.starts[i])
        return self.column.document(int(self.rows[i]))[start: start + int(self.lengths[i])]

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence: compared by content

    def __repr__(self) -> str:
        return f"LazyChunks({len(self)} chunks, {int(self.lengths.sum())} bytes)"
