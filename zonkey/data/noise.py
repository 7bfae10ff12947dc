"""Noisy held-out text: seeded typos, for the robustness of models to text that is not clean.

``typos=RATE`` edits each character of a held-out document with probability RATE: one of an
insertion (a random lowercase letter before it), a deletion or a substitution (another random
lowercase letter), chosen with equal probability. Characters, not bytes, are edited, so the text
stays valid UTF-8. Each document draws from its own generator, seeded by the seed and its index,
so a document's noise does not depend on which other documents are evaluated. The noisy documents
are chunked again to the recipe's ``max_doc_bytes``.
"""

from __future__ import annotations

import dataclasses
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from zonkey.data.bytes import chunk_bytes
from zonkey.data.corpus import Corpus
from zonkey.data.errors import DataError

KINDS = ("typos",)
LETTERS = string.ascii_lowercase


class NoiseSpecError(DataError):
    """A ``--noise`` value that cannot be read; the message says what was expected."""


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed noise spec: its kind and its rate (edits per character)."""

    kind: str
    rate: float

    def __str__(self) -> str:
        return f"{self.kind}={self.rate:g}"


def parse_noise(spec: str) -> NoiseSpec:
    """Read ``typos=RATE`` (RATE in [0, 1]).

    Raises:
        NoiseSpecError: another form, an unknown kind or a rate that is not a number in [0, 1].
    """
    kind, sep, value = spec.partition("=")
    kind = kind.strip()
    if not sep or not kind:
        raise NoiseSpecError(f"--noise {spec!r}: expected KIND=RATE, e.g. typos=0.05")
    if kind not in KINDS:
        raise NoiseSpecError(f"--noise {spec!r}: unknown noise {kind!r}; known: {', '.join(KINDS)}")
    try:
        rate = float(value)
    except ValueError:
        raise NoiseSpecError(f"--noise {spec!r}: the rate {value.strip()!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise NoiseSpecError(f"--noise {spec!r}: the rate must be between 0 and 1 (edits per character)")
    return NoiseSpec(kind, rate)


@dataclass
class EditCounts:
    """How many characters were read and how each was edited."""

    chars: int = 0
    inserted: int = 0
    deleted: int = 0
    substituted: int = 0

    @property
    def edits(self) -> int:
        """All edits."""
        return self.inserted + self.deleted + self.substituted


def add_typos(text: str, rate: float, rng: random.Random, counts: EditCounts | None = None) -> str:
    """``text`` with each character edited with probability ``rate`` (module docstring).

    Args:
        text: the text.
        rate: edits per character, in [0, 1].
        rng: the generator the edits draw from.
        counts: tallied in place when given.

    Returns:
        The noisy text.
    """
    c = counts if counts is not None else EditCounts()
    out: list[str] = []
    for ch in text:
        c.chars += 1
        if rng.random() >= rate:
            out.append(ch)
            continue
        op = rng.randrange(3)
        if op == 0:
            out += [rng.choice(LETTERS), ch]
            c.inserted += 1
        elif op == 1:
            c.deleted += 1
        else:
            out.append(rng.choice([x for x in LETTERS if x != ch]))
            c.substituted += 1
    return "".join(out)


def noisy_documents(docs: Sequence[bytes], spec: NoiseSpec, seed: int = 0) -> tuple[list[bytes], EditCounts]:
    """Every document with the noise of ``spec`` (document i drawn from its own seeded generator).

    Returns:
        (the noisy documents, the edit counts over all of them).
    """
    counts = EditCounts()
    out = []
    for i, d in enumerate(docs):
        rng = random.Random(f"zonkey-noise:{spec.kind}:{seed}:{i}")
        text = d.decode("utf-8", errors="replace")
        out.append(add_typos(text, spec.rate, rng, counts).encode("utf-8"))
    return out, counts


def noisy_corpus(corpus: Corpus, spec: NoiseSpec, seed: int = 0) -> tuple[Corpus, dict[str, float | int | str]]:
    """The corpus with its held-out documents made noisy and chunked again (training text untouched).

    Args:
        corpus: a loaded corpus.
        spec: the noise.
        seed: seed of the edits.

    Returns:
        (the noisy corpus, ``{spec, kind, rate, seed, chars, edits, inserted, deleted, substituted}``).

    Raises:
        DataError: every held-out document became empty.
    """
    docs, counts = noisy_documents(corpus.documents("heldout"), spec, seed)
    max_bytes = corpus.config.max_doc_bytes if corpus.config is not None else max(len(d) for d in docs)
    chunks: list[bytes] = []
    owner: list[int] = []
    for i, d in enumerate(d for d in docs if d):
        parts = chunk_bytes(d, max_bytes)
        chunks += parts
        owner += [i] * len(parts)
    if not chunks:
        raise DataError(f"--noise {spec}: every held-out document is empty after the edits")
    info: dict[str, float | int | str] = {"spec": str(spec), "kind": spec.kind, "rate": spec.rate, "seed": seed,
                                          **dataclasses.asdict(counts), "edits": counts.edits}
    return dataclasses.replace(corpus, heldout=tuple(chunks), heldout_doc=tuple(owner)), info
