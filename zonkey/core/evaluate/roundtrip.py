"""Scoring texts rebuilt from decoded segments against the input.

Strict, aligned and character accuracy (see :class:`RoundTrip`), with the edit distance and the
longest common subsequence they rest on (both from ``rapidfuzz``, in C++).
"""

from __future__ import annotations

from rapidfuzz.distance import LCSseq, Levenshtein
from torch import Tensor

from zonkey.data import Batch

__all__ = ["RoundTrip", "aligned_matches", "levenshtein"]


def levenshtein(a: bytes, b: bytes) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two byte strings."""
    return int(Levenshtein.distance(a, b))


def aligned_matches(a: bytes, b: bytes) -> int:
    """Bytes matched by the best alignment of two byte strings: their longest common subsequence."""
    return int(LCSseq.similarity(a, b))


class RoundTrip:
    """Byte accuracy of texts rebuilt from decoded segments.

    Each document's kept bytes are concatenated in segment order (hard stitching) and compared
    with the input three ways:

    * ``strict``: at the same offset, over max(len(output), len(input)) bytes: one wrong length
      shifts everything after it, so the figure depends on where in a document the first slip
      falls (shorter documents score higher for the same model);
    * ``aligned``: bytes matched by the best alignment (the longest common subsequence) over the
      same denominator;
    * ``char_acc``: 1 − (edit distance / input bytes), the character accuracy of OCR and speech
      evaluation (1 − CER): each dropped, added or wrong byte costs one, wherever it falls.
      Summed over documents; below 0 only if the output is mostly garbage (clamped at 0).
    """

    def __init__(self) -> None:
        self.same = self.matched = self.total = self.edits = self.ref_bytes = 0

    def add(self, batch: Batch, pred: Tensor, keep: Tensor, doc: Tensor) -> None:
        """Count the round trips of one batch.

        Args:
            batch: the input batch.
            pred: (r, m) decoded bytes.
            keep: (r, m) bool kept slots.
            doc: (r,) document of each row (rows in document order).
        """
        for d in range(batch.tokens.shape[0]):
            rows = (doc == d).nonzero().flatten().tolist()
            out = b"".join(bytes(pred[r][keep[r]].tolist()) for r in rows)
            ref = bytes(batch.tokens[d][batch.valid[d]].tolist())
            self.same += sum(1 for a, c in zip(out, ref, strict=False) if a == c)
            self.matched += aligned_matches(out, ref)
            self.total += max(len(out), len(ref))
            self.edits += levenshtein(out, ref)
            self.ref_bytes += len(ref)

    @property
    def strict(self) -> float:
        """Bytes equal at the same offset over the longer of output and input."""
        return self.same / max(self.total, 1)

    @property
    def aligned(self) -> float:
        """Bytes of the longest common subsequence over the longer of output and input."""
        return self.matched / max(self.total, 1)

    @property
    def char_acc(self) -> float:
        """1 − edit distance / input bytes, clamped at 0."""
        return max(0.0, 1.0 - self.edits / max(self.ref_bytes, 1))
