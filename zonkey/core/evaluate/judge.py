"""An offline judge of generated text: a byte n-gram language model with interpolated Kneser–Ney.

The judge is trained on a run's training split only (never on held-out text), downloads nothing,
and reports **bits per byte**: the mean of −log2 p(byte | the ``order − 1`` bytes before it) over
every byte of the judged texts. Real held-out English scores about 2 bits/byte at order 5 on the
bundled Wikipedia sample; random letters and spaces score far higher (see the tests).

Model. Symbols are the 256 byte values plus one start symbol; every document is preceded by
``order − 1`` start symbols, so the first bytes of a text are predicted from "start of text"
(capitals, no leading space) rather than from nothing, and no n-gram crosses two documents. The
probability of byte w after context h (the ``k − 1`` symbols before it, k = order … 1) is

    P_k(w | h) = max(c_k(h w) − D_k, 0) / c_k(h) + D_k · N_k(h) / c_k(h) · P_{k−1}(w | h')

with h' the context without its oldest symbol, N_k(h) the number of distinct bytes seen after h,
and P_0 uniform over the 256 bytes. A context never seen at order k (c_k(h) = 0) backs off
entirely: P_k = P_{k−1}. At the highest order c_k counts occurrences; at lower orders it is the
Kneser–Ney continuation count, the number of distinct symbols seen before the n-gram. One
discount per order, D_k = n1 / (n1 + 2 n2) from that order's counts of counts (n1 n-grams with
count 1, n2 with count 2). Every P_k sums to exactly 1 over the 256 bytes.

Counting is exact and vectorised: an n-gram of k symbols is packed into one uint64, 9 bits a
symbol, so ``order`` is at most 7 and there are no hash collisions; the keys of every order come
from one rolling shift-and-or over the whole corpus, and counts from ``np.unique``. Queries are
``np.searchsorted`` into the sorted keys. A few MB of text train in seconds on one CPU core.

Cache. :func:`load_or_train` keeps the trained tables in a directory (a run directory) as
``judge-<fingerprint>.safetensors`` plus ``.json`` metadata; the fingerprint hashes the training
bytes, the order and the format version, so a changed corpus or order retrains and anything else
is a cache hit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BITS = 9  # bits per packed symbol: 256 bytes + the start symbol
START = 256  # the start-of-text symbol (never predicted)
MAX_ORDER = 64 // BITS  # 7
FORMAT_VERSION = 1
DEFAULT_ORDER = 5


@dataclass
class _Table:
    """One order's statistics, every array sorted by key.

    keys (g,) uint64 packed n-grams with their counts (g,) float64; ctx (h,) uint64 packed
    contexts (the n-gram without its last symbol) with totals (h,) float64 (sum of the counts
    after the context) and types (h,) float64 (distinct bytes after it); discount D of the order.
    """

    keys: np.ndarray
    counts: np.ndarray
    ctx: np.ndarray
    totals: np.ndarray
    types: np.ndarray
    discount: float


def _as_bytes(doc: bytes | str) -> bytes:
    return doc.encode("utf-8") if isinstance(doc, str) else bytes(doc)


def _symbols(docs: Iterable[bytes | str], order: int) -> np.ndarray:
    """All documents as one (n,) uint64 symbol stream, each preceded by ``order − 1`` START."""
    pad = np.full(order - 1, START, dtype=np.uint64)
    parts: list[np.ndarray] = []
    for d in docs:
        b = _as_bytes(d)
        if b:
            parts += [pad, np.frombuffer(b, dtype=np.uint8).astype(np.uint64)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _rolling_keys(sym: np.ndarray, order: int) -> list[np.ndarray]:
    """The packed k-grams of a symbol stream, for k = 1 .. ``order``.

    ``keys[k − 1][i]`` is the k-gram ending at position i (newest symbol in the low bits); it is
    meaningful where i ≥ k − 1, which holds at every byte position thanks to the padding.
    """
    keys = [sym.copy()]
    for _ in range(1, order):
        prev = keys[-1]
        k = np.zeros_like(prev)
        k[1:] = (prev[:-1] << np.uint64(BITS)) | sym[1:]
        keys.append(k)
    return keys


def _discount(counts: np.ndarray) -> float:
    n1 = float(np.sum(counts == 1))
    n2 = float(np.sum(counts == 2))
    if n1 == 0 or n1 + 2 * n2 == 0:
        return 0.5
    return float(min(max(n1 / (n1 + 2 * n2), 0.05), 0.95))


def _table(keys: np.ndarray, counts: np.ndarray) -> _Table:
    ctx_all = keys >> np.uint64(BITS)  # sorted, since the context is the key's high bits
    ctx, starts = np.unique(ctx_all, return_index=True)
    totals = np.add.reduceat(counts, starts) if len(starts) else np.zeros(0)
    types = np.diff(np.append(starts, len(keys))).astype(np.float64)
    return _Table(keys, counts.astype(np.float64), ctx, totals.astype(np.float64), types, _discount(counts))


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, found) of every query key in ``sorted_keys``."""
    idx = np.searchsorted(sorted_keys, query)
    idx = np.minimum(idx, max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[idx] == query) if len(sorted_keys) else np.zeros(query.shape, dtype=bool)
    return idx, found


