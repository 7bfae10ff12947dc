"""Numbers for generation and infilling (§9), next to real-text and trivial-baseline rows.

Words are whitespace-delimited tokens, lower-cased, with leading and trailing punctuation and
symbols (Unicode categories P* and S*) stripped; tokens that are nothing but punctuation are
dropped. The vocabulary is the set of such words in the training split.

Samples (``n`` texts from ``sample``):
 * ``valid_word_rate``: fraction of generated words that occur in the training vocabulary;
   ``real_valid_word_rate`` is the same on held-out text (the ceiling at this corpus size);
 * ``mean_bytes`` of a sample next to ``real_mean_bytes``, the mean held-out document length;
 * ``distinct_1`` / ``distinct_2``: distinct word uni/bigrams over all n-grams of all samples
   (n-grams do not cross texts). ``real_distinct_*`` are computed on held-out documents each cut
   to the word count of one sample, so both rows measure the same amount of text.

Infilling (``n`` held-out sentences with one word removed, chosen by a seeded RNG; sentences end at
``.``, ``!`` or ``?`` followed by whitespace and have 3 to 40 words): the removed token is the gold,
the prediction is the filled gap with surrounding whitespace stripped.
 * ``exact_match``: prediction == gold (bytes, punctuation included);
 * ``byte_acc``: per example, the bytes equal at the same position divided by the longer of the
   two lengths (so both a wrong byte and a missing or extra byte cost one), averaged over examples;
 * ``baseline_*``: the same for filling every gap with the most frequent training token.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

from zonkey.core.sample import ProgressFn

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def normalize_word(token: str) -> str:
    """Lower-case ``token`` and strip its leading and trailing punctuation / symbols."""
    i, j = 0, len(token)
    while i < j and _is_punct(token[i]):
        i += 1
    while j > i and _is_punct(token[j - 1]):
        j -= 1
    return token[i:j].lower()


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (empty ones dropped)."""
    return [w for w in (normalize_word(t) for t in text.split()) if w]


def _decode(doc: bytes | str) -> str:
    return doc if isinstance(doc, str) else doc.decode("utf-8", errors="replace")


def vocabulary(docs: Iterable[bytes | str]) -> set[str]:
    """The set of normalised words of ``docs``."""
    out: set[str] = set()
    for d in docs:
        out.update(words(_decode(d)))
    return out


def most_frequent_token(docs: Iterable[bytes | str]) -> str:
    """The most frequent raw whitespace-delimited token (the infill baseline's answer; ties: the
    token seen first)."""
    counts: Counter[str] = Counter()
    for d in docs:
        counts.update(_decode(d).split())
    if not counts:
        raise ValueError("no tokens in the training documents")
    return counts.most_common(1)[0][0]


def valid_word_rate(texts: Sequence[str], vocab: set[str]) -> float:
    """Fraction of the words of ``texts`` that are in ``vocab`` (0.0 when there are no words)."""
    ws = [w for t in texts for w in words(t)]
    return sum(w in vocab for w in ws) / len(ws) if ws else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    grams = [tuple(ws[i:i + n]) for t in texts for ws in [words(t)] for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def byte_accuracy(pred: str, gold: str) -> float:
    """Bytes equal at the same position over the longer length (1.0 when both are empty)."""
    p, g = pred.encode("utf-8"), gold.encode("utf-8")
    longest = max(len(p), len(g))
    return sum(a == b for a, b in zip(p, g)) / longest if longest else 1.0


def _cut_words(text: str, k: int) -> str:
    return " ".join(text.split()[:k])


def sample_metrics(texts: Sequence[str], real_docs: Sequence[bytes | str], vocab: set[str]) -> dict[str, Any]:
    """Metrics of generated ``texts`` next to held-out ``real_docs`` (see the module docstring)."""
    real = [_decode(d) for d in real_docs]
    cut = [_cut_words(real[i % len(real)], max(len(t.split()), 1)) for i, t in enumerate(texts)] if real else []
    return {
        "n": len(texts),
        "valid_word_rate": valid_word_rate(texts, vocab),
        "real_valid_word_rate": valid_word_rate(real, vocab),
        "mean_bytes": sum(len(t.encode("utf-8")) for t in texts) / max(len(texts), 1),
        "real_mean_bytes": sum(len(r.encode("utf-8")) for r in real) / max(len(real), 1),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "real_distinct_1": distinct_n(cut, 1),
        "real_distinct_2": distinct_n(cut, 2),
    }


def infill_problems(docs: Sequence[bytes | str], n: int, seed: int = 0, *, min_words: int = 3,
                    max_words: int = 40) -> list[tuple[str, str, str]]:
    """``n`` (prefix, suffix, gold) triples: held-out sentences with one token removed.

    Sentences and the removed token are chosen by ``random.Random(seed)``; the sentence's tokens
    are re-joined with single spaces, the gap takes the removed token, so a prefix ends with a
    space (unless the gap is first) and a suffix starts with one (unless the gap is last).
    """
    pool = []
    for d in docs:
        for sent in SENTENCE_END.split(_decode(d)):
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


def infill_scores(preds: Sequence[str], golds: Sequence[str]) -> tuple[float, float]:
    """(exact match, mean byte accuracy) of predicted gap words against gold words."""
    if not golds:
        return 0.0, 0.0
    exact = sum(p == g for p, g in zip(preds, golds)) / len(golds)
    acc = sum(byte_accuracy(p, g) for p, g in zip(preds, golds)) / len(golds)
    return exact, acc


def infill_metrics(model: Any, problems: Sequence[tuple[str, str, str]], baseline: str, *, seed: int = 0,
                   steps: Optional[int] = None, batch: int = 16, progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Fill every problem's gap with the model (``batch`` problems per batched call) and score it
    next to the most-frequent-token baseline."""
    from zonkey.core.infill import infill_many

    preds: list[str] = []
    for i in range(0, len(problems), batch):
        chunk = problems[i:i + batch]
        res = infill_many(model, [(p, s) for p, s, _ in chunk], steps=steps, seed=seed + i)
        preds += [r.gap.strip() for r in res]
        if progress is not None:
            progress(min(i + batch, len(problems)), len(problems))
    golds = [g for _, _, g in problems]
    exact, acc = infill_scores(preds, golds)
    b_exact, b_acc = infill_scores([baseline] * len(golds), golds)
    return {"n": len(problems), "exact_match": exact, "byte_acc": acc, "baseline_word": baseline,
            "baseline_exact_match": b_exact, "baseline_byte_acc": b_acc,
            "examples": [{"prefix": p, "suffix": s, "gold": g, "pred": q} for (p, s, g), q in zip(problems[:5], preds)]}


def evaluate_generation(model: Any, train_docs: Sequence[bytes | str], heldout: Sequence[bytes | str], *,
                        samples: int = 200, infill: int = 500, seed: int = 0,
                        progress: Optional[ProgressFn] = None) -> dict[str, Any]:
    """Sample and infill metrics of ``model`` (0 disables either part).

    Args:
        train_docs: the training documents (vocabulary and the baseline's most frequent token).
        heldout: held-out documents (the real-text rows and the infill sentences).
    """
    from zonkey.core.sample import sample

    out: dict[str, Any] = {}
    if samples:
        vocab = vocabulary(train_docs)
        texts = sample(model, samples, seed=seed).texts
        out["samples"] = sample_metrics(texts, heldout, vocab)
        out["samples"]["examples"] = texts[:5]
    if infill:
        problems = infill_problems(heldout, infill, seed)
        out["infill"] = infill_metrics(model, problems, most_frequent_token(train_docs), seed=seed, progress=progress)
    return out
