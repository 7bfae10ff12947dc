"""Infilling numbers (§9.2): one removed word per held-out sentence, or a user's own items.

Problems: ``n`` held-out sentences with one token removed, chosen by a seeded RNG (sentences end
at ``.``, ``!`` or ``?`` followed by whitespace and have 3 to 40 tokens). The removed token is the
gold; the prediction is the filled gap with surrounding whitespace stripped. A user's items
(:func:`read_infill_items`) are JSON lines ``{"prefix", "suffix", "answer"}``, the gold being the
stripped answer.

Scores, per model and per baseline:
 * ``exact_match``: prediction == gold (bytes, punctuation and case included);
 * ``char_acc``: 1 − edit distance / gold bytes, clamped at 0 per item (a long wrong fill costs at
   most the whole word), averaged over items;
 * ``byte_acc``: bytes equal at the same position over the longer length, averaged;
 * ``em_at_k`` for k = 1, 3, 5: the gold is among the k best candidates. The model's candidates
   are its searched gap lengths, best context-agreement score first (with fewer than k
   candidates, all of them count).

Baselines, from the training split's raw tokens:
 * ``the``: every gap filled with ``the``;
 * ``unigram``: the most frequent training token (EM@k: the k most frequent tokens);
 * ``sampled``: a token drawn from the training token frequencies, seeded (EM@k: k draws);
 * ``trigram``: the best token of a bidirectional word trigram counted on the training split
   (:mod:`zonkey.core.evaluate.wordlm`), which context decides (EM@k: its k best).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zonkey.core.contracts.outputs import ProgressFn
from zonkey.core.evaluate.heldout import levenshtein
from zonkey.core.evaluate.wordlm import WordTrigram
from zonkey.core.evaluate.words import as_text
from zonkey.errors import ZonkeyError
from zonkey.inputs import InputError, parse_json

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
KS = (1, 3, 5)
SNAP = "off"  # snapping decoded vectors to a bank of training latents is not implemented


class InfillItemsError(ZonkeyError, ValueError):
    """A malformed infill-items file; the message names the file and line."""


def infill_problems(docs: Sequence[bytes | str], n: int, seed: int = 0, *, min_words: int = 3,
                    max_words: int = 40) -> list[tuple[str, str, str]]:
    """``n`` (prefix, suffix, gold) triples: held-out sentences with one token removed.

    Sentences and the removed token are chosen by ``random.Random(seed)``; the sentence's tokens
    are re-joined with single spaces, the gap takes the removed token, so a prefix ends with a
    space (unless the gap is first) and a suffix starts with one (unless the gap is last).
    """
    pool = []
    for d in docs:
        for sent in SENTENCE_END.split(as_text(d)):
            toks = sent.split()
            if min_words <= len(toks) <= max_words:
                pool.append(toks)
    rng = random.Random(seed)
    out = []
    for si in rng.sample(range(len(pool)), min(n, len(pool))):
        toks = pool[si]
        i = rng.randrange(len(toks))
        prefix = " ".join(toks[:i]) + (" " if i > 0 else "")
        suffix = (" " if i < len(toks) - 1 else "") + " ".join(toks[i + 1:])
        out.append((prefix, suffix, toks[i]))
    return out


def read_infill_items(path: str | Path) -> list[tuple[str, str, str]]:
    """(prefix, suffix, stripped answer) of every non-blank JSON line of ``path``.

    Raises:
        InfillItemsError: an unreadable file, invalid UTF-8 or JSON, a line that is not an object
            with string ``prefix``, ``suffix`` and ``answer``, both prefix and suffix empty, or no
            item at all; the message names the file and, for a bad line, its number.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InfillItemsError(f"{path}: {exc.strerror or exc}") from None
    items = []
    for no, line in enumerate(raw.split(b"\n"), start=1):
        where = f"{path}:{no}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise InfillItemsError(f"{where}: not valid UTF-8") from None
        if not text.strip():
            continue
        try:
            obj = parse_json(text, where)
        except InputError as exc:  # invalid, too deeply nested, or a lone surrogate
            raise InfillItemsError(str(exc)) from None
        if not isinstance(obj, dict):
            raise InfillItemsError(f"{where}: expected a JSON object with prefix, suffix and answer")
        for key in ("prefix", "suffix", "answer"):
            if not isinstance(obj.get(key), str):
                raise InfillItemsError(f"{where}: {key!r} must be a string")
        if not obj["prefix"] and not obj["suffix"]:
            raise InfillItemsError(f"{where}: prefix and suffix are both empty (nothing to infill around)")
        items.append((obj["prefix"], obj["suffix"], obj["answer"].strip()))
    if not items:
        raise InfillItemsError(f"{path}: no items (JSON lines with prefix, suffix and answer)")
    return items


def byte_accuracy(pred: str, gold: str) -> float:
    """Bytes equal at the same position over the longer length (1.0 when both are empty)."""
    p, g = pred.encode("utf-8"), gold.encode("utf-8")
    longest = max(len(p), len(g))
    return sum(a == b for a, b in zip(p, g, strict=False)) / longest if longest else 1.0


def char_accuracy(pred: str, gold: str) -> float:
    """1 − edit distance / gold bytes, clamped at 0 (an empty gold: 1.0 if ``pred`` is empty)."""
    p, g = pred.encode("utf-8"), gold.encode("utf-8")
    if not g:
        return 1.0 if not p else 0.0
    return max(0.0, 1.0 - levenshtein(p, g) / len(g))


