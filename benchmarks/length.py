"""Cost against document length: time per byte and peak memory of encoding, reconstruction and training.

    python benchmarks/length.py                     # tiny, random weights, 1 KB .. 1 MB, one thread
    python benchmarks/length.py --json              # one JSON object per row
    python benchmarks/length.py --run runs/tiny     # a trained run instead of random weights
    python benchmarks/length.py --sizes 1024,65536 --train 512,8192 --set model.levels.0.splitter.window=128

Every row runs in a fresh subprocess, so its peak resident memory (VmHWM) is its own.

- ``encode``: one document of N bytes split and compressed through every level (the encoder walk
  at inference, what ``zonkey split`` and the API run), median of repeats.
- ``reconstruct``: the same document through ``zonkey.reconstruct`` (encode level 0, decode every
  segment, put the bytes back).
- ``train``: one training step (forward, backward, AdamW) of the whole model, every level and loss
  term switched on, on batches of ``--batch-bytes`` bytes cut into documents of ``max_doc_bytes``.

The text is the bundled Wikipedia sample, its articles joined with blank lines and cut to N bytes.
Without ``--run`` the model has random weights; its splitter heads are given random weights whose
bias puts the BOS rate near each level's ``target_segment`` (a random splitter's flat heads would
only cut where a segment reaches ``max_segment``, half the trained number of segments).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import peak_rss_mib

SIZES = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20)
TRAIN_DOCS = (512, 1024, 2048, 4096, 8192)


def _text(n: int) -> str:
    """N bytes of the bundled Wikipedia sample (articles joined with blank lines), cut at a character."""
    from zonkey.data.sources import wiki_sample_path

    docs = [v["extract"] for v in json.loads(wiki_sample_path().read_text()).values() if v.get("extract")]
    out, size = [], 0
    for d in docs * (1 + n // max(1, sum(len(x) for x in docs))):
        out.append(d)
        size += len(d.encode("utf-8")) + 2
        if size >= n:
            break
    raw = "\n\n".join(out).encode("utf-8")[:n]
    return raw.decode("utf-8", errors="ignore")


def _model(args: argparse.Namespace):
    from zonkey.core.model.network import ZonkeyModel, build_model
    from zonkey.core.recipe import load_recipe, resolve_recipe_path

    if args.run:
        return ZonkeyModel.from_run(args.run)
    recipe = load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    torch.manual_seed(0)
    model = build_model(recipe)
    for level in model.levels:
        head = getattr(level.splitter, "head", None)
        target = getattr(level.splitter, "target_segment", None)
        if isinstance(head, torch.nn.Linear) and target:
            # logits ~ N(bias, 1): a share of about 1/target of the positions above 0
            torch.nn.init.normal_(head.weight, std=head.weight.shape[1] ** -0.5)
            torch.nn.init.constant_(head.bias, _normal_quantile(1.0 / target))
    return model.eval()


def _normal_quantile(p: float) -> float:
    """The standard normal's p-quantile, by bisection on erf."""
    lo, hi = -8.0, 8.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _repeats(run, budget: float, most: int) -> list[float]:
    """Times of ``run()``: at least one call, more while they fit in ``budget`` seconds (at most ``most``)."""
    times: list[float] = []
    while True:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
        if len(times) >= most or sum(times) + times[-1] > budget:
            return times


