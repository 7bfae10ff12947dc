"""The README's Python API, as a script the type checker reads (``make lint``) and a test runs.

Usage: ``python examples/api.py RUN`` with a trained run directory, or ``hf://org/name[@revision]``.
"""

from __future__ import annotations

import sys

import zonkey
from zonkey import InfillDetails, Recipe, SampleResult


def main(run: str) -> None:
    """Load the model of ``run`` and print what each API function returns."""
    recipe: Recipe = Recipe.load("tiny")  # a bundled recipe by name, as `zonkey train tiny`
    print(f"recipe {recipe.name}: {len(recipe.model.levels)} level(s)")

    model = zonkey.load(run)
    for row in zonkey.split(model, ["The river flows through the old city."]):
        print(" | ".join(row["segments"]))
    restored: list[str] = zonkey.reconstruct(model, ["The river flows through the old city."])
    print(restored[0])

    texts: list[str] = zonkey.sample(model, 2, steps=4, seed=0)
    details: SampleResult = zonkey.sample_details(model, 2, steps=4, seed=0)
    assert details.texts == texts
    print(texts, details.lengths)

    filled: str = zonkey.infill(model, "The river flows through the ", " city.", steps=4)
    info: InfillDetails = zonkey.infill_details(model, "The river flows through the ", " city.", steps=4)
    best = max(info.candidates, key=lambda c: c.score)
    print(filled, repr(info.gap), info.gap_len, f"{best.score:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/api.py RUN")
    main(sys.argv[1])
