"""The emergent vocabulary of level 0: the most frequent segments and their latents.

For a trained encoder with ``straight_through`` existence, a level-0 latent is an exact function
of its own segment's bytes: byte embeddings carry no context, the slots past the segment are
masked to −inf, and inference thresholds BOS at 0.5. So the latents of a corpus form a vocabulary
of segment strings, discovered by the splitter. A sequence prior with a vocabulary head
(``prior: {head: bank}``) predicts a distribution over the ``K`` most frequent of them (and an
"other" class for the rest); this module builds that bank:

* :func:`count_segments`: the deterministic level-0 segments of training text, counted by bytes;
* :func:`encode_segments`: each segment's latent, compressed from its own bytes alone (what the
  encoder gives it inside any text);
* :func:`build_bank`: both, for the ``K`` most frequent segments, with their log-frequencies.

A run whose encoder still moves rebuilds the bank every ``prior.bank_every`` steps; compressing
``K`` short segments is one small forward pass.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from zonkey.core.model.inference import text_batches
from zonkey.core.model.network import ZonkeyModel
from zonkey.data import encode_texts


@dataclass
class Bank:
    """The ``K`` most frequent level-0 segments of some training text.

    Attributes:
        strings: (K,) the segments' bytes, most frequent first.
        latents: (K, D) their latents on the sphere.
        log_freq: (K,) natural log of each segment's share of all counted segments.
        other_log_freq: log share of the counted segments outside the bank (−inf when none).
        coverage: share of the counted segments inside the bank.
        counted: segments counted.
    """

    strings: list[bytes]
    latents: Tensor
    log_freq: Tensor
    other_log_freq: float
    coverage: float
    counted: int


@torch.no_grad()
def count_segments(model: ZonkeyModel, texts: Sequence[str]) -> Counter[bytes]:
    """The deterministic level-0 segments of ``texts`` (BOS at p > 0.5), counted by their bytes.

    A segment is its own span, start to the next BOS, cut at the level's ``max_segment`` bytes
    (what its latent sees).
    """
    model.eval()
    m = model.levels[0].cfg.max_segment
    counts: Counter[bytes] = Counter()
    texts = [t for t in texts if t]
    device = model.table.device
    for group in text_batches(texts):
        batch = encode_texts([texts[i] for i in group]).to(device)
        split = model.encode(batch.tokens, batch.valid, upto=1)[0].split
        seg = split.segments
        rows = batch.tokens[seg.doc[:, None], seg.positions].cpu()  # (s, m) bytes of each segment's slots
        spans = seg.span.clamp(max=m).cpu()
        for r, n in zip(rows.tolist(), spans.tolist(), strict=True):
            counts[bytes(r[:n])] += 1
    return counts


def encode_segments(model: ZonkeyModel, strings: Sequence[bytes]) -> Tensor:
    """Each segment's level-0 latent, compressed from its own bytes alone (:meth:`ZonkeyModel.encode_segments`)."""
    return model.encode_segments(strings)


def build_bank(model: ZonkeyModel, texts: Sequence[str], size: int) -> Bank:
    """The ``size`` most frequent level-0 segments of ``texts``, their latents and log-frequencies.

    Args:
        model: the model (its current encoder).
        texts: training text to count segments in.
        size: K, the bank's size (fewer when the text has fewer distinct segments).

    Returns:
        the :class:`Bank`.

    Raises:
        ValueError: no segment in ``texts``.
    """
    counts = count_segments(model, texts)
    total = sum(counts.values())
    if not total:
        raise ValueError("no level-0 segment in the text the bank is built from")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]
    strings = [s for s, _ in top]
    inside = sum(c for _, c in top)
    log_freq = torch.tensor([math.log(c / total) for _, c in top], dtype=torch.float32, device=model.table.device)
    other = math.log((total - inside) / total) if total > inside else float("-inf")
    return Bank(strings=strings, latents=encode_segments(model, strings), log_freq=log_freq, other_log_freq=other,
                coverage=inside / total, counted=total)

