"""A word trigram with interpolated Kneser–Ney smoothing, counted on the training split.

It measures what the byte judge cannot: word *order* with word choice held fixed, and context in
infilling. Three uses in ``zonkey eval``:

* **order gain** of a row of texts: bits per word with each text's own words shuffled, minus bits
  per word as written. Real text gains about 3 bits a word; a sampler that draws words by
  frequency alone gains about 0, however real its words are;
* **unigram bits per word**: −log2 of the words' training frequency alone. A flood of function
  words shows as a low figure next to real text's;
* **the count-trigram infill baseline**: the word ``w`` maximising
  log p(w | t u) + log p(x | u w) + log p(y | w x) over the most frequent training words, for a
  gap with left context ``t u`` and right context ``x y``.

Words are whitespace tokens as written (case and punctuation kept), the tokens the infill gold and
the memorisation figure use. Each training document starts with two boundary symbols. A token the
training split never had shares one "unknown" id; its unigram mass is that of the words seen once.

Smoothing: p3(w|tu) = (max(c(tuw) − D, 0) + D·N(tu•)·p2(w|u)) / c(tu•); p2 uses the continuation
counts N(•uw) the same way over p1; p1(w) ∝ N(•w), the number of distinct words before ``w``. A
context never seen falls back to the order below. D = 0.75.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from zonkey.core.evaluate.words import as_text

BOUNDARY = 0  # the two symbols before every document (never predicted)
UNKNOWN = 1  # every token the training split never had
DISCOUNT = 0.75
#: candidates the infill baseline scores: the most frequent training tokens
INFILL_CANDIDATES = 20_000


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[key] where ``query`` is in the sorted ``keys``, else 0."""
    if not len(keys):
        return np.zeros(query.shape, dtype=values.dtype)
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[idx] == query, values[idx], 0)


