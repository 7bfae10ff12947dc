"""Screen the library's vocabulary-headed priors on frozen latents (the cache of ``bank_screen.py extract``).

    python tools/context_screen.py RUN --dir D --k 8192 --budget 600 --tag ctx --set window=3 --set d_model=256
    python tools/context_screen.py RUN --dir D --k 8192 --budget 600 --tag seq --prior sequence --set head=bank

Trains ``prior.loss`` (the library's own objective) on the cached training rows for a fixed wall
time (warm-up, then a cosine over the elapsed share), then scores, on held-out rows: single-position
top-1 / MRR / bits with every other position clean (``position_log_probs``; a hit counts only on
the segment's own bank entry), single-word infill items (``bank_screen``'s), and samples from
noise (``prior.sample`` with the bank head's commit at the last step), rendered through the bank's
strings and level 0's decoder for "other", scored by the word trigram (order gain) and word
validity. Writes ``result-TAG.json`` in D.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bank_screen as bs


def build_prior(model, kind: str, k: int, sets: list[str]):
    """The library's prior of ``kind`` for level 0 of ``model``, with ``--set`` fields."""
    import yaml

    from zonkey.components.prior.context import ContextPriorConfig
    from zonkey.components.prior.sequence import SequencePriorConfig
    fields = {kv.split("=", 1)[0]: yaml.safe_load(kv.split("=", 1)[1]) for kv in sets}
    cls = ContextPriorConfig if kind == "context" else SequencePriorConfig
    fields.setdefault("bank_size", k)
    if kind == "sequence":
        fields.setdefault("head", "bank")
    cfg = cls(**fields)
    return cfg, cfg.build(model.levels[0].ctx)


@torch.no_grad()
def single(prior, split, pos, max_len: int) -> dict:
    """Top-1 / MRR / bits at ``pos`` (row, position) with every other position clean."""
    prior.eval()
    lps, golds = [], []
    for z, valid, at, _ in bs.single_position_batches(split, pos, max_len):
        lp, gold = prior.position_log_probs(z, valid, at)
        lps.append(lp)
        golds.append(gold)
    return bs.rank_metrics(torch.cat(lps), torch.cat(golds), prior.head.size)


@torch.no_grad()
def samples(model, prior, lens: list[int], steps: int, seed: int, wkn, vocab, mode: str = "mean",
            temperature: float = 1.0, other_scale: float = 1.0) -> dict:
    """Samples from noise rendered through level 0, scored on words and word order."""
    from zonkey.core.generate.descent import descend
    prior.eval()
    gen = torch.Generator().manual_seed(seed)
    b, n = len(lens), max(lens)
    valid = torch.arange(n)[None] < torch.tensor(lens)[:, None]
    t0 = time.time()
    z = prior.sample(b, n, steps=steps, generator=gen, valid=valid, mode=mode, temperature=temperature,
                     other_scale=other_scale)
    cls = prior.head.classes(z)
    other = float((cls[valid] == prior.head.size).float().mean())
    cfg = model.recipe.sample
    raw = descend(model, 1, z, valid, steps=0, sigma=0.0, epsilon=cfg.epsilon, generator=None)
    texts = [p.decode("utf-8", errors="replace") for p in raw]
    m = bs.text_metrics(texts, wkn, vocab)
    m.update({"other_share": round(other, 3), "s": round(time.time() - t0), "ex": texts[0][:240], "ex2": texts[1][:240]})
    return m


def main() -> None:
    """Train one arm for a fixed wall time, then score it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--k", type=int, default=8192)
    ap.add_argument("--prior", default="context", choices=["context", "sequence"])
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--positions", type=int, default=3000)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--modes", default="mean", help="comma-separated sampler modes")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--other-scale", type=float, default=1.0)
    ap.add_argument("--closed", action="store_true", help="diagnostic only: the 'other' class is never sampled")
    ap.add_argument("--load", action="store_true", help="score the saved prior-TAG instead of training")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = bs.load_model(a.run)
    tr, ho = bs.Split(a.dir, "train"), bs.Split(a.dir, "heldout")
    lat, logfreq, bank_ids = bs.load_bank(a.dir, a.k)
    cfg, prior = build_prior(model, a.prior, a.k, a.set)
    # the bank's "other" frequency: the training positions outside it
    strings = json.loads((Path(a.dir) / "strings.json").read_text())
    cm = bs.class_map(bank_ids, len(strings))
    prior.head.set_bank(lat.float(), logfreq[:a.k].float(), float(logfreq[a.k]))
    if a.load:
        from safetensors.torch import load_file
        prior.load_state_dict(load_file(str(Path(a.dir) / f"prior-{a.tag}.safetensors")), strict=False)
        a.budget = 0
    prior.train()
    opt = torch.optim.AdamW([p for p in prior.parameters() if p.requires_grad], lr=a.lr, betas=(0.9, 0.95),
                            weight_decay=0.01)
    gen = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    step = 0
    while time.time() - t0 < a.budget:
        prog = (time.time() - t0) / a.budget
        lr = a.lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(prog, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        rows = torch.randint(0, len(tr.lengths), (a.batch,), generator=gen)
        z0, _, valid = tr.gather(rows, cfg.max_len, gen)
        loss, st = prior.loss(z0, valid, gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"[{a.tag}] step {step} {time.time() - t0:.0f}s loss {float(loss.detach()):.3f} "
                  + " ".join(f"{k_} {v:.3f}" for k_, v in st.items()), flush=True)
        step += 1
    res = {"tag": a.tag, "prior": a.prior, "sets": a.set, "steps": step, "train_s": round(time.time() - t0),
           "batch": a.batch, "lr": a.lr, "seed": a.seed}
    pos = bs.eval_positions(ho, a.positions)
    res["single"] = single(prior, ho, pos, cfg.max_len) if pos else {}
    print(f"[{a.tag}] single {json.dumps(res['single'])}", flush=True)
    if a.items:
        items = bs._Items(model, strings, a.items)
        m = single(prior, items, items.pos, cfg.max_len)
        share = len(items.pos) / items.n_items
        res["infill"] = {"items": items.n_items, "one_segment_share": round(share, 3), "top1": m["top1"],
                         "exact_match": round(m["top1"] * share, 4)}
        print(f"[{a.tag}] infill {json.dumps(res['infill'])}", flush=True)
    if a.closed:
        prior.head.log_freq[-1] = float("-inf")
        a.tag += "-closed"
    if a.n:
        wkn, vocab = bs.text_context(model)
        lens = bs.sample_lengths(ho, a.n, cfg.max_len)
        res["samples"] = {}
        for mode in a.modes.split(","):
            res["samples"][mode] = samples(model, prior, lens, a.steps, 0, wkn, vocab, mode, a.temperature,
                                             a.other_scale)
            print(f"[{a.tag}] samples {mode} {json.dumps(res['samples'][mode])}", flush=True)
    (Path(a.dir) / f"result-{a.tag}{'-load' if a.load else ''}.json").write_text(json.dumps(res, indent=1))
    if a.load:
        return
    from safetensors.torch import save_file
    save_file({k_: v.contiguous() for k_, v in prior.state_dict().items()}, str(Path(a.dir) / f"prior-{a.tag}.safetensors"))


if __name__ == "__main__":
    main()