def _one(args: argparse.Namespace) -> dict:
    """One row, measured in this process."""
    torch.set_num_threads(args.threads)
    model = _model(args)
    if args.kind in ("encode", "reconstruct"):
        from zonkey.core.model.inference import reconstruct_texts
        from zonkey.data import encode_texts

        text = _text(args.size)
        n = len(text.encode("utf-8"))
        segments: list[int] = []

        def encode() -> None:
            with torch.no_grad():
                batch = encode_texts([text])
                segments.clear()
                for p in model.walk(batch.tokens, batch.valid):
                    segments.append(p.split.segments.num)
                    del p  # what `zonkey split` keeps of a pass: it is freed before the next level runs

        def reconstruct() -> None:
            out = reconstruct_texts(model, [text])
            assert len(out) == 1

        run = encode if args.kind == "encode" else reconstruct
        if n <= 1 << 16:
            run()  # warm-up: the first calls of small inputs pay one-time costs; long ones amortise them
        _reset_peak()
        times = _repeats(run, args.budget, 5)
        med = statistics.median(times)
        return {"kind": args.kind, "bytes": n, "us_per_byte": round(med / n * 1e6, 2), "repeats": len(times),
                "peak_rss_mib": round(peak_rss_mib(), 1), "segments": segments or None}
    return _train_row(args, model)


def _train_row(args: argparse.Namespace, model) -> dict:
    from zonkey.core.train.trainer import param_groups
    from zonkey.data.batches import make_batch

    doc = args.size
    rows = max(1, args.batch_bytes // doc)
    raw = _text(rows * doc * 4).encode("utf-8")
    model.train()
    opt = torch.optim.AdamW(param_groups(model, 0.01, model.recipe.model.levels), lr=1e-4)
    gen = torch.Generator().manual_seed(0)

    def batch(i: int):
        chunks = [raw[(i * rows + r) * doc % (len(raw) - doc):][:doc] for r in range(rows)]
        return make_batch(chunks, doc, list(range(rows)), list(range(rows)))

    times = []
    for i in range(args.warmup + args.steps):
        b = batch(i)
        if i == args.warmup:
            _reset_peak()
        t = time.perf_counter()
        out = model(b.tokens, b.valid, generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    nbytes = rows * doc
    return {"kind": "train", "bytes": doc, "batch_bytes": nbytes, "us_per_byte": round(med / nbytes * 1e6, 2),
            "repeats": len(times), "peak_rss_mib": round(peak_rss_mib(), 1),
            "seq_len_l1": out.stats.get("l1.seq_len")}


def _parse_sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--run", default=None, help="a trained run directory instead of random weights")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="document sizes (bytes) to encode")
    ap.add_argument("--train", default=",".join(map(str, TRAIN_DOCS)), help="max_doc_bytes of the training rows")
    ap.add_argument("--batch-bytes", type=int, default=8192, help="bytes per training batch (fixed)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of repeats per encode row")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kind:  # a child: measure one row and print it
        print(json.dumps(_one(args)))
        return
    jobs = [("encode", s) for s in _parse_sizes(args.sizes)] + [("reconstruct", s) for s in _parse_sizes(args.sizes)]
    jobs += [("train", s) for s in _parse_sizes(args.train)]
    base = [sys.executable, __file__, "--recipe", args.recipe, "--threads", str(args.threads),
            "--batch-bytes", str(args.batch_bytes), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--budget", str(args.budget)] + (["--run", args.run] if args.run else [])
    for o in args.overrides:
        base += ["--set", o]
    first: dict[str, float] = {}
    if not args.json:
        print(f"{'kind':<12}{'bytes':>9}{'us/byte':>10}{'vs first':>10}{'peak RSS MiB':>14}  segments / l1 length")
    for kind, size in jobs:
        res = subprocess.run(base + ["--kind", kind, "--size", str(size)], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{kind} {size}: failed: {res.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        row = json.loads(res.stdout.strip().splitlines()[-1])
        first.setdefault(kind, row["us_per_byte"])
        row["vs_first"] = round(row["us_per_byte"] / first[kind], 3)
        row["threads"] = args.threads
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            extra = row.get("segments") or row.get("seq_len_l1")
            print(f"{kind:<12}{row['bytes']:>9}{row['us_per_byte']:>10.2f}{row['vs_first']:>10.3f}"
                  f"{row['peak_rss_mib']:>14.1f}  {extra}", flush=True)


if __name__ == "__main__":
    main()
