"""The level-1 round trip of one model on the same held-out text chunked to several document lengths.

The strict (same-offset) figure falls as documents get longer while character accuracy does not,
which is why character accuracy is the round trip's headline figure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from zonkey.core.evaluate.heldout import evaluate_level1
from zonkey.data import load_corpus
from zonkey.diagnose import DiagnosticError


@dataclass
class ChunkRoundTrip:
    """The round trip's accuracies with held-out documents cut to ``max_doc_bytes``."""

    max_doc_bytes: int
    strict: float  # byte accuracy at the same offsets
    aligned: float  # byte accuracy after aligning the reconstruction to the input
    character: float  # 1 - edit distance / bytes
    l1_top1: float  # level 1's contrastive top-1 retrieval of level-0 latents

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    def line(self) -> str:
        """One text row of the report."""
        return (f"max_doc_bytes {self.max_doc_bytes:>5}: strict {self.strict:.4f}  aligned {self.aligned:.4f}  "
                f"character {self.character:.4f}  level-1 top-1 {self.l1_top1:.4f}")


def roundtrip_chunks(model: Any, lengths: Sequence[int], *, eval_bytes: int = 65536) -> Iterator[ChunkRoundTrip]:
    """Evaluate the round trip with the held-out split chunked to each of ``lengths``, one length at a time.

    Args:
        model: a trained ``ZonkeyModel`` with at least two levels (in eval mode).
        lengths: document lengths (the data block's ``max_doc_bytes``) to chunk to, each >= 1.
        eval_bytes: held-out bytes per length, in whole batches (at least one).

    Returns:
        An iterator of one result per length, in the order given, each measured as it is reached.

    Raises:
        DiagnosticError: the model has one level, or a length is not positive.
    """
    if len(model.levels) < 2:
        raise DiagnosticError(f"the round trip needs two levels, this model has {len(model.levels)}")
    bad = [n for n in lengths if n < 1]
    if bad:
        raise DiagnosticError(f"document lengths must be >= 1, got {bad}")
    return _measure(model, list(lengths), eval_bytes)  # checked now, measured as the caller iterates


def _measure(model: Any, lengths: list[int], eval_bytes: int) -> Iterator[ChunkRoundTrip]:
    data_cfg = model.recipe.data
    for n in lengths:
        data = data_cfg.model_copy(update={"max_doc_bytes": n, "batch_bytes": max(data_cfg.batch_bytes, n)})
        batches = load_corpus(data).batches("heldout", seed=0, batch_bytes=data.batch_bytes)
        r = evaluate_level1(model, batches, max_batches=max(1, eval_bytes // data.batch_bytes))
        yield ChunkRoundTrip(n, r["roundtrip_acc"], r["roundtrip_acc_aligned"], r["roundtrip_char_acc"],
                             r["l1_recon_acc"])