def _group(keys: np.ndarray, by: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For sorted ``keys`` grouped by ``by`` (non-decreasing): (groups, summed weights, member count)."""
    groups, start, count = np.unique(by, return_index=True, return_counts=True)
    sums = np.add.reduceat(weights, start) if len(start) else np.zeros(0, dtype=weights.dtype)
    return groups, sums, count


class WordTrigram:
    """Interpolated Kneser–Ney word trigram of the training documents (module docstring)."""

    def __init__(self, docs: Sequence[bytes | str], discount: float = DISCOUNT) -> None:
        per_doc = [as_text(d).split() for d in docs]
        counts = Counter(t for toks in per_doc for t in toks)
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        self.ids: dict[str, int] = {t: i + 2 for i, t in enumerate(ranked)}
        self.words: list[str] = ["", "", *ranked]
        self.size = v = len(ranked) + 2
        self.discount = discount
        seqs = [np.array([BOUNDARY, BOUNDARY, *(self.ids[t] for t in toks)], dtype=np.int64) for toks in per_doc]
        t = np.concatenate([s[:-2] for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)
        u = np.concatenate([s[1:-1] for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)
        w = np.concatenate([s[2:] for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)
        # trigram counts and their contexts (t u)
        self.k3, self.c3 = np.unique((t * v + u) * v + w, return_counts=True)
        self.ctx3, self.ctx3_sum, self.ctx3_types = _group(self.k3, self.k3 // v, self.c3)
        # bigram continuation counts N(• u w): distinct t before (u w)
        self.k2, self.n2 = np.unique(self.k3 % (v * v), return_counts=True)
        self.ctx2, self.ctx2_sum, self.ctx2_types = _group(self.k2, self.k2 // v, self.n2)
        # unigram continuation counts N(• w), the unknown word given the mass of the words seen once
        cont = np.bincount(self.k2 % v, minlength=v).astype(np.float64)
        cont[BOUNDARY] = 0.0
        cont[UNKNOWN] = max(float(sum(1 for c in counts.values() if c == 1)), 1.0)
        self.p1 = cont / cont.sum()
        freq = np.zeros(v, dtype=np.float64)
        freq[2:] = [counts[tok] for tok in ranked]
        freq[UNKNOWN] = cont[UNKNOWN]
        self.unigram = freq / max(freq.sum(), 1.0)

    # -- probabilities ---------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """The token ids of ``text`` (unknown tokens: :data:`UNKNOWN`)."""
        return np.array([self.ids.get(tok, UNKNOWN) for tok in text.split()], dtype=np.int64)

    def log2p(self, t: np.ndarray, u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """log2 p(w | t u) for arrays of ids of one shape."""
        v, d = self.size, self.discount
        p1 = self.p1[w]
        s2 = _lookup(self.ctx2, self.ctx2_sum, u).astype(np.float64)
        n2 = _lookup(self.k2, self.n2, u * v + w).astype(np.float64)
        ty2 = _lookup(self.ctx2, self.ctx2_types, u).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p2 = np.where(s2 > 0, (np.maximum(n2 - d, 0.0) + d * ty2 * p1) / s2, p1)
        ctx = t * v + u
        s3 = _lookup(self.ctx3, self.ctx3_sum, ctx).astype(np.float64)
        c3 = _lookup(self.k3, self.c3, ctx * v + w).astype(np.float64)
        ty3 = _lookup(self.ctx3, self.ctx3_types, ctx).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            p3 = np.where(s3 > 0, (np.maximum(c3 - d, 0.0) + d * ty3 * p2) / s3, p2)
        return np.log2(np.maximum(p3, 1e-300))

    def bits(self, ids: np.ndarray) -> float:
        """Total −log2 p of a text's ids, from the document boundary."""
        seq = np.concatenate([[BOUNDARY, BOUNDARY], ids]).astype(np.int64)
        return float(-self.log2p(seq[:-2], seq[1:-1], seq[2:]).sum())

    # -- the figures -----------------------------------------------------------------------------
    def order_figures(self, texts: Sequence[str], seed: int = 0) -> dict[str, Any]:
        """Bits per word as written and shuffled, their difference, and unigram bits per word.

        Args:
            texts: one row of texts.
            seed: seed of the shuffles.

        Returns:
            ``{bits_per_word, shuffled_bits_per_word, order_gain, unigram_bits_per_word, words}``
            (None figures for a row without words). Texts of one word count in every figure but
            gain nothing by order.
        """
        rng = np.random.default_rng(seed)
        written = shuffled = unigram = 0.0
        n = 0
        for text in texts:
            ids = self.encode(text)
            if not len(ids):
                continue
            written += self.bits(ids)
            shuffled += self.bits(rng.permutation(ids))
            unigram += float(-np.log2(self.unigram[ids]).sum())
            n += len(ids)
        if not n:
            return {"bits_per_word": None, "shuffled_bits_per_word": None, "order_gain": None,
                    "unigram_bits_per_word": None, "words": 0}
        return {"bits_per_word": written / n, "shuffled_bits_per_word": shuffled / n,
                "order_gain": (shuffled - written) / n, "unigram_bits_per_word": unigram / n, "words": n}

    def gap_scores(self, left: Sequence[str], right: Sequence[str], candidates: np.ndarray) -> np.ndarray:
        """log2 scores of candidate ids for one gap: the trigrams (t u w), (u w x), (w x y) summed.

        ``left`` holds the tokens before the gap (its last two count; boundary symbols where it has
        fewer), ``right`` those after it (its first two; terms past its end are left out).
        """
        lt = [self.ids.get(tok, UNKNOWN) for tok in left][-2:]
        lt = [BOUNDARY] * (2 - len(lt)) + lt
        rt = [self.ids.get(tok, UNKNOWN) for tok in right][:2]
        w = candidates.astype(np.int64)
        ones = np.ones_like(w)
        score = self.log2p(lt[0] * ones, lt[1] * ones, w)
        if len(rt) >= 1:
            score = score + self.log2p(lt[1] * ones, w, rt[0] * ones)
        if len(rt) >= 2:
            score = score + self.log2p(w, rt[0] * ones, rt[1] * ones)
        return score

    def fill(self, prefix: str, suffix: str, k: int = 5, candidates: int = INFILL_CANDIDATES) -> list[str]:
        """The ``k`` best single tokens for the gap between ``prefix`` and ``suffix``.

        Scored by the trigrams that span the gap (:meth:`gap_scores`) over the ``candidates`` most
        frequent training tokens.
        """
        w = np.arange(2, min(self.size, 2 + candidates), dtype=np.int64)
        if not len(w):
            return []
        score = self.gap_scores(prefix.split(), suffix.split(), w)
        best = np.argsort(-score, kind="stable")[:k]
        return [self.words[int(w[i])] for i in best]
