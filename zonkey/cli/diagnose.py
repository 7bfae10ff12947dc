"""``zonkey diagnose ...``: measurements that explain a trained run's metrics.

Thin wrappers of ``zonkey.diagnose``. A diagnostic is added as one command function here, registered on :data:`app` with
``@app.command("name")``; its library code is a module of ``zonkey.diagnose``. Every command takes
the run directory first, prints text (or ``--json``: one JSON document per result line), and turns
a ``DiagnosticError`` into a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from zonkey.cli import common

app = typer.Typer(
    name="diagnose",
    help="Diagnostics of a trained run: where its errors are and what limits a level.",
    no_args_is_help=True,
)

RunArg = Annotated[Path, typer.Argument(help="Run directory (or checkpoint directory).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]


class Split(str, Enum):
    """A split of the run's corpus."""

    heldout = "heldout"
    train = "train"


@contextmanager
def _errors() -> Iterator[None]:
    """The CLI's user errors, plus a diagnostic's own, as a message and exit code 1."""
    from zonkey.diagnose import DiagnosticError

    with common.user_errors():
        try:
            yield
        except DiagnosticError as exc:
            common.fail(str(exc))


@app.command("byte-errors")
def byte_errors_cmd(
    run: RunArg,
    batches: Annotated[int, typer.Option("--batches", min=1, help="Count on at most this many batches.")] = 8,
    raw: Annotated[bool, typer.Option("--raw", help="The raw weights instead of the EMA.")] = False,
    split: Annotated[Split, typer.Option("--split", help="Which split to count on.")] = Split.heldout,
    no_verify: common.NoVerify = False,
    as_json: JsonFlag = False,
    progress: common.Progress = None,
) -> None:
    """Where level 0's t = 0 reconstruction errors are: by byte class, slot and segment length.

    Decoded as `zonkey eval`'s recon_acc: each segment's own span, from its clean latent. Ends
    with the commonest confusions (target -> decoded).
    """
    with _errors():
        import torch

        from zonkey.data import load_corpus
        from zonkey.diagnose.byte_errors import byte_errors

        model = common.load_model(run, use_ema=not raw, verify=not no_verify)
        data = model.recipe.data
        with torch.no_grad(), common.progress_bar("byte-errors", progress) as cb:
            res = byte_errors(model, load_corpus(data).batches(split.value, seed=0, batch_bytes=data.batch_bytes),
                              max_batches=batches, progress=cb)
    if as_json:
        common.print_json({"run": str(run), "split": split.value, **res.as_dict()})
    else:
        common.print_text("\n".join(res.lines(str(run))))


@app.command("roundtrip-chunks")
def roundtrip_chunks_cmd(
    run: RunArg,
    eval_bytes: Annotated[int, typer.Option("--bytes", min=1, help="Held-out bytes to evaluate per length "
                                            "(whole batches).")] = 65536,
    lengths: Annotated[str, typer.Option("--lengths", help="Document lengths (max_doc_bytes) to chunk to, "
                                         "comma-separated.")] = "128,256,512",
    no_verify: common.NoVerify = False,
    as_json: JsonFlag = False,
) -> None:
    """The round trip (text -> level 1 -> bytes) on the same held-out text chunked to several lengths.

    The strict (same-offset) accuracy falls as documents get longer while the character accuracy
    does not. One line (or JSON object) per length, printed as it is measured.
    """
    try:
        ns = [int(x) for x in lengths.split(",")]
    except ValueError:
        common.fail(f"--lengths {lengths!r}: expected comma-separated integers, e.g. 128,256,512", common.EXIT_USAGE)
    with _errors():
        from zonkey.diagnose.roundtrip_chunks import roundtrip_chunks

        model = common.load_model(run, verify=not no_verify)
        for r in roundtrip_chunks(model, ns, eval_bytes=eval_bytes):
            if as_json:
                common.print_json(r.as_dict())
            else:
                common.print_text(r.line())


