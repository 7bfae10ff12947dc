"""``zonkey baseline``: the autoregressive byte baseline (train, sample), and its ``zonkey eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from zonkey.cli import common
from zonkey.core.recipe.sections import MAX_TRAIN_STEPS  # the recipe's train.steps limit

#: the most seconds a flag accepts (past them a run would not end)
MAX_SECONDS = 10.0**8

app = typer.Typer(help="Baselines trained on the same data as a recipe, evaluated by the same `zonkey eval`.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


@app.command("ar")
def ar_cmd(
    recipe: Annotated[str, typer.Argument(help="The recipe whose data, batches, optimiser and steps it shares.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<recipe>-ar).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, max=MAX_TRAIN_STEPS, help="Train this many steps (default: the "
                                              "recipe's train.steps).")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", min=1, max=MAX_SECONDS, help="Stop after this many seconds of "
                                                  "training (a time budget; the steps still cap it).")] = None,
    d_model: Annotated[int, typer.Option("--d-model", min=8, max=8192, help="Width.")] = 128,
    layers: Annotated[int, typer.Option("--layers", min=1, max=256, help="Transformer blocks.")] = 4,
    heads: Annotated[int, typer.Option("--heads", min=1, max=256, help="Attention heads.")] = 4,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE",
                                                        help="Override a value of the recipe (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train a small causal byte transformer on RECIPE's data; `zonkey eval RUN` scores it."""
    common.load_components()
    from pydantic import ValidationError

    from zonkey.baselines.ar_model import ARConfig

    try:
        size = ARConfig(d_model=d_model, layers=layers, heads=heads)
    except ValidationError as exc:
        common.fail(f"--d-model/--heads: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", common.EXIT_USAGE)
    with common.user_errors():
        rec = common.load_recipe_arg(recipe, overrides)
        from zonkey.baselines.ar_run import ARRun, train_ar

        run = ARRun.from_recipe(rec, model=size, steps=steps, seconds=seconds)
        result = train_ar(run, out if out is not None else Path("runs") / run.name, resume=resume)
    summary = {"run_dir": str(result.run_dir), "step": result.step, "last_loss": result.last_loss,
               "seconds": round(result.seconds, 1), "bytes_per_s": round(result.bytes_per_s, 1),
               "finished": result.finished}
    if as_json:
        common.print_json(summary)
    else:
        common.print_text(f"trained {summary['step']} steps in {summary['seconds']} s "
                          f"({summary['bytes_per_s']:.0f} bytes/s); run: {summary['run_dir']}")


@app.command("sample")
def sample_cmd(
    run: Annotated[Path, typer.Argument(help="An autoregressive baseline run.")],
    n: Annotated[int, typer.Option("-n", min=1, max=common.MAX_COUNT, help="Texts to draw.")] = 8,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", min=1, max=common.MAX_COUNT,
                                                  help="Longest text (default: the model's context).")] = None,
    temperature: Annotated[float, typer.Option("--temperature", min=0.01, max=100.0,
                                               help="Softmax temperature.")] = 1.0,
    seed: common.Seed = 0,
    no_verify: common.NoVerify = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per text.")] = False,
) -> None:
    """Draw texts from the baseline, byte by byte (a key/value cache keeps it linear)."""
    import json

    with common.user_errors():
        from zonkey.baselines.ar_eval import generate
        from zonkey.baselines.ar_run import load_ar_model

        model, _ = load_ar_model(run, verify=not no_verify)
        texts = [t.decode("utf-8", errors="replace") for t in generate(model, n, max_bytes=max_bytes,
                                                                         temperature=temperature, seed=seed)]
    for t in texts:
        common.print_text(json.dumps({"text": t}, ensure_ascii=False) if as_json else t)


def ar_eval_lines(res: dict[str, Any]) -> list[str]:
    """Text rows of an autoregressive run's ``zonkey eval``."""
    from zonkey.cli.gen_report import generation_lines

    lines = [f"autoregressive byte baseline; held-out bytes evaluated {res['eval_bytes']}"]
    if "noise" in res:
        n = res["noise"]
        lines.append(f"noise                      {n['spec']}: {n['edits']} edits in {n['chars']} characters")
    lines.append(f"bits per byte (held-out)   {res['bits_per_byte']:.4f}")
    shown = dict(res)
    if "samples" in res:  # the tables print T; an autoregressive sampler has no steps
        shown["samples"] = {**res["samples"], "steps": "byte by byte"}
    if "throughput" in res:
        shown["throughput"] = {**res["throughput"], "steps": "byte by byte"}
    lines += generation_lines(shown)
    if "infill" in res:
        f = res["infill"]
        lines.append(f"  infill by rescoring the {f['candidates']} most frequent training tokens; the gold is "
                     f"among them in {f['gold_in_candidates']:.3f} of the problems")
    return lines
