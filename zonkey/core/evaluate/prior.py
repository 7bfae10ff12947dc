"""The sequence prior's own held-out conditional likelihood: how well it knows a segment from its context.

For a level-0 prior with the vocabulary head (``prior: {head: bank}``), at ``n`` seeded positions
of held-out rows (the chunks' level-0 latents), every other position is given clean and the prior
predicts the held-out one (pseudo-log-likelihood):

* ``bits_per_segment``: −log2 p(true class), the class being the segment's bank entry or "other";
* ``top1`` and ``mrr`` (mean reciprocal rank) of the true segment: a hit needs the segment's own
  bank entry ranked first, so a segment outside the bank is never a hit (predicting "other" names
  no segment); ``top1_in_bank`` over the positions whose segment is in the bank, and
  ``other_share``: the share that is not;

beside two count baselines over the same classes, counted on the classes of training chunks
encoded the same way: ``unigram`` (the most frequent bank entry; its bits are the class frequencies')
and ``trigram`` (a bidirectional interpolated Kneser–Ney class trigram scoring both sides of the
position, normalised over the classes). A prior that learnt context beats the unigram; the
trigram is the parameter-free bar.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zonkey.core.evaluate.wordlm import UNKNOWN, WordTrigram
from zonkey.core.evaluate.words import as_text
from zonkey.core.model.inference import encode_to_level
from zonkey.core.model.network import ZonkeyModel

#: held-out positions scored by default
POSITIONS = 2000
#: training chunks whose classes the count baselines are counted on
TRAIN_CHUNKS = 1500
BATCH = 64


def _chunks(docs: Sequence[bytes | str], size: int, n: int, seed: int) -> list[str]:
    """``n`` seeded chunks of at most ``size`` bytes (whole documents cut at ``size``)."""
    texts = [as_text(d) for d in docs]
    pieces = [t[i:i + size] for t in texts for i in range(0, len(t), size) if t[i:i + size].strip()]
    random.Random(seed).shuffle(pieces)
    return pieces[:n]


@torch.no_grad()
def _class_rows(model: ZonkeyModel, texts: Sequence[str], max_len: int) -> list[tuple[Tensor, Tensor]]:
    """Each text's level-0 latents (cut to ``max_len``) and their classes under the prior's bank."""
    prior = model.levels[0].prior
    assert prior is not None and prior.bank is not None
    rows = []
    for z in encode_to_level(model, list(texts), 1):
        z = z[:max_len]
        if z.shape[0]:
            rows.append((z, prior.bank.classes(z)))
    return rows


def _count_model(rows: Sequence[tuple[Tensor, Tensor]]) -> WordTrigram:
    return WordTrigram([" ".join(f"c{c}" for c in cls.tolist()) for _, cls in rows])


@torch.no_grad()
def prior_likelihood(model: ZonkeyModel, train_docs: Sequence[bytes | str], heldout: Sequence[bytes | str], *,
                     positions: int = POSITIONS, seed: int = 0, train_chunks: int = TRAIN_CHUNKS) -> dict[str, Any] | None:
    """The held-out conditional likelihood of level 0's vocabulary-headed prior (module docstring).

    Args:
        model: the model (eval mode).
        train_docs: training documents (the count baselines).
        heldout: held-out documents.
        positions: held-out positions scored.
        seed: seed of the chunks and positions.
        train_chunks: training chunks the count baselines are counted on.

    Returns:
        the figures, or None when level 0 has no prior with a bank head.
    """
    prior = model.levels[0].prior if model.levels else None
    head = prior.bank if prior is not None else None
    if prior is None or head is None or not head.ready:
        return None
    model.eval()
    size = model.recipe.data.max_doc_bytes
    max_len = prior.cfg.max_len
    held = _class_rows(model, _chunks(heldout, size, max(positions // 20, 8), seed), max_len)
    pairs = [(r, i) for r, (z, _) in enumerate(held) for i in range(z.shape[0])]
    rng = random.Random(seed)
    picked = sorted(rng.sample(pairs, min(positions, len(pairs))))
    if not picked:
        return None
    k = head.size
    logps: list[Tensor] = []
    classes: list[Tensor] = []
    for a in range(0, len(picked), BATCH):
        part = picked[a:a + BATCH]
        n = max(held[r][0].shape[0] for r, _ in part)
        z0 = torch.zeros(len(part), n, held[0][0].shape[1], device=model.table.device)
        valid = torch.zeros(len(part), n, dtype=torch.bool, device=z0.device)
        for j, (r, _) in enumerate(part):
            z0[j, :held[r][0].shape[0]] = held[r][0]
            valid[j, :held[r][0].shape[0]] = True
        target = torch.tensor([i for _, i in part], device=z0.device)
        lp, cls = prior.position_log_probs(z0, valid, target)
        logps.append(lp.cpu())
        classes.append(cls.cpu())
    lp, cls = torch.cat(logps), torch.cat(classes)
    true = lp.gather(1, cls[:, None])[:, 0]
    rank = 1 + (lp > true[:, None]).sum(1)
    in_bank = cls < k
    named = in_bank.float()  # only a bank entry names a segment: "other" is never a hit
    out: dict[str, Any] = {
        "n": len(picked), "bank_size": k, "other_share": float((~in_bank).float().mean()),
        "bits_per_segment": float(-true.mean() / math.log(2)), "top1": float(((rank == 1).float() * named).mean()),
        "mrr": float((named / rank.float()).mean()),
        "top1_in_bank": float((rank[in_bank] == 1).float().mean()) if bool(in_bank.any()) else None,
    }
    out.update(_count_baselines(model, train_docs, held, picked, cls, k, size, max_len, seed, train_chunks))
    return out


def _count_baselines(model: ZonkeyModel, train_docs: Sequence[bytes | str], held: Sequence[tuple[Tensor, Tensor]],
                     picked: Sequence[tuple[int, int]], cls: Tensor, k: int, size: int, max_len: int, seed: int,
                     train_chunks: int) -> dict[str, Any]:
    """The unigram and bidirectional trigram over the same classes, counted on training chunks."""
    train = _class_rows(model, _chunks(train_docs, size, train_chunks, seed + 1), max_len)
    counts = np.bincount(torch.cat([c for _, c in train]).numpy(), minlength=k + 1).astype(np.float64) + 0.5
    uni = counts / counts.sum()
    gold = cls.numpy()
    top = int(np.argmax(uni[:k]))  # the most frequent bank entry (" the")
    lm = _count_model(train)
    cand = np.array([lm.ids.get(f"c{j}", UNKNOWN) for j in range(k + 1)], dtype=np.int64)
    bits, hits = [], []
    for (r, i), g in zip(picked, gold, strict=True):
        seq = [f"c{c}" for c in held[r][1].tolist()]
        s = lm.gap_scores(seq[:i], seq[i + 1:], cand)  # log2, (k + 1,)
        norm = s.max() + math.log2(float(np.exp2(s - s.max()).sum()))
        bits.append(norm - s[g])
        hits.append(g < k and int(np.argmax(s)) == g)
    return {
        "unigram": {"top1": float((gold == top).mean()), "bits_per_segment": float(-np.log2(uni[gold]).mean())},
        "trigram": {"top1": float(np.mean(hits)), "bits_per_segment": float(np.mean(bits))},
        "train_segments": int(sum(len(c) for _, c in train)),
    }
