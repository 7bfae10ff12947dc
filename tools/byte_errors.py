"""Where level 0's t = 0 reconstruction errors are: error rate by the target byte's class, by slot,
and by segment length, plus the commonest confusions, on held-out batches (decoded as ``zonkey
eval``'s ``recon_acc``: each segment's own span, from its clean latent).

    python tools/byte_errors.py RUN [--batches 8] [--raw] [--split train]

``--raw`` uses the raw weights instead of the EMA. Used for the diagnosis in docs/experiments.md
(session 6).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zonkey  # noqa: E402
from zonkey.core.inference import decode_own_spans  # noqa: E402
from zonkey.data import load_corpus  # noqa: E402


def byte_class(b: int) -> str:
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


def show(b: int) -> str:
    return chr(b) if 32 <= b < 127 else f"\\x{b:02x}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    ap.add_argument("--split", default="heldout", choices=["heldout", "train"], help="which split to count on")
    args = ap.parse_args()
    model = zonkey.load(args.run, use_ema=not args.raw)
    batches = load_corpus(model.recipe.data).batches(args.split, seed=0, batch_bytes=model.recipe.data.batch_bytes)
    err = collections.Counter()
    tot = collections.Counter()
    conf = collections.Counter()
    with torch.no_grad():
        for i in range(min(args.batches, len(batches))):
            pred, targets, own, seg = decode_own_spans(model, batches.batch(i))
            wrong = (pred != targets) & own
            slot = torch.arange(own.shape[1]).expand_as(own)
            length = seg.span[:, None].expand_as(own)
            for t, p, w, s, n in zip(targets[own].tolist(), pred[own].tolist(), wrong[own].tolist(),
                                     slot[own].tolist(), length[own].tolist()):
                for key in (("class", byte_class(t)), ("slot", s), ("length", n)):
                    tot[key] += 1
                    err[key] += w
                if w:
                    conf[(show(t), show(p))] += 1
    total = sum(v for k, v in tot.items() if k[0] == "class")
    wrong_all = sum(v for k, v in err.items() if k[0] == "class")
    print(f"{args.run}: t 0 byte accuracy {1 - wrong_all / max(total, 1):.4f} ({wrong_all} errors in {total} bytes)")
    for kind in ("class", "slot", "length"):
        keys = sorted(k for k in tot if k[0] == kind)
        print(f"by {kind}: " + "  ".join(f"{k[1]} {err[k] / tot[k]:.3f} ({err[k]}/{tot[k]})" for k in keys))
    print("commonest confusions (target -> decoded): "
          + ", ".join(f"{a}->{b} {n}" for (a, b), n in conf.most_common(15)))


if __name__ == "__main__":
    main()
