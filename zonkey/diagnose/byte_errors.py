"""Where level 0's t = 0 reconstruction errors are.

Error rate by the target byte's class, by slot and by segment length, plus the commonest
confusions, on a split's batches, decoded as ``zonkey eval``'s ``recon_acc`` scores them: each
segment's own span, from its clean latent.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from zonkey.core.model.inference import decode_own_spans


def byte_class(b: int) -> str:
    """The class of one byte value.

    Returns:
        ``lowercase``, ``uppercase``, ``digit``, ``whitespace``, ``punctuation`` (any other ASCII byte)
        or ``non-ASCII`` (every byte >= 128).
    """
    if b >= 128:
        return "non-ASCII"
    c = chr(b)
    if c.isupper():
        return "uppercase"
    if c.islower():
        return "lowercase"
    if c.isdigit():
        return "digit"
    if c.isspace():
        return "whitespace"
    return "punctuation"


def show_byte(b: int) -> str:
    r"""A byte as printed in a confusion: itself if printable ASCII, else ``\xNN``."""
    return chr(b) if 32 <= b < 127 else f"\\x{b:02x}"


@dataclass
class ByteErrors:
    """Error counts of level 0's t = 0 reconstruction, per group.

    ``errors[kind][key]`` and ``totals[kind][key]`` count the wrong and all own-span bytes of a
    group; ``kind`` is ``class`` (key: a byte class), ``slot`` (key: the slot index in its segment)
    or ``length`` (key: the segment's own-span length in bytes). Every byte is counted once per kind.
    """

    errors: dict[str, collections.Counter] = field(default_factory=dict)
    totals: dict[str, collections.Counter] = field(default_factory=dict)
    confusions: collections.Counter = field(default_factory=collections.Counter)  # (target, decoded) -> count

    @property
    def bytes(self) -> int:
        """Own-span bytes counted."""
        return sum(self.totals.get("class", {}).values())

    @property
    def wrong(self) -> int:
        """Own-span bytes decoded wrongly."""
        return sum(self.errors.get("class", {}).values())

    @property
    def accuracy(self) -> float:
        """The t = 0 byte accuracy over the own spans (1.0 when nothing was counted)."""
        return 1 - self.wrong / max(self.bytes, 1)

    def rates(self, kind: str) -> dict[Any, dict[str, float]]:
        """``{key: {rate, errors, bytes}}`` of one kind, keys sorted."""
        tot, err = self.totals.get(kind, {}), self.errors.get(kind, {})
        return {k: {"rate": err[k] / tot[k], "errors": err[k], "bytes": tot[k]} for k in sorted(tot)}

    def as_dict(self, top: int = 15) -> dict[str, Any]:
        """A JSON-ready view: accuracy, counts, per-kind rates and the ``top`` commonest confusions."""
        return {
            "accuracy": self.accuracy, "errors": self.wrong, "bytes": self.bytes,
            **{f"by_{kind}": {str(k): v for k, v in self.rates(kind).items()} for kind in ("class", "slot", "length")},
            "confusions": [{"target": a, "decoded": b, "count": n} for (a, b), n in self.confusions.most_common(top)],
        }

    def lines(self, title: str, top: int = 15) -> list[str]:
        """The text report: a headline, one line per kind, the commonest confusions."""
        out = [f"{title}: t 0 byte accuracy {self.accuracy:.4f} ({self.wrong} errors in {self.bytes} bytes)"]
        for kind in ("class", "slot", "length"):
            rates = self.rates(kind)
            out.append(f"by {kind}: " + "  ".join(f"{k} {r['rate']:.3f} ({r['errors']}/{r['bytes']})"
                                                 for k, r in rates.items()))
        out.append("commonest confusions (target -> decoded): "
                   + ", ".join(f"{a}->{b} {n}" for (a, b), n in self.confusions.most_common(top)))
        return out


@torch.no_grad()
def byte_errors(model: Any, batches: Any, *, max_batches: int = 8,
                progress: Callable[[int, int], None] | None = None) -> ByteErrors:
    """Count level 0's t = 0 reconstruction errors on the first ``max_batches`` batches.

    Args:
        model: a trained ``ZonkeyModel`` (in eval mode).
        batches: ``ByteBatches`` of the split to count on (``len`` and ``batch(i)``).
        max_batches: at most this many batches, from the first.
        progress: ``progress(done, total)`` over the batches.

    Returns:
        The counts, per byte class, slot and segment length, and the confusions.
    """
    res = ByteErrors(errors={k: collections.Counter() for k in ("class", "slot", "length")},
                     totals={k: collections.Counter() for k in ("class", "slot", "length")})
    n_batches = min(max_batches, len(batches))
    for i in range(n_batches):
        pred, targets, own, seg = decode_own_spans(model, batches.batch(i))  # (s, m) each
        wrong = (pred != targets) & own
        slot = torch.arange(own.shape[1], device=own.device).expand_as(own)
        length = seg.span[:, None].expand_as(own)
        for t, p, w, s, n in zip(targets[own].tolist(), pred[own].tolist(), wrong[own].tolist(),
                                 slot[own].tolist(), length[own].tolist(), strict=True):
            for kind, key in (("class", byte_class(t)), ("slot", s), ("length", n)):
                res.totals[kind][key] += 1
                res.errors[kind][key] += w
            if w:
                res.confusions[(show_byte(t), show_byte(p))] += 1
        if progress is not None:
            progress(i + 1, n_batches)
    return res
