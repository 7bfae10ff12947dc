"""``zonkey eval`` of an autoregressive baseline run: every metric that applies to a byte LM.

* ``bits_per_byte``: mean −log2 p(byte | the chunk's bytes before it) over the held-out chunks
  (each read from its start token; the end-of-document class keeps its share of the mass);
* ``samples``: texts drawn ancestrally from the start token (temperature 1, a key/value cache) until
  the end class or the chunk length, scored by :mod:`zonkey.core.evaluate.generation` beside the same
  ``real``, ``repeat`` and ``shuffled`` rows as the diffusion model's samples;
* ``infill`` (and ``infill_items``): the same held-out problems as :mod:`zonkey.core.evaluate.infill`,
  filled by **candidate rescoring**: the ``candidates`` most frequent training tokens are scored by
  log p(candidate + suffix | prefix). All of them are scored with the first ``window`` bytes of the
  suffix, the best ``shortlist`` again with the whole suffix; the ranking is the latter's, then the
  rest. A gold word outside the candidates cannot be matched (``gold_in_candidates`` says how often
  that happens).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zonkey.baselines.ar_model import BOS, END, ByteTransformer, shift_inputs
from zonkey.core.evaluate.generation import TrainingText, reference_texts, sample_metrics, text_row
from zonkey.core.evaluate.infill import SNAP, baselines, infill_problems, score_fills
from zonkey.core.evaluate.judge import DEFAULT_ORDER
from zonkey.core.evaluate.run import EvalSettings, eval_corpus
from zonkey.core.evaluate.words import token_counts
from zonkey.data import ByteBatches

DEFAULT_CANDIDATES = 2000
SHORTLIST = 50
WINDOW = 4


def _device(model: ByteTransformer) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def heldout_bits(model: ByteTransformer, batches: ByteBatches, *, max_batches: int | None = None) -> dict[str, float]:
    """Bits per byte of held-out chunks.

    Args:
        model: the byte transformer.
        batches: the held-out batches.
        max_batches: read at most this many.

    Returns:
        ``{bits_per_byte, eval_bytes}``.
    """
    model.eval()
    dev = _device(model)
    n = len(batches) if max_batches is None else min(len(batches), max_batches)
    total, count = 0.0, 0
    for i in range(n):
        b = batches.batch(i)
        inputs, targets = shift_inputs(b.tokens, b.valid)
        logp = torch.log_softmax(model(inputs.to(dev)).float(), dim=-1)
        t = targets.to(dev)
        real = t >= 0
        total += float(-logp[real].gather(1, t[real][:, None]).sum())
        count += int(real.sum())
    return {"bits_per_byte": total / max(count, 1) / math.log(2), "eval_bytes": count}


@torch.no_grad()
def generate(model: ByteTransformer, n: int, *, max_bytes: int | None = None, temperature: float = 1.0,
             seed: int = 0) -> list[bytes]:
    """``n`` texts drawn ancestrally from the start token, all rows at once through a key/value cache.

    Args:
        model: the byte transformer.
        n: texts.
        max_bytes: the longest text (default: what the model's context holds).
        temperature: softmax temperature (1: the model's own distribution).
        seed: seed of the draws.

    Returns:
        The texts' bytes (each ends where the end class was drawn, or at ``max_bytes``).

    Raises:
        ValueError: a temperature that is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    model.eval()
    dev = _device(model)
    limit = model.cfg.context - 1 if max_bytes is None else min(max_bytes, model.cfg.context - 1)
    gen = torch.Generator(device=dev).manual_seed(seed)
    cache = model.new_cache(n, capacity=limit + 1)
    tok = torch.full((n, 1), BOS, dtype=torch.long, device=dev)
    out = torch.zeros((n, limit), dtype=torch.long, device=dev)
    length = torch.full((n,), limit, dtype=torch.long, device=dev)
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    for t in range(limit):
        probs = torch.softmax(model(tok, cache)[:, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        ended = (nxt == END) & ~done
        length[ended] = t
        done |= ended
        out[:, t] = nxt.masked_fill(done, 0)
        if bool(done.all()):
            break
        tok = out[:, t:t + 1]
    return [bytes(out[i, :int(length[i])].tolist()) for i in range(n)]


@torch.no_grad()
def continuation_logprobs(model: ByteTransformer, prefix: bytes, conts: Sequence[bytes], *,
                          batch: int = 128) -> torch.Tensor:
    """The log-probability of every continuation given the start token and the prefix (read once).

    A continuation longer than half the context loses its last bytes, and the prefix its oldest
    ones when prefix and the longest continuation exceed the context.

    Args:
        model: the byte transformer.
        prefix: the text before.
        conts: the continuations (each at least one byte).
        batch: continuations scored together.

    Returns:
        (len(conts),) float32 sums of natural-log probabilities.
    """
    model.eval()
    dev = _device(model)
    half = max((model.cfg.context - 1) // 2, 1)
    conts = [c[:half] for c in conts]
    longest = max(len(c) for c in conts)
    keep = max(model.cfg.context - 1 - longest, 0)
    prefix = prefix[len(prefix) - keep:] if len(prefix) > keep else prefix
    cap = 1 + len(prefix) + longest
    head = model.new_cache(1, capacity=cap)
    first = torch.log_softmax(model(torch.tensor([[BOS, *prefix]], device=dev), head)[:, -1].float(), dim=-1)[0]
    out = torch.empty(len(conts))
    for i in range(0, len(conts), batch):
        part = conts[i:i + batch]
        width = max(len(c) for c in part)
        ids = torch.zeros((len(part), width), dtype=torch.long)
        valid = torch.zeros((len(part), width), dtype=torch.bool)
        for r, c in enumerate(part):
            ids[r, :len(c)] = torch.tensor(list(c))
            valid[r, :len(c)] = True
        ids, valid = ids.to(dev), valid.to(dev)
        score = first[ids[:, 0]]
        if width > 1:
            logp = torch.log_softmax(model(ids[:, :-1], head.expand(len(part))).float(), dim=-1)  # (B, w−1, 257)
            picked = logp.gather(2, ids[:, 1:, None]).squeeze(2)
            score = score + (picked * valid[:, 1:]).sum(1)
        out[i:i + len(part)] = score.cpu()
    return out


def rescore_infill(model: ByteTransformer, pairs: Sequence[tuple[str, str]], candidates: Sequence[str], *,
                   shortlist: int = SHORTLIST, window: int = WINDOW) -> tuple[list[str], list[list[str]]]:
    """Fill every (prefix, suffix) gap with the candidate the model finds likeliest.

    Args:
        model: the byte transformer.
        pairs: (prefix, suffix) of each problem.
        candidates: the fills to choose from (non-empty strings).
        shortlist: candidates rescored with the whole suffix.
        window: suffix bytes read in the first pass over all candidates.

    Returns:
        (the best fill of each pair, every pair's candidates best first).

    Raises:
        ValueError: no candidates.
    """
    cands = [c for c in candidates if c]
    if not cands:
        raise ValueError("no infill candidates (the training split has no tokens)")
    preds, ranked = [], []
    for prefix, suffix in pairs:
        pre, suf = prefix.encode("utf-8"), suffix.encode("utf-8")
        rough = continuation_logprobs(model, pre, [c.encode("utf-8") + suf[:window] for c in cands])
        order = torch.argsort(rough, descending=True, stable=True).tolist()
        top = order[:shortlist]
        fine = continuation_logprobs(model, pre, [cands[j].encode("utf-8") + suf for j in top])
        best = [top[j] for j in torch.argsort(fine, descending=True, stable=True).tolist()]
        ranked.append([cands[j] for j in best + order[shortlist:]])
        preds.append(ranked[-1][0])
    return preds, ranked


def _rescored(model: ByteTransformer, problems: Sequence[tuple[str, str, str]], counts: Counter[str],
              n_candidates: int, seed: int, key: str) -> dict[str, Any]:
    cands = [t for t, _ in counts.most_common(n_candidates)]
    preds, ranked = rescore_infill(model, [(p, s) for p, s, _ in problems], cands)
    golds = [g for _, _, g in problems]
    pool = set(cands)
    base = baselines(golds, counts, seed)
    out: dict[str, Any] = {"n": len(problems), "snap": SNAP, "method": "candidate rescoring",
                           "candidates": len(cands), "shortlist": SHORTLIST, "window": WINDOW,
                           "gold_in_candidates": sum(g in pool for g in golds) / max(len(golds), 1),
                           **score_fills(preds, ranked, golds), "baselines": base}
    if key == "infill":
        out.update({"baseline_word": base["unigram"]["fill"], "baseline_exact_match": base["unigram"]["exact_match"],
                    "baseline_byte_acc": base["unigram"]["byte_acc"],
                    "examples": [{"prefix": p, "suffix": s, "gold": g, "pred": q, "candidates": c[:5]}
                                 for (p, s, g), q, c in zip(problems[:5], preds, ranked, strict=False)]})
    else:
        out["items"] = [{"prefix": p, "suffix": s, "answer": g, "pred": q, "exact": q == g}
                        for (p, s, g), q in zip(problems, preds, strict=True)]
    return out


def evaluate_ar(model: ByteTransformer, heldout_batches: ByteBatches, train_docs: Sequence[bytes],
                heldout_docs: Sequence[bytes], *, samples: int = 200, infill: int = 500,
                candidates: int = DEFAULT_CANDIDATES, infill_items: Sequence[tuple[str, str, str]] | None = None,
                seed: int = 0, max_batches: int | None = None, judge_order: int = DEFAULT_ORDER,
                cache_dir: str | None = None) -> dict[str, Any]:
    """Every metric of the module docstring.

    Args:
        model: the byte transformer.
        heldout_batches: held-out batches (bits per byte).
        train_docs: the training documents (vocabulary, judge, candidates, baselines).
        heldout_docs: held-out documents (real rows, infill problems).
        samples: texts drawn (0: none).
        infill: held-out sentences infilled (0: none).
        candidates: the most frequent training tokens an infill chooses from.
        infill_items: the user's own (prefix, suffix, answer) items.
        seed: seed of the samples, references, problems and baselines.
        max_batches: held-out batches read for bits per byte at most.
        judge_order: the judge's n-gram order.
        cache_dir: where the judge is cached (the run directory).

    Returns:
        ``{kind: ar, bits_per_byte, eval_bytes, heldout_chunks}`` and the ``samples``, ``throughput``,
        ``infill`` and ``infill_items`` sections asked for.
    """
    res: dict[str, Any] = {"kind": "ar", **heldout_bits(model, heldout_batches, max_batches=max_batches),
                           "heldout_chunks": heldout_batches.num_chunks}
    train: TrainingText | None = None
    if samples:
        train = TrainingText.build(train_docs, cache_dir, judge_order=judge_order)
        t0 = time.perf_counter()
        raw = generate(model, samples, seed=seed)
        seconds = time.perf_counter() - t0
        texts = [r.decode("utf-8", errors="replace") for r in raw]
        nbytes = sum(len(r) for r in raw)
        speed = {"seconds": round(seconds, 4), "bytes": nbytes, "bytes_per_s": round(nbytes / max(seconds, 1e-9), 1)}
        refs = reference_texts(texts, heldout_docs, train, seed)
        rows = {"generated": text_row(texts, train), **{k: text_row(v, train) for k, v in refs.items()}}
        res["samples"] = {**sample_metrics(texts, heldout_docs, train.vocab), "snap": SNAP, "steps": None,
                          "rows": rows, **speed, "judge": {**train.judge.metadata(), "cached": train.judge_cached},
                          "examples": texts[:5]}
        res["throughput"] = {"n": samples, "steps": None, "snap": SNAP, "device": str(_device(model)),
                             "threads": torch.get_num_threads(), **speed}
    if infill or infill_items:
        counts = train.counts if train is not None else token_counts(train_docs)
        if infill:
            res["infill"] = _rescored(model, infill_problems(heldout_docs, infill, seed), counts, candidates, seed,
                                      "infill")
        if infill_items:
            res["infill_items"] = _rescored(model, list(infill_items), counts, candidates, seed, "infill_items")
    return res


def evaluate_ar_run(run: str | Path, settings: EvalSettings) -> dict[str, Any]:
    """Every metric ``zonkey eval`` reports for the autoregressive run in ``run``.

    Args:
        run: an autoregressive run or step directory.
        settings: what to compute (``steps``, ``steps_table``, ``ema`` and ``sample_sets`` do not
            apply to a byte LM).

    Returns:
        the result dict of ``zonkey eval --json`` for the run.

    Raises:
        CheckpointError: an unreadable run.
        NoiseSpecError: a noise spec that cannot be read.
    """
    from zonkey.baselines.ar_run import load_ar_model, run_dir_of

    s = settings
    model, cfg = load_ar_model(run, verify=s.verify)
    corpus, train_docs, info = eval_corpus(cfg.data, s)
    res = evaluate_ar(model, corpus.batches("heldout", seed=s.seed, batch_bytes=cfg.data.batch_bytes), train_docs,
                      corpus.documents("heldout"), samples=s.samples, infill=s.infill, candidates=s.candidates,
                      infill_items=s.infill_items, seed=s.seed, max_batches=s.max_batches,
                      judge_order=s.judge_order, cache_dir=str(run_dir_of(run)))
    if info is not None:
        res["noise"] = info
    res["checkpoint"] = str(run)
    return res
