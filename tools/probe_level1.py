"""Probe level 1 in isolation: train a fresh level 1 (the run's own recipe block) on the frozen
level-0 latents of a trained run, or on random unit vectors, and print its contrastive
reconstruction loss and top-1 accuracy every 50 steps.

    python tools/probe_level1.py runs/demo-tiny --steps 400 [--random] [--same-cos 0.95] [--set n_compress=4]

``--random`` replaces the level-0 latents with vectors drawn from 500 random unit vectors (a
control: how fast level 1 learns when its inputs are well spread). ``--same-cos C`` treats every
candidate with cosine > C to the target as a false negative (default: only exact copies).
Used for the level-1 diagnosis in docs/experiments.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import zonkey.core.level as level_mod  # noqa: E402
from zonkey.core.hierarchy import latents_to_sequence  # noqa: E402
from zonkey.core.inference import split_batch  # noqa: E402
from zonkey.core.losses import contrastive_recon_loss  # noqa: E402
from zonkey.core.model import ZonkeyModel  # noqa: E402
from zonkey.core.sphere import to_sphere  # noqa: E402
from zonkey.data import load_corpus  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--same-cos", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a field of the level-1 block, e.g. n_compress=4 (YAML value)")
    ap.add_argument("--only", default=None, metavar="TERMS",
                    help="comma-separated loss terms to keep (the others get weight 0), e.g. recon_clean,avg_bos")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if args.same_cos is not None:
        tol = 1.0 - args.same_cos
        level_mod.contrastive_recon_loss = lambda *a, **k: contrastive_recon_loss(*a, same_tol=tol, **k)
    model = ZonkeyModel.from_run(args.run)
    if len(model.recipe.model.levels) < 2:
        sys.exit(f"{args.run}: the recipe has one level; the probe needs a level-1 block")
    batches = load_corpus(model.recipe.data).batches("train", seed=0, batch_bytes=model.recipe.data.batch_bytes)
    block = model.recipe.model.levels[1]
    if args.set:
        import yaml

        changes = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
        block = block.model_copy(update=changes)
    if args.only:
        keep = set(args.only.split(","))
        weights = {k: (v if k in keep else 0.0) for k, v in block.losses.model_dump().items()}
        block = block.model_copy(update={"losses": block.losses.model_copy(update=weights)})
    l1 = level_mod.Level(block, 1, model.attention)
    opt = torch.optim.AdamW(l1.parameters(), args.lr)
    vocab = to_sphere(torch.randn(500, l1.cfg.d_model))
    print("step  recon_clean  top1  mean_segment")
    for step in range(args.steps + 1):
        b = batches.batch(step)
        with torch.no_grad():
            seg = split_batch(model, b).segments
            z = model.levels[0].compress(seg.vectors, seg.log_existence)
            if args.random:
                z = vocab[torch.randint(0, len(vocab), (z.shape[0],))]
            seq = latents_to_sequence(z, seg.doc, b.tokens.shape[0])
        l1.train()
        out = l1(seq.x, seq.valid)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"{step:4d}  {float(out.terms['recon_clean'].detach()):11.3f}  {out.stats['train_recon_acc']:.4f}  "
                  f"{out.stats['mean_segment']:.2f}", flush=True)


if __name__ == "__main__":
    main()
