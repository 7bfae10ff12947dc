"""Training throughput: bytes of text per second and peak memory for a recipe on this machine.

    python benchmarks/train.py                       # recipes/tiny.yaml
    python benchmarks/train.py --recipe recipes/tiny.yaml --steps 20 --set data.batch_bytes=2048
    python benchmarks/train.py --json
    python benchmarks/train.py --ddp 1,2 --threads 1 # data parallel: bytes/s per rank count (benchmarks/train_ddp.py)

Times full optimisation steps (forward, backward, clip, AdamW, EMA-free) after warm-up steps, on
real batches of the recipe's data, and reports the median step time, bytes/s (real bytes of text,
padding excluded) and the process's peak resident memory (CUDA: max allocated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import peak_rss_mib

from zonkey.core.model import build_model
from zonkey.core.recipe import load_recipe, resolve_recipe_path
from zonkey.core.train import param_groups, resolve_device
from zonkey.data import load_corpus


def main() -> None:
    if any(a == "--ddp" or a.startswith("--ddp=") for a in sys.argv[1:]):  # data parallel: one launch per rank count
        from train_ddp import main as ddp_main

        sys.exit(ddp_main(sys.argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    device = resolve_device(recipe.train.device)
    torch.manual_seed(0)
    model = build_model(recipe).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.01, recipe.model.levels), lr=recipe.train.lr)
    batches = load_corpus(recipe.data).batches("train", seed=0, batch_bytes=recipe.data.batch_bytes)
    times, nbytes = [], []
    for i in range(args.warmup + args.steps):
        b = batches.batch(i).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(b.tokens, b.valid)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
            nbytes.append(b.num_bytes)
    med = statistics.median(times)
    row = {
        "recipe": recipe.name,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "median_step_s": round(med, 4),
        "bytes_per_step": round(statistics.mean(nbytes), 1),
        "bytes_per_s": round(sum(nbytes) / sum(times), 1),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib(), 1),
    }
    if args.json:
        print(json.dumps(row))
    else:
        for k, v in row.items():
            print(f"{k:>16}: {v}")


if __name__ == "__main__":
    main()