@app.command("probe-level1")
def probe_level1_cmd(
    run: RunArg,
    steps: Annotated[int, typer.Option("--steps", min=0, max=common.MAX_TRAIN_STEPS, help="Training steps of the fresh level 1.")] = 400,
    lr: Annotated[float, typer.Option("--lr", min=1e-12, max=10.0, help="AdamW learning rate (as train.lr: above 0, at most 10).")] = 2e-3,
    random: Annotated[bool, typer.Option("--random", help="Control: level-0 latents replaced by draws from 500 "
                                         "random unit vectors.")] = False,
    same_cos: Annotated[float | None, typer.Option("--same-cos", help="Treat candidates with cosine > C to the "
                                                      "target as false negatives (default: only exact copies).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, max=common.MAX_THREADS, help="CPU threads for torch.")] = 1,
    seed: common.Seed = 0,
    every: Annotated[int, typer.Option("--every", min=1, max=common.MAX_TRAIN_STEPS, help="Print a row every this many steps.")] = 50,
    overrides: Annotated[list[str] | None, typer.Option("--set", metavar="FIELD=VALUE", help="Override a field of "
                                                           "the level-1 block, e.g. n_compress=4 (repeatable).")] = None,
    only: Annotated[str | None, typer.Option("--only", metavar="TERMS", help="Comma-separated loss terms to keep "
                                                "(the others get weight 0), e.g. recon_clean,avg_bos.")] = None,
    no_verify: common.NoVerify = False,
    as_json: JsonFlag = False,
) -> None:
    """Train a fresh level 1 (the run's own level-1 block) on the run's frozen level-0 latents.

    Prints its contrastive reconstruction loss, top-1 retrieval accuracy and mean segment length
    every --every steps: how learnable level 0's latents are, against the --random control.
    """
    import torch

    torch.set_num_threads(threads)
    with _errors():
        from zonkey.diagnose.probe_level1 import HEADER, probe_block, probe_level1

        common.load_components()
        model = common.load_model(run, verify=not no_verify)
        block = probe_block(model, overrides or (), only.split(",") if only else None)
        rows = probe_level1(model, block, steps=steps, lr=lr, random=random, same_cos=same_cos, seed=seed,
                            every=every)
        if not as_json:
            common.print_text(HEADER)
        for row in rows:
            if as_json:
                common.print_json(row.as_dict())
            else:
                common.print_text(row.line())


@app.command("denoise")
def denoise_cmd(
    run: RunArg,
    level: Annotated[int | None, typer.Option("--level", help="Diagnose this level only (default: every level).")] = None,
    max_batches: Annotated[int, typer.Option("--max-batches", min=1, help="Held-out batches whose latents are "
                                             "swept (also the retrieval pool).")] = 2,
    steps: Annotated[int | None, typer.Option("--steps", callback=common.sampler_steps,
                                              help="Sampler steps from each σ back to 0 "
                                              "(default: the recipe's sample.level_steps).")] = None,
    sigmas: Annotated[str | None, typer.Option("--sigmas", help="Noise levels to sweep, comma-separated "
                                               "(default: 0,0.1,0.3,0.5,0.7,0.8,0.9,0.95,0.98,1).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=0, max=common.MAX_COUNT,
                                         help="Texts sampled from each level's prior alone "
                                         "and scored (valid words, judge bits/byte, byte entropy); 0 disables.")] = 100,
    sample_steps: Annotated[int | None, typer.Option("--sample-steps", callback=common.sampler_steps,
                                                     help="Denoising steps of those "
                                                     "samples (default: the recipe's sample.steps).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=common.MAX_SEED,
                                      help="Seed of the noise and of the samples.")] = 0,
    raw: Annotated[bool, typer.Option("--raw", help="The raw weights instead of the EMA.")] = False,
    no_verify: common.NoVerify = False,
    as_json: JsonFlag = False,
    progress: common.Progress = None,
) -> None:
    """Where each level's content is decided: real held-out latents noised to σ and denoised back.

    For every σ: the decoded text's character accuracy against the original and the re-compressed
    latent's top-1 retrieval of its own original among the held-out latents; then samples of the
    level's prior alone, scored beside real held-out text.
    """
    from zonkey.diagnose.denoise import SIGMAS

    try:
        sweep = SIGMAS if sigmas is None else tuple(float(x) for x in sigmas.split(","))
    except ValueError:
        common.fail(f"--sigmas {sigmas!r}: expected comma-separated numbers in [0, 1], e.g. 0.1,0.5,1",
                    common.EXIT_USAGE)
    with _errors():
        import torch

        from zonkey.data import load_corpus
        from zonkey.diagnose.denoise import check_levels, check_sigmas, denoise_sweep, prior_samples

        model = common.load_model(run, use_ema=not raw, verify=not no_verify)
        levels = check_levels(model, level)
        check_sigmas(sweep)
        corpus = load_corpus(model.recipe.data)
        batches = corpus.batches("heldout", seed=0, batch_bytes=model.recipe.data.batch_bytes)
        train = None
        if samples:
            from zonkey.core.evaluate.generation import TrainingText, run_directory

            train = TrainingText.build(corpus.documents("train"), run_directory(run))
        results = []
        for lvl in levels:
            with torch.no_grad(), common.progress_bar(f"denoise level {lvl}", progress) as cb:
                res = denoise_sweep(model, batches, lvl, sigmas=sweep, steps=steps, seed=seed,
                                    max_batches=max_batches, progress=cb)
            if train is not None:
                res.samples = prior_samples(model, lvl, samples, train, corpus.documents("heldout"), seed=seed,
                                            steps=sample_steps)
            results.append(res)
    if as_json:
        common.print_json({"run": str(run), "seed": seed, "levels": [r.as_dict() for r in results]})
    else:
        common.print_text("\n".join(line for r in results for line in r.lines()))
