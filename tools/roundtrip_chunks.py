"""The round trip of one model on the same held-out text chunked to several document lengths: the
strict (same-offset) figure falls as documents get longer while character accuracy does not, which
is why character accuracy is the round trip's headline figure (docs/experiments.md, session 7).

    python tools/roundtrip_chunks.py RUN [--bytes 65536] [--lengths 128,256,512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zonkey  # noqa: E402
from zonkey.core.evaluate import evaluate_level1  # noqa: E402
from zonkey.data import load_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--bytes", type=int, default=65536, help="held-out bytes to evaluate (whole batches)")
    ap.add_argument("--lengths", default="128,256,512", help="document lengths (max_doc_bytes) to chunk to")
    args = ap.parse_args()
    model = zonkey.load(args.run)
    if len(model.levels) < 2:
        sys.exit(f"{args.run}: the round trip needs two levels, this model has {len(model.levels)}")
    bb = model.recipe.data.batch_bytes
    for n in (int(x) for x in args.lengths.split(",")):
        data = model.recipe.data.model_copy(update={"max_doc_bytes": n, "batch_bytes": max(bb, n)})
        batches = load_corpus(data).batches("heldout", seed=0, batch_bytes=data.batch_bytes)
        r = evaluate_level1(model, batches, max_batches=max(1, args.bytes // data.batch_bytes))
        print(f"max_doc_bytes {n:>5}: strict {r['roundtrip_acc']:.4f}  aligned {r['roundtrip_acc_aligned']:.4f}  "
              f"character {r['roundtrip_char_acc']:.4f}  level-1 top-1 {r['l1_recon_acc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