class NgramJudge:
    """A byte n-gram model (interpolated Kneser–Ney, see the module docstring).

    Args:
        tables: one :class:`_Table` per order 1 … ``order``.
        fingerprint: identifies the training text and settings (see :func:`corpus_fingerprint`).
        train_bytes: bytes of training text the tables were counted from.
    """

    def __init__(self, tables: list[_Table], fingerprint: str = "", train_bytes: int = 0) -> None:
        self.tables = tables
        self.order = len(tables)
        self.fingerprint = fingerprint
        self.train_bytes = train_bytes

    @classmethod
    def train(cls, docs: Sequence[bytes | str], order: int = DEFAULT_ORDER) -> NgramJudge:
        """Count the n-grams of ``docs`` (the training split) up to ``order``.

        Raises:
            ValueError: an order outside 1 … 7, or no text at all.
        """
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"judge order must be between 1 and {MAX_ORDER} (got {order})")
        sym = _symbols(docs, order)
        real = sym < START
        if not real.any():
            raise ValueError("the judge has no training text (every document is empty)")
        top, counts = np.unique(_rolling_keys(sym, order)[-1][real], return_counts=True)
        tables = [_table(top, counts)]
        above = top
        for k in range(order - 1, 0, -1):
            # continuation counts: the distinct symbols seen before each k-gram are the unique
            # (k+1)-grams sharing it as their suffix (every k-gram occurrence has a symbol before
            # it, thanks to the padding), so lower orders need only the unique keys above them
            above, counts = np.unique(above & np.uint64((1 << (BITS * k)) - 1), return_counts=True)
            tables.insert(0, _table(above, counts))
        return cls(tables, corpus_fingerprint(docs, order), int(real.sum()))

    def _probs(self, keys: list[np.ndarray], at: np.ndarray, byte: np.ndarray) -> np.ndarray:
        """P(byte | context) at positions ``at`` of a padded stream whose rolling keys are ``keys``.

        ``byte`` (q,) uint64 replaces the symbol at each position.
        """
        p = np.full(at.shape, 1.0 / 256.0)
        shift = np.uint64(BITS)
        for k in range(1, self.order + 1):
            t = self.tables[k - 1]
            ctx = keys[k - 2][at - 1] if k > 1 else np.zeros(at.shape, dtype=np.uint64)
            ci, cfound = _lookup(t.ctx, ctx)
            gi, gfound = _lookup(t.keys, (ctx << shift) | byte)
            total = np.where(cfound, t.totals[ci], 1.0)
            count = np.where(gfound, t.counts[gi], 0.0)
            mixed = (np.maximum(count - t.discount, 0.0) + t.discount * t.types[ci] * p) / total
            p = np.where(cfound, mixed, p)
        return p

    def next_byte_probs(self, context: bytes | str) -> np.ndarray:
        """The distribution of the byte after ``context``, the text so far from its start.

        A context shorter than ``order − 1`` bytes is preceded by start symbols.

        Returns:
            (256,) probabilities, summing to 1.
        """
        ctx = _as_bytes(context)[-(self.order - 1):] if self.order > 1 else b""
        sym = np.concatenate([np.full(self.order - 1, START, dtype=np.uint64),
                              np.frombuffer(ctx, dtype=np.uint8).astype(np.uint64),
                              np.zeros(1, dtype=np.uint64)])
        keys = _rolling_keys(sym, self.order)
        at = np.full(256, len(sym) - 1)
        return self._probs(keys, at, np.arange(256, dtype=np.uint64))

    def bits(self, texts: Sequence[bytes | str]) -> tuple[float, int]:
        """(total bits, total bytes) of ``texts``, each judged as its own document."""
        sym = _symbols(texts, self.order)
        real = np.nonzero(sym < START)[0]
        if not len(real):
            return 0.0, 0
        keys = _rolling_keys(sym, self.order)
        p = self._probs(keys, real, sym[real])
        return float(-np.log2(p).sum()), int(len(real))

    def bits_per_byte(self, texts: Sequence[bytes | str]) -> float:
        """Mean −log2 p over every byte of ``texts`` (NaN when they hold no byte)."""
        total, n = self.bits(texts)
        return total / n if n else float("nan")

    # --- persistence ------------------------------------------------------------------------

    def tensors(self) -> dict[str, np.ndarray]:
        """The count tables as named arrays (what the cache saves as safetensors)."""
        out: dict[str, np.ndarray] = {}
        for k, t in enumerate(self.tables, start=1):
            for name in ("keys", "counts", "ctx", "totals", "types"):
                out[f"o{k}.{name}"] = np.ascontiguousarray(getattr(t, name))
        return out

    def metadata(self) -> dict[str, object]:
        """What the cache saves beside :meth:`tensors`: kind, format, order, fingerprint, discounts."""
        return {"kind": "byte n-gram, interpolated Kneser-Ney", "format_version": FORMAT_VERSION,
                "order": self.order, "fingerprint": self.fingerprint, "train_bytes": self.train_bytes,
                "discounts": [t.discount for t in self.tables]}

    @classmethod
    def from_tensors(cls, arrays: dict[str, np.ndarray], meta: dict) -> NgramJudge:
        """The judge saved as :meth:`tensors` and :meth:`metadata`.

        Args:
            arrays: the named count tables.
            meta: the metadata.

        Returns:
            The judge.
        """
        tables = [_Table(arrays[f"o{k}.keys"], arrays[f"o{k}.counts"], arrays[f"o{k}.ctx"], arrays[f"o{k}.totals"],
                         arrays[f"o{k}.types"], float(meta["discounts"][k - 1]))
                  for k in range(1, int(meta["order"]) + 1)]
        return cls(tables, str(meta["fingerprint"]), int(meta["train_bytes"]))


