"""``zonkey eval`` and ``zonkey split``: numbers and segmentations from a trained run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from zonkey.cli import common


def _load(ckpt: Path, use_ema: bool):  # noqa: ANN202
    from zonkey.core.model import ZonkeyModel

    return ZonkeyModel.from_run(ckpt, use_ema=use_ema)


def eval_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory).")],
    data: Annotated[Optional[str], typer.Option("--data", help="Evaluate on this source instead of the recipe's "
                                                  "held-out split ('wiki', a .txt/.jsonl/.parquet file or folder).")] = None,
    max_batches: Annotated[Optional[int], typer.Option("--max-batches", help="Evaluate at most this many batches.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Sampler steps when denoising from noise.")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Use the EMA weights.")] = True,
    samples: Annotated[int, typer.Option("--samples", min=0, help="Generate this many texts for the sample metrics "
                                         "(valid-word rate, length, distinct-n); 0 disables.")] = 200,
    infill: Annotated[int, typer.Option("--infill", min=0, help="Infill this many held-out sentences with one word "
                                        "removed (exact match, byte accuracy vs a baseline); 0 disables.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Held-out metrics: reconstruction (t=0 and from noise), segment statistics, boundary F1, and
    generation: samples (valid words, length, distinct-n) and infilling (exact match, byte accuracy)."""
    with common.user_errors():
        model = _load(ckpt, ema)
        from zonkey.core.evaluate import evaluate
        from zonkey.data import load_corpus

        dcfg = model.recipe.data
        if data is not None:
            dcfg = dcfg.model_copy(update={"source": data})
        corpus = load_corpus(dcfg)
        res = evaluate(model, corpus, batch_bytes=dcfg.batch_bytes, seed=seed, max_batches=max_batches, steps=steps)
        if samples or infill:
            from zonkey.core.gen_eval import evaluate_generation

            # the vocabulary and the baseline word come from the model's own training split
            train_docs = (corpus if data is None else load_corpus(model.recipe.data)).documents("train")
            res.update(evaluate_generation(model, train_docs, corpus.documents("heldout"), samples=samples,
                                           infill=infill, seed=seed))
    res["checkpoint"] = str(ckpt)
    if as_json:
        common.print_json(res)
        return
    b = res["boundary"]
    lines = [
        f"held-out bytes evaluated   {res['eval_bytes']}",
        f"recon_acc (t=0)            {res['recon_acc']:.4f}",
        "recon_acc from noise       " + "  ".join(f"σ={k}: {v:.4f}" for k, v in res["recon_acc_noise"].items()),
        f"mean segment bytes (cv)    {res['mean_segment_bytes']:.2f} ({res['segment_cv']:.3f})",
        f"BOS entropy (nats)         {res['bos_entropy']:.4f}",
    ] + [f"boundary {k:<10}        P={v['p']:.3f} R={v['r']:.3f} F1={v['f1']:.3f}" for k, v in b.items()] + [
        f"boundary_f1                {res['boundary_f1']:.4f}",
        f"decoded length accuracy    {res['length_acc']:.4f}",
        f"level-0 round trip         char {res['roundtrip0_char_acc']:.4f}  strict {res['roundtrip0_acc']:.4f}  "
        f"aligned {res['roundtrip0_acc_aligned']:.4f}"]
    if "l1_sentence_f1" in res:
        lines += [f"level-1 sentence F1        {res['l1_sentence_f1']:.4f}",
                  f"level-1 recon (top-1)      {res['l1_recon_acc']:.4f}",
                  f"level-1 length accuracy    {res['l1_length_acc']:.4f}",
                  f"round trip byte accuracy   char {res['roundtrip_char_acc']:.4f}  strict {res['roundtrip_acc']:.4f}  "
                  f"aligned {res['roundtrip_acc_aligned']:.4f}"]
    lines += _generation_lines(res)
    common.print_text("\n".join(lines))


