"""Train zonkey on your own text for about a minute, then split, sample, infill and evaluate.

Usage::

    python examples/quickstart.py my_corpus.txt              # one document per line, UTF-8
    python examples/quickstart.py my_corpus.txt --steps 300 --out runs/mine

The model is the bundled ``tiny`` recipe with its data source replaced by your file. At tiny's
speed on 2 CPU cores (about 0.75 s a step) the default 80 steps take about a minute: enough for
level 0 to start splitting text into word-like pieces, not for good samples (tiny trains 1200
steps; ``zonkey train tiny`` is the full run). A GPU machine runs the same script faster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zonkey
from zonkey import Recipe
from zonkey.core.train.trainer import train


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, then print a segmentation, samples, an infill and the held-out metrics.

    Returns:
        the headline figures of the evaluation (for a test to check).
    """
    ap = argparse.ArgumentParser(description="Train zonkey's tiny recipe on a .txt file, then use the model.")
    ap.add_argument("text", type=Path, help="a UTF-8 .txt file, one document per line")
    ap.add_argument("--steps", type=int, default=80, help="training steps (default 80: about a minute on 2 cores)")
    ap.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="the run directory (replaced)")
    args = ap.parse_args(argv)

    recipe = Recipe.load("tiny", [f"data.source={args.text}", f"train.steps={args.steps}",
                                  f"train.warmup_steps={min(50, max(1, args.steps // 4))}"])
    result = train(recipe, args.out)
    print(f"trained {result.step} steps in {result.seconds:.0f} s -> {args.out}")

    model = zonkey.load(args.out)
    first = zonkey.split(model, ["The river flows through the old city."])[0]
    print("split:   ", " | ".join(first["segments"]))
    for text in zonkey.sample(model, 3, steps=10, seed=0):
        print("sample:  ", repr(text))
    filled = zonkey.infill_details(model, "The river flows through the ", " city.", steps=10)
    print("infill:  ", repr(filled.text), f"(gap {filled.gap!r}, score {filled.score:.3f})")

    metrics = zonkey.evaluate(args.out, samples=8, infill=8, max_batches=2)
    headline = {k: float(metrics[k]) for k in ("recon_acc", "roundtrip_char_acc") if k in metrics}
    print("held-out:", ", ".join(f"{k} {v:.3f}" for k, v in headline.items()))
    return headline


if __name__ == "__main__":
    main()
