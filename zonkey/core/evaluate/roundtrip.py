"""Scoring texts rebuilt from decoded segments against the input.

Strict, aligned and character accuracy (see :class:`RoundTrip`), and the edit distance the last one
needs.
"""

from __future__ import annotations

from difflib import SequenceMatcher

import numpy as np
from torch import Tensor

from zonkey.data import Batch

__all__ = ["RoundTrip", "levenshtein"]


def levenshtein(a: bytes, b: bytes) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two byte strings.

    One row of the dynamic programme at a time, vectorised over the row: with ``c[j]`` the best
    cost reaching cell j by substitution/match or deletion, insertions chain along the row as
    ``row[j] = min_{i <= j} (c[i] + j − i)``, a running minimum of ``c − j`` plus j.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    bb = np.frombuffer(b, dtype=np.uint8)
    idx = np.arange(len(b) + 1)
    row = idx.copy()
    for i, ch in enumerate(a, start=1):
        c = np.empty_like(row)
        c[0] = i
        c[1:] = np.minimum(row[:-1] + (bb != ch), row[1:] + 1)
        row = np.minimum.accumulate(c - idx) + idx
    return int(row[-1])


class RoundTrip:
    """Byte accuracy of texts rebuilt from decoded segments.

    Each document's kept bytes are concatenated in segment order (hard stitching) and compared
    with the input three ways:

    * ``strict``: at the same offset, over max(len(output), len(input)) bytes: one wrong length
      shifts everything after it, so the figure depends on where in a document the first slip
      falls (shorter documents score higher for the same model);
    * ``aligned``: matching bytes of difflib's alignment over the same denominator;
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
            self.matched += sum(blk.size for blk in SequenceMatcher(None, out, ref, autojunk=False).get_matching_blocks())
            self.total += max(len(out), len(ref))
            self.edits += levenshtein(out, ref)
            self.ref_bytes += len(ref)

    @property
    def strict(self) -> float:
        """Bytes equal at the same offset over the longer of output and input."""
        return self.same / max(self.total, 1)

    @property
    def aligned(self) -> float:
        """Bytes of difflib's matching blocks over the longer of output and input."""
        return self.matched / max(self.total, 1)

    @property
    def char_acc(self) -> float:
        """1 − edit distance / input bytes, clamped at 0."""
        return max(0.0, 1.0 - self.edits / max(self.ref_bytes, 1))