def infill_scores(preds: Sequence[str], golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, mean byte accuracy) of predicted gap words against gold words.

    A gold word without a prediction scores 0 (the sampled baseline has none without training tokens).
    """
    if not golds:
        return 0.0, 0.0
    exact = sum(p == g for p, g in zip(preds, golds, strict=False)) / len(golds)
    acc = sum(byte_accuracy(p, g) for p, g in zip(preds, golds, strict=False)) / len(golds)
    return exact, acc


def score_fills(preds: Sequence[str], candidates: Sequence[Sequence[str]], golds: Sequence[str]) -> dict[str, Any]:
    """Exact match, character and byte accuracy of ``preds``, and EM@k over ``candidates``.

    Scored against ``golds`` (see the module docstring); a gold word without a prediction scores 0.

    Args:
        preds: one fill per item.
        candidates: per item, the candidate fills best first.
        golds: the gold words.

    Returns:
        ``{exact_match, char_acc, byte_acc, em_at_k: {k: ...}}``.
    """
    n = len(golds)
    exact, acc = infill_scores(preds, golds)
    return {
        "exact_match": exact,
        "char_acc": sum(char_accuracy(p, g) for p, g in zip(preds, golds, strict=False)) / n if n else 0.0,
        "byte_acc": acc,
        "em_at_k": {str(k): sum(g in list(c)[:k] for c, g in zip(candidates, golds, strict=False)) / n if n else 0.0
                    for k in KS},
    }


def baselines(golds: Sequence[str], counts: Counter[str], seed: int = 0, *, lm: WordTrigram | None = None,
              contexts: Sequence[tuple[str, str]] | None = None) -> dict[str, dict[str, Any]]:
    """The ``the``, ``unigram`` and ``sampled`` baselines (module docstring) scored on ``golds``.

    With a word trigram ``lm`` and the items' (prefix, suffix) ``contexts``, also ``trigram``: the
    count model's best token for each gap (:meth:`~zonkey.core.evaluate.wordlm.WordTrigram.fill`).
    """
    top = [t for t, _ in counts.most_common(max(KS))]
    rng = np.random.default_rng(seed)
    toks = list(counts)
    freq = np.array([counts[t] for t in toks], dtype=np.float64)
    draws = rng.choice(len(toks), size=(len(golds), max(KS)), p=freq / freq.sum()) if toks and golds else []
    sampled = [[toks[i] for i in row] for row in draws]
    out = {
        "the": {"fill": "the", **score_fills(["the"] * len(golds), [["the"]] * len(golds), golds)},
        "unigram": {"fill": top[0] if top else "", **score_fills([top[0] if top else ""] * len(golds),
                                                                  [top] * len(golds), golds)},
        "sampled": {"fill": "a training token drawn by frequency",
                    **score_fills([s[0] for s in sampled], sampled, golds)},
    }
    if lm is not None and contexts is not None:
        fills = [lm.fill(p, s, k=max(KS)) or [""] for p, s in contexts]
        out["trigram"] = {"fill": "a word trigram of the training split, both sides",
                          **score_fills([f[0] for f in fills], fills, golds)}
    return out


def run_infill(model: Any, pairs: Sequence[tuple[str, str]], *, steps: int | None = None, seed: int = 0,
               batch: int = 16, progress: ProgressFn | None = None) -> tuple[list[str], list[list[str]]]:
    """The model's stripped fill of every (prefix, suffix) pair, and its stripped candidates best first.

    ``batch`` pairs go in each batched call, each call seeded ``seed + first index``.
    """
    from zonkey.core.generate.infill import infill_many

    preds: list[str] = []
    cands: list[list[str]] = []
    for i in range(0, len(pairs), batch):
        res = infill_many(model, list(pairs[i:i + batch]), steps=steps, seed=seed + i)
        for r in res:
            preds.append(r.gap.strip())
            ranked = sorted(r.candidates, key=lambda c: -float(c.get("score", 0.0)))
            cands.append([str(c["gap"]).strip() for c in ranked] or [r.gap.strip()])
        if progress is not None:
            progress(min(i + batch, len(pairs)), len(pairs))
    return preds, cands


def infill_metrics(model: Any, problems: Sequence[tuple[str, str, str]], counts: Counter[str], *, seed: int = 0,
                   steps: int | None = None, batch: int = 16, progress: ProgressFn | None = None,
                   lm: WordTrigram | None = None) -> dict[str, Any]:
    """Fill every problem's gap with the model and score it beside the baselines.

    Args:
        model: the model.
        problems: (prefix, suffix, gold) triples (gold already stripped).
        counts: raw token counts of the training split (the baselines).
        seed: seed of the fills and of the sampled baseline.
        steps: denoising steps (default: the recipe's ``sample.infill_steps``).
        batch: problems per batched call.
        progress: ``progress(done, total)`` over the problems.
        lm: the training split's word trigram (adds the ``trigram`` baseline).

    Returns:
        ``n``, ``snap``, the model's scores (:func:`score_fills`), ``baselines`` (per baseline
        the same scores and its fill), the legacy ``baseline_word`` / ``baseline_exact_match`` /
        ``baseline_byte_acc`` (the unigram baseline) and five ``examples``.
    """
    preds, cands = run_infill(model, [(p, s) for p, s, _ in problems], steps=steps, seed=seed, batch=batch,
                              progress=progress)
    golds = [g for _, _, g in problems]
    base = baselines(golds, counts, seed, lm=lm, contexts=[(p, s) for p, s, _ in problems])
    uni = base["unigram"]
    return {"n": len(problems), "snap": SNAP, **score_fills(preds, cands, golds), "baselines": base,
            "baseline_word": uni["fill"], "baseline_exact_match": uni["exact_match"],
            "baseline_byte_acc": uni["byte_acc"],
            "examples": [{"prefix": p, "suffix": s, "gold": g, "pred": q, "candidates": c}
                         for (p, s, g), q, c in zip(problems[:5], preds, cands, strict=False)]}