def corpus_fingerprint(docs: Iterable[bytes | str], order: int) -> str:
    """A short hash of the documents (their bytes and boundaries), the order and the format."""
    h = hashlib.sha256(f"zonkey-judge v{FORMAT_VERSION} order {order}\n".encode())
    for d in docs:
        b = _as_bytes(d)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:16]


def load_or_train(docs: Sequence[bytes | str], cache_dir: str | Path | None = None, *,
                  order: int = DEFAULT_ORDER) -> tuple[NgramJudge, bool]:
    """The judge of ``docs``, from the cache or trained.

    It is read from ``cache_dir`` when a judge of the same fingerprint is there, else trained (and
    saved there, atomically, when ``cache_dir`` is given and writable). ``cache_dir`` is usually a
    run directory, which may come from someone else: both cache files must resolve inside it.

    Returns:
        (judge, whether it came from the cache).

    Raises:
        CheckpointError: a cache file (a symbolic link) that resolves outside ``cache_dir``.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load, save

    from zonkey.errors import ZonkeyError
    from zonkey.io import atomic_write_bytes, atomic_write_json, inside, read_json

    fp = corpus_fingerprint(docs, order)
    if cache_dir is not None:
        base = Path(cache_dir) / f"judge-{fp}"
        weights, meta_path = base.with_suffix(".safetensors"), base.with_suffix(".json")
        for f in (weights, meta_path):  # neither read nor replaced when a link leads elsewhere
            inside(Path(cache_dir), f, f"{cache_dir}: judge cache")
        try:
            meta = read_json(meta_path)
            if meta.get("fingerprint") == fp and meta.get("format_version") == FORMAT_VERSION:
                return NgramJudge.from_tensors(load(weights.read_bytes()), meta), True
        except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, SafetensorError, ZonkeyError):
            pass  # missing, unreadable or malformed cache (a special file, deep JSON): retrain
    judge = NgramJudge.train(docs, order)
    if cache_dir is not None:
        try:
            atomic_write_bytes(weights, save(judge.tensors(), metadata={"fingerprint": fp}))
            atomic_write_json(meta_path, judge.metadata())
        except OSError:
            pass  # a read-only run directory: the judge is simply not cached
    return judge, False
