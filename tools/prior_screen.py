"""Screen sequence-prior variants on the frozen level-0 latents of a trained run.

    python tools/prior_screen.py extract RUN --cache lat.safetensors --chunks 6000
    python tools/prior_screen.py train RUN --cache lat.safetensors --tag base --steps 900 --batch 8 --lr 5e-4
    python tools/prior_screen.py train RUN --cache lat.safetensors --tag w128 --batch 32 --lr 4e-3 --over '{"d_model": 128}'
    python tools/prior_screen.py eval RUN --cache lat.safetensors --tag base --over '{...}' --set sample.guidance=2

``extract`` encodes random training chunks with the run's encoder and saves their level-0 latent
sequences (safetensors). ``train`` fits a fresh ``sequence`` prior (config fields from ``--over``)
on them for ``--steps`` steps (AdamW, warm-up 50, cosine to 0.1x), optionally with an in-batch
latent classification term (``--nce``) or a byte cross-entropy through level 0's decoder
(``--ce``), saves it as ``prior-TAG.safetensors`` beside the cache, plugs it into the run as its
level-0 prior and prints one ``RESULT`` JSON line: sample metrics at T 30 (100 samples, snap off)
and infill exact match with the gap length fixed at 1 and searched over 1-4. ``eval`` scores a
prior saved by ``train`` (same ``--tag`` and ``--over``) again, with the ``--set sample.*``
settings of the call (sampler options such as guidance). Used for the prior screens of
docs/experiments.md; the run itself is not changed on disk.
"""

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from zonkey.core.model.inference import encode_to_level
from zonkey.core.model.network import ZonkeyModel
from zonkey.data import chunk_bytes, load_corpus

ap = argparse.ArgumentParser()
ap.add_argument("cmd"); ap.add_argument("run"); ap.add_argument("--cache", default="latents.pt")
ap.add_argument("--chunks", type=int, default=4000)
ap.add_argument("--steps", type=int, default=900); ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--lr", type=float, default=5e-4); ap.add_argument("--over", default="{}")
ap.add_argument("--tag", default="x"); ap.add_argument("--n", type=int, default=100)
ap.add_argument("--infill", type=int, default=100); ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--set", dest="sets", action="append", default=[])  # sample.* settings for the scoring
ap.add_argument("--ce", type=float, default=0.0)  # weight of the decode cross-entropy of x_hat
ap.add_argument("--ce-max-sigma", type=float, default=1.0)
ap.add_argument("--nce", type=float, default=0.0)  # weight of the in-batch latent classification of x_hat
ap.add_argument("--nce-temp", type=float, default=1.0)
args = ap.parse_args()
torch.set_num_threads(args.threads)
model = ZonkeyModel.from_run(args.run); model.eval()
model.with_sample_settings(args.sets)

if args.cmd == "extract":
    corpus = load_corpus(model.recipe.data)
    docs = corpus.documents("train")
    chunks = [c for d in docs for c in chunk_bytes(d, model.recipe.data.max_doc_bytes)]
    random.Random(0).shuffle(chunks)
    chunks = chunks[: args.chunks]
    seqs = []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(chunks), 32):
            texts = [c.decode("utf-8", errors="replace") for c in chunks[i:i + 32]]
            seqs += [s.clone() for s in encode_to_level(model, texts, 1)]
    L = max(s.shape[0] for s in seqs)
    z = torch.zeros(len(seqs), L, seqs[0].shape[1]); valid = torch.zeros(len(seqs), L, dtype=torch.bool)
    for i, s in enumerate(seqs):
        z[i, :len(s)] = s; valid[i, :len(s)] = True
    save_file({"z": z.contiguous(), "valid": valid.contiguous()}, args.cache)
    print(f"{len(seqs)} rows, max len {L}, mean {valid.sum(1).float().mean():.1f}, {time.time()-t0:.0f}s")
    sys.exit()

from zonkey.components.prior.sequence import SequencePriorConfig

