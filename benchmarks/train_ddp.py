"""Data-parallel training throughput: bytes of text per second for 1, 2, … ranks (``benchmarks/train.py --ddp``).

    python benchmarks/train.py --ddp 1,2 --recipe tiny --threads 1      # gloo on CPU
    python benchmarks/train.py --ddp 1,2,4,8 --recipe wiki              # NCCL, one GPU per rank

Each rank count is one ``torch.distributed.run`` launch on this machine. Every rank builds the
trainer (under torchrun: its process group, its rows of each global batch) and runs the trainer's
own step (``Trainer.train_step``: forward, the agreed non-finite check, backward with DDP's
gradient all-reduce, clip, AdamW, EMA) for ``--warmup`` then ``--steps`` steps. The global batch is
the recipe's whatever the rank count, so bytes per step are the same in every row and the speed-up
is the ratio of step times. Reported by rank 0: median step time, bytes/s of the whole run, bytes/s
per rank, and the scaling efficiency against the first rank count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    import torch
    import torch.distributed as dist

    from zonkey.core.recipe import load_recipe, resolve_recipe_path
    from zonkey.core.train.trainer import Trainer

    overrides = list(args.overrides)
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    recipe = load_recipe(resolve_recipe_path(args.recipe), overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, Path(tmp) / "run", progress=False, log=lambda s: None)
        start = args.at_step if args.at_step is not None else max(0, recipe.train.steps - args.warmup - args.steps)
        cuda = trainer.device.type == "cuda"

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()
            if dist.is_initialized():
                dist.barrier()

        times, nbytes = [], []
        for i in range(args.warmup + args.steps):
            trainer.step = start + i
            sync()
            t = time.perf_counter()
            _, _, b = trainer.train_step()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
                nbytes.append(b)
        world = trainer.dist.world if trainer.dist is not None else 1
        if trainer.main:
            print(json.dumps({
                "ranks": world,
                "device": trainer.device.type,
                "backend": dist.get_backend() if dist.is_initialized() else "none",
                "threads_per_rank": torch.get_num_threads(),
                "recipe": recipe.name,
                "steps": args.steps,
                "bytes_per_step": round(statistics.mean(nbytes), 1),
                "median_step_s": round(statistics.median(times), 4),
                "bytes_per_s": round(sum(nbytes) / sum(times), 1),
            }))
        if dist.is_initialized():
            dist.destroy_process_group()


def _launch(args: argparse.Namespace, ranks: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
           str(Path(__file__).resolve()), "--worker", "--recipe", args.recipe, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]
    if args.at_step is not None:
        cmd += ["--at-step", str(args.at_step)]
    for o in args.overrides:
        cmd += ["--set", o]
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=str(ROOT))
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"ranks": ranks, "failed": tail[0][:200]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ddp", default="1,2", help="comma-separated rank counts, one launch each")
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--at-step", type=int, default=None,
                    help="curriculum step of the first warm-up step (default: the recipe's last steps)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: torch's default)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per launch")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    rows = [_launch(args, int(r)) for r in args.ddp.split(",") if r.strip()]
    base = next((r for r in rows if "bytes_per_s" in r), None)
    for r in rows:
        if "bytes_per_s" in r:
            r["bytes_per_s_per_rank"] = round(r["bytes_per_s"] / r["ranks"], 1)
            if base is not None:
                r["scaling_efficiency"] = round(r["bytes_per_s"] / base["bytes_per_s"] * base["ranks"] / r["ranks"], 3)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data-parallel training throughput ({os.cpu_count()} cores, load average {load:.1f})")
    print("| ranks | device | backend | threads/rank | bytes/step | median step s | bytes/s | bytes/s per rank | efficiency |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['ranks']} | failed: {r['failed']} | | | | | | | |")
            continue
        print(f"| {r['ranks']} | {r['device']} | {r['backend']} | {r['threads_per_rank']} | {r['bytes_per_step']:.0f} | "
              f"{r['median_step_s']:.4f} | {r['bytes_per_s']:.0f} | {r['bytes_per_s_per_rank']:.0f} | "
              f"{r.get('scaling_efficiency', float('nan')):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