def _generation_lines(res: dict) -> list[str]:
    """Text rows of the sample and infill metrics, each next to its reference row."""
    def row(label: str, a: str, b: str) -> str:
        return f"{label:<27}{a:<12}{b}"

    lines = []
    if "samples" in res:
        s = res["samples"]
        lines += [row(f"samples (n={s['n']})", "generated", "real held-out"),
                  row("  valid-word rate", f"{s['valid_word_rate']:.4f}", f"{s['real_valid_word_rate']:.4f}"),
                  row("  mean bytes", f"{s['mean_bytes']:.1f}", f"{s['real_mean_bytes']:.1f}"),
                  row("  distinct-1", f"{s['distinct_1']:.4f}", f"{s['real_distinct_1']:.4f}"),
                  row("  distinct-2", f"{s['distinct_2']:.4f}", f"{s['real_distinct_2']:.4f}")]
    if "infill" in res:
        f = res["infill"]
        lines += [row(f"infill (n={f['n']})", "model", f"baseline ({f['baseline_word']!r})"),
                  row("  exact match", f"{f['exact_match']:.4f}", f"{f['baseline_exact_match']:.4f}"),
                  row("  byte accuracy", f"{f['byte_acc']:.4f}", f"{f['baseline_byte_acc']:.4f}")]
    return lines


def split_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory).")],
    text: Annotated[Optional[list[str]], typer.Argument(help="Text(s) to split.")] = None,
    input_file: Annotated[Optional[Path], typer.Option("--input", "-i", help="One text per line ('-' for stdin).")] = None,
    ema: Annotated[bool, typer.Option("--ema/--no-ema")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per input, in input order.")] = False,
) -> None:
    """Show how the learned splitter segments each text (segments and p_bos per UTF-8 byte)."""
    texts = list(text or [])
    if input_file is not None:
        try:
            raw = sys.stdin.buffer.read() if str(input_file) == "-" else input_file.read_bytes()
        except OSError as exc:
            common.fail(f"{input_file}: {exc.strerror or exc}", common.EXIT_USAGE)
        try:
            content = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            common.fail(f"{input_file}: not valid UTF-8 at byte {exc.start} (line {line})")
        texts += [ln for ln in content.splitlines() if ln.strip()]
    if not texts:
        common.fail("nothing to split: give TEXT arguments or --input FILE", common.EXIT_USAGE)
    for i, t in enumerate(texts):
        if not t:
            common.fail(f"text {i} is empty")
    with common.user_errors():
        model = _load(ckpt, ema)
        results = model.split(texts)
    for r in results:
        if as_json:
            row = {"text": r["text"], "segments": r["segments"], "p_bos": r["p_bos"]}
            if "levels" in r:
                row["levels"] = r["levels"]
            print(json.dumps(row, ensure_ascii=False))
        else:
            for lvl, groups in enumerate([lv["segments"] for lv in r.get("levels", [{"segments": r["segments"]}])]):
                common.print_text(f"L{lvl}: " + " | ".join(groups))


def reconstruct_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory).")],
    text: Annotated[list[str], typer.Argument(help="Text(s) to reconstruct.")],
    sigma: Annotated[float, typer.Option("--sigma", help="Noise the latents to this level first (0 = clean).")] = 0.0,
    steps: Annotated[int, typer.Option("--steps", help="Sampler steps back from --sigma.")] = 4,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ema: Annotated[bool, typer.Option("--ema/--no-ema")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Round trip text -> latents -> text and print both."""
    for i, t in enumerate(text):
        if not t:
            common.fail(f"text {i} is empty")
    with common.user_errors():
        model = _load(ckpt, ema)
        outs = model.reconstruct(text, sigma=sigma, steps=steps, seed=seed)
    for t, o in zip(text, outs):
        if as_json:
            print(json.dumps({"text": t, "reconstruction": o, "sigma": sigma}, ensure_ascii=False))
        else:
            common.print_text(f"in : {t}\nout: {o}")