data = load_file(args.cache)
Z, V = data["z"], data["valid"]
over = json.loads(args.over)
cfg = SequencePriorConfig(**over)
torch.manual_seed(args.seed)
prior = cfg.build(model.levels[0].ctx)
prior.train()
opt = torch.optim.AdamW(prior.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
gen = torch.Generator().manual_seed(args.seed)
warm = 50
import torch.nn.functional as F

from zonkey.core.nn.sphere import atanh_cos_logits

for p_ in model.parameters():
    p_.requires_grad_(False)
lv0 = model.levels[0]
table = model.table


def ce_loss(z0, valid):
    """The prior's loss with the optional classification and decoded cross-entropy terms."""
    z0, valid, zt, sigma, known, cond = prior.training_inputs(z0, valid, gen)
    z_hat = prior(zt, sigma, known, valid, cond)
    w = (valid & ~known).float()
    mse = ((z_hat - z0).pow(2).mean(-1) * w).sum() / w.sum().clamp_min(1)
    sel = (valid & ~known & (sigma[:, None] <= args.ce_max_sigma))
    if sel.sum() == 0:
        return mse
    if args.nce > 0:
        cand = z0[valid]  # (N, D) every clean latent of the batch
        q = z_hat[sel]; tgt = z0[sel]
        from zonkey.core.nn.sphere import atanh_cos_logits as acl
        logits = acl(q[:, None, :], cand)[:, 0] / args.nce_temp  # (s, N)
        with torch.no_grad():
            same = F.cosine_similarity(tgt[:, None, :], cand[None], dim=-1) > 0.98  # the target and its duplicates
        # log of the summed probability of every duplicate of the target
        lse_all = torch.logsumexp(logits, -1)
        lse_pos = torch.logsumexp(logits.masked_fill(~same, -1e9), -1)
        mse = mse + args.nce * (lse_all - lse_pos).mean()
        if args.ce == 0:
            return mse
    with torch.no_grad():
        tgt_out = lv0.denoise(z0[sel], z0.new_zeros(int(sel.sum())))
        tgt = atanh_cos_logits(tgt_out.x_hat, table).argmax(-1)  # (s, m)
        ex = tgt_out.log_existence.exp() > 0.5
    out = lv0.denoise(z_hat[sel], z0.new_zeros(int(sel.sum())))
    logits = atanh_cos_logits(out.x_hat, table)
    ce = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), reduction="none").view_as(tgt)
    ce = (ce * ex).sum() / ex.sum().clamp_min(1)
    return mse + args.ce * ce
t0 = time.time()
saved = Path(args.cache).with_name(f"prior-{args.tag}.safetensors")
if args.cmd == "eval":  # score a prior trained before, with this call's --set settings
    prior.load_state_dict(load_file(str(saved)))
    args.steps = 0
for step in range(args.steps):
    lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
    for g in opt.param_groups: g["lr"] = lr
    idx = torch.randint(0, Z.shape[0], (args.batch,), generator=gen)
    v = V[idx]; n = int(v.sum(1).max())
    if args.ce > 0 or args.nce > 0:
        loss = ce_loss(Z[idx, :n], v[:, :n])
    else:
        loss, _ = prior.loss(Z[idx, :n], v[:, :n], gen)
    opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
    opt.step()
    if step % 100 == 0 or step == args.steps - 1:
        print(f"[{args.tag}] step {step} loss {loss.item():.4f} {time.time()-t0:.0f}s", flush=True)
train_s = time.time() - t0
if args.cmd == "train":
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(saved))
prior.eval()
model.levels[0].prior = prior
from zonkey.core.evaluate.generation import TrainingText, _sample, text_row
from zonkey.core.evaluate.infill import infill_problems, run_infill, score_fills

corpus = load_corpus(model.recipe.data)
train = TrainingText.build(corpus.documents("train"), args.run)
out = {"tag": args.tag, "sets": args.sets, "over": over, "lr": args.lr, "steps": args.steps, "batch": args.batch, "train_s": round(train_s)}
for T in (30,):
    base = model.recipe
    texts, nb, sec = _sample(model, args.n, steps=T, seed=0)
    row = text_row(texts, train)
    out[f"T{T}"] = {k: round(row[k], 3) for k in ("valid_word_rate", "judge_bpb", "byte_entropy", "distinct_1")}
    out["ex"] = texts[0][:120]
if args.infill:
    problems = infill_problems(corpus.documents("heldout"), args.infill, 0)
    golds = [g for _, _, g in problems]
    base = model.recipe
    for gap in ((1, 1), (1, 4)):
        model.recipe = base.model_copy(update={"sample": base.sample.model_copy(update={"infill_gap": gap})})
        preds, cands = run_infill(model, [(p, s) for p, s, _ in problems], seed=0)
        sc = score_fills(preds, cands, golds)
        out[f"infill{gap[1]}"] = {"em": sc["exact_match"], "char": round(sc["char_acc"], 3), "em5": sc["em_at_k"]["5"]}
        model.recipe = base
print("RESULT " + json.dumps(out), flush=True)
