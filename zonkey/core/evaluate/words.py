"""Words of a text, as the generation metrics count them.

Words are whitespace-delimited tokens, lower-cased, with leading and trailing punctuation and
symbols (Unicode categories P* and S*) stripped; tokens that are nothing but punctuation are
dropped. The vocabulary is the set of such words in the training split. *Tokens* are the raw
whitespace-delimited pieces (case and punctuation kept): the infill gold, the baselines' fills
and the memorisation 4-grams are tokens.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence


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


def as_text(doc: bytes | str) -> str:
    """``doc`` as text (bytes decoded as UTF-8, invalid bytes replaced)."""
    return doc if isinstance(doc, str) else doc.decode("utf-8", errors="replace")


def vocabulary(docs: Iterable[bytes | str]) -> set[str]:
    """The set of normalised words of ``docs``."""
    out: set[str] = set()
    for d in docs:
        out.update(words(as_text(d)))
    return out


def token_counts(docs: Iterable[bytes | str]) -> Counter[str]:
    """How often every raw token occurs in ``docs`` (in first-seen order for ties)."""
    counts: Counter[str] = Counter()
    for d in docs:
        counts.update(as_text(d).split())
    return counts


def most_frequent_token(docs: Iterable[bytes | str]) -> str:
    """The most frequent raw whitespace-delimited token (the infill baseline's answer).

    Ties go to the token seen first.

    Raises:
        ValueError: the documents hold no token.
    """
    counts = token_counts(docs)
    if not counts:
        raise ValueError("no tokens in the training documents")
    return counts.most_common(1)[0][0]


def valid_word_rate(texts: Sequence[str], vocab: set[str]) -> float:
    """Fraction of the words of ``texts`` that are in ``vocab`` (0.0 when there are no words)."""
    ws = [w for t in texts for w in words(t)]
    return sum(w in vocab for w in ws) / len(ws) if ws else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0.0 when there are none).

    N-grams do not cross texts.
    """
    grams = [tuple(ws[i:i + n]) for t in texts for ws in [words(t)] for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
