"""Text in, byte batches out: sources, the held-out split, chunking and byte-budget batches.

* :mod:`~zonkey.data.bytes`: the held-out hash, chunking, UTF-8 in and out, byte counts;
* :mod:`~zonkey.data.batches`: :class:`Batch`, :class:`ByteBatches`, :func:`encode_texts`;
* :mod:`~zonkey.data.sources`: the Wikipedia sample, local files, hub datasets;
* :mod:`~zonkey.data.corpus`: :class:`Corpus` and :func:`load_corpus` (with a cache).

Why the data is handled the way it is (sources, split, chunking, packing) is in ``docs/data.md``.
Nothing here touches a device or global state at import; ``datasets`` is imported only when a
local or hub source is read.
"""

from zonkey.data.batches import Batch, ByteBatches, encode_texts
from zonkey.data.bytes import byte_counts, chunk_bytes, decode_bytes, heldout_score, is_heldout
from zonkey.data.corpus import Corpus, CorpusStats, clear_corpus_cache, load_corpus
from zonkey.data.errors import DataError
from zonkey.data.sources import SUPPORTED_EXTENSIONS, WIKI_FILE, WIKI_PACKAGE, wiki_sample_path

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "WIKI_FILE",
    "WIKI_PACKAGE",
    "Batch",
    "ByteBatches",
    "Corpus",
    "CorpusStats",
    "DataError",
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
