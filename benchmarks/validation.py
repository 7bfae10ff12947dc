"""What the held-out pass of ``train.eval_every`` costs against the training it interrupts.

    python benchmarks/validation.py                        # recipes/tiny.yaml, 1 thread
    python benchmarks/validation.py --recipe small --rounds 5 --json

In one process, at each curriculum point of ``--at`` (default: step 0, level 0 alone, and step 1000,
both levels with every ramped term on), it alternates ``--steps`` training steps
(``Trainer.train_step``) with one held-out pass (the trainer's own, over ``train.eval_batches``
batches), ``--rounds`` times. Alternating in one process keeps the two under the same load, which
matters on a machine other work shares; the CPU time of the process (``time.process_time``) is
reported beside the wall time for the same reason. The overhead is one pass over ``eval_every``
steps, with the recipe's ``eval_every`` (100 where it sets none).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="tiny")
    ap.add_argument("--at", default="0,1000", help="curriculum points (steps), comma-separated")
    ap.add_argument("--steps", type=int, default=10, help="training steps between two passes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from zonkey.core.recipe import load_recipe
    from zonkey.core.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    path = Path(args.recipe) if args.recipe.endswith(".yaml") else REPO / "recipes" / f"{args.recipe}.yaml"
    recipe = load_recipe(path, overrides=[f"train.threads={args.threads}"])
    every = recipe.train.eval_every or 100
    recipe = load_recipe(path, overrides=[f"train.threads={args.threads}", f"train.eval_every={every}"])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        t = Trainer(recipe, Path(d) / "run", progress=False, log=lambda s: None)
        for at in (int(x) for x in args.at.split(",")):
            t.step = at
            t.train_step()  # warm-up
            step = {"wall": 0.0, "cpu": 0.0}
            val = {"wall": 0.0, "cpu": 0.0}
            for _ in range(args.rounds):
                w, c = time.perf_counter(), time.process_time()
                for _ in range(args.steps):
                    t.train_step()
                step["wall"] += time.perf_counter() - w
                step["cpu"] += time.process_time() - c
                w, c = time.perf_counter(), time.process_time()
                t._validation_values()
                val["wall"] += time.perf_counter() - w
                val["cpu"] += time.process_time() - c
            row = {"at_step": at, "eval_every": every, "eval_batches": recipe.train.eval_batches}
            for k in ("wall", "cpu"):
                s, p = step[k] / (args.rounds * args.steps), val[k] / args.rounds
                row.update({f"step_{k}_s": round(s, 3), f"pass_{k}_s": round(p, 3),
                            f"overhead_{k}_pct": round(100 * p / (every * s), 2)})
            rows.append(row)
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        print(f"{path.stem} at step {r['at_step']}: step {r['step_wall_s']} s wall / {r['step_cpu_s']} s CPU, "
              f"held-out pass ({r['eval_batches']} batches) {r['pass_wall_s']} s / {r['pass_cpu_s']} s: "
              f"{r['overhead_wall_pct']}% (wall) / {r['overhead_cpu_pct']}% (CPU) of training at eval_every "
              f"{r['eval_every']}")


if __name__ == "__main__":
    main()
