"""A loaded corpus: the held-out split by hash, the ``max_docs`` cap, chunks, and the load cache.

The bundled sample is chunked in memory; a local or hub source keeps its text in memory-mapped
Arrow files and its chunks are read when a batch needs them (:class:`~zonkey.data.store.LazyChunks`),
with the same split, the same cap and the same chunks.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from zonkey.data.batches import ByteBatches
from zonkey.data.bytes import chunk_bytes, heldout_score
from zonkey.data.errors import DataError
from zonkey.data.sources import RawDocuments, local_fingerprint, read_source
from zonkey.data.store import DocumentIndex, LazyChunks

if TYPE_CHECKING:  # pragma: no cover
    from zonkey.core.recipe import DataConfig

__all__ = ["Corpus", "CorpusStats", "clear_corpus_cache", "load_corpus"]


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
        """The counts by field name."""
        return asdict(self)


@dataclass(frozen=True)
class Corpus:
    """Train and held-out chunks (bytes, each at most ``config.max_doc_bytes``).

    ``train_doc[i]`` is the document of chunk ``train[i]`` (document ids 0..n_train_docs-1, in
    source order; a document's chunks are consecutive and in order). Same for the held-out side.
    The bundled sample's chunks are tuples of bytes; a local or hub source's are
    :class:`~zonkey.data.store.LazyChunks` (read from disk on access) with numpy document ids.
    Shared through the load cache: treat it as read-only.
    """

    train: Sequence[bytes]
    heldout: Sequence[bytes]
    train_doc: Sequence[int] | npt.NDArray[np.int64] = field(compare=False)
    heldout_doc: Sequence[int] | npt.NDArray[np.int64] = field(compare=False)
    stats: CorpusStats
    config: Any = field(default=None, compare=False, repr=False)  # the DataConfig it was loaded with

    def documents(self, split: str = "train") -> list[bytes]:
        """Whole documents of a split, re-assembled from their chunks.

        Args:
            split: ``"train"`` or ``"heldout"``.

        Returns:
            The documents' bytes, in source order.
        """
        chunks, docs = self._side(split)
        out: list[list[bytes]] = []
        for chunk, d in zip(chunks, docs, strict=True):
            if d == len(out):
                out.append([])
            out[d].append(chunk)
        return [b"".join(parts) for parts in out]

    def batches(self, split: str = "train", *, seed: int = 0, batch_bytes: int | None = None,
                pad_to_multiple: int = 1) -> ByteBatches:
        """:class:`ByteBatches` over a split (budget from the config unless given).

        Args:
            split: ``"train"`` or ``"heldout"``.
            seed: seeds the epoch permutations.
            batch_bytes: the budget ``b * n``; default ``config.batch_bytes``.
            pad_to_multiple: round each batch's width up to a multiple of this.

        Returns:
            The batches.

        Raises:
            DataError: an unknown or empty split, or no budget.
        """
        chunks, docs = self._side(split)
        budget = batch_bytes if batch_bytes is not None else (self.config.batch_bytes if self.config else None)
        if budget is None:
            raise DataError("batch_bytes not given and the corpus has no config")
        if not chunks:
            raise DataError(f"the {split} split of {self._where()} is empty")
        lengths = chunks.lengths if isinstance(chunks, LazyChunks) else None
        return ByteBatches(chunks, budget, seed=seed, doc_ids=docs, pad_to_multiple=pad_to_multiple, lengths=lengths)

    def _side(self, split: str) -> tuple[Sequence[bytes], Sequence[int] | npt.NDArray[np.int64]]:
        if split == "train":
            return self.train, self.train_doc
        if split == "heldout":
            return self.heldout, self.heldout_doc
        raise DataError(f"unknown split {split!r}: 'train' or 'heldout'")

    def _where(self) -> str:
        return f"data.source={self.config.source!r}" if self.config is not None else "the corpus"


_CACHE: OrderedDict[Hashable, Corpus] = OrderedDict()
_CACHE_SIZE = 4


def clear_corpus_cache() -> None:
    """Forget every corpus loaded by :func:`load_corpus` in this process."""
    _CACHE.clear()


def load_corpus(cfg: DataConfig, *, cache: bool = True) -> Corpus:
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
    key = (cfg, local_fingerprint(cfg.source))
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    corpus = _build_corpus(cfg)
    if cache:
        _CACHE[key] = corpus
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return corpus


def _build_corpus(cfg: DataConfig) -> Corpus:
    raw = read_source(cfg)
    if isinstance(raw, DocumentIndex):
        return _build_indexed(cfg, raw)
    return _build_in_memory(cfg, raw)


def _build_indexed(cfg: DataConfig, index: DocumentIndex) -> Corpus:
    """The corpus of an Arrow-backed source: the same split, cap and chunks, read lazily."""
    fraction = cfg.heldout_fraction
    scores = index.scores
    train_ids = np.flatnonzero(scores >= fraction)
    held_ids = np.flatnonzero(scores < fraction)
    if cfg.max_docs is not None:
        held_cap = math.ceil(cfg.max_docs * fraction / (1.0 - fraction))
        train_ids = _cap_array(train_ids, scores, cfg.max_docs)
        held_ids = _cap_array(held_ids, scores, held_cap)
    train, held = index.chunks(train_ids), index.chunks(held_ids)
    train_bytes, held_bytes = int(index.doc_bytes[train_ids].sum()), int(index.doc_bytes[held_ids].sum())
    stats = CorpusStats(
        n_docs=len(train_ids) + len(held_ids),
        n_empty_skipped=index.n_empty,
        n_chunks=len(train) + len(held),
        n_bytes=train_bytes + held_bytes,
        n_source_docs=len(index),
        n_train_docs=len(train_ids),
        n_heldout_docs=len(held_ids),
        n_train_chunks=len(train),
        n_heldout_chunks=len(held),
        n_train_bytes=train_bytes,
        n_heldout_bytes=held_bytes,
        n_chunked_docs=int((index.n_chunks[train_ids] > 1).sum() + (index.n_chunks[held_ids] > 1).sum()),
        n_repaired=index.n_repaired,
    )
    return Corpus(train, held, train.doc, held.doc, stats, cfg)


def _cap_array(ids: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """:func:`_cap` on arrays: the ``limit`` ids with the smallest score (ties by id), in source order."""
    if len(ids) <= limit:
        return ids
    keep = ids[np.lexsort((ids, scores[ids]))[:limit]]
    return np.sort(keep)


def _build_in_memory(cfg: DataConfig, raw: RawDocuments) -> Corpus:
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
    """The ``limit`` ids with the smallest held-out score, back in source order."""
    if len(ids) <= limit:
        return ids
    keep = sorted(ids, key=lambda i: (scores[i], i))[:limit]
    return sorted(keep)
