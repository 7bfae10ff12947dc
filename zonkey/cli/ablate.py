"""``zonkey ablate``: train a grid of recipe variants over seeds, evaluate each, tabulate them."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from zonkey.cli import common


def ablate_cmd(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name (e.g. ablations/splitter); its "
                                          "`ablation:` block gives the grid unless --swap does.")],
    swap: Annotated[list[str] | None, typer.Option("--swap", metavar="KEY=V1,V2", help="Values to swap in at a "
                                                   "recipe key, e.g. model.levels.0.splitter=learned,fixed,entropy "
                                                   "(repeatable: the grid is their product).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, max=common.MAX_TRAIN_STEPS, help="train.steps of every run.")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, max=1000, help="Seeds per variant (default 3).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=256, help="Runs trained at once (worker processes).")] = 1,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Grid folder (default: runs/ablate-<name>).")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE",
                                                        help="Override a value of every run (repeatable).")] = None,
    baseline: Annotated[list[str] | None, typer.Option("--baseline", help="Also train and evaluate a baseline "
                                                       "at the same budget: ar.")] = None,
    max_batches: Annotated[int | None, typer.Option("--max-batches", min=1, max=common.MAX_COUNT, help="Held-out batches evaluated.")] = None,
    samples: Annotated[int | None, typer.Option("--samples", min=0, max=common.MAX_COUNT, help="Samples generated per run.")] = None,
    infill: Annotated[int | None, typer.Option("--infill", min=0, max=common.MAX_COUNT, help="Infill problems per run.")] = None,
    steps_table: Annotated[bool | None, typer.Option("--steps-table/--no-steps-table",
                                                     help="Also score samples at T = 5, 10, 30, 100.")] = None,
    noise: Annotated[str | None, typer.Option("--noise", metavar="typos=RATE", help="Also evaluate on noisy "
                                              "held-out text (metrics prefixed noisy.).")] = None,
    threads: Annotated[int, typer.Option("--run-threads", min=1, max=common.MAX_THREADS, help="Torch threads of each run.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print ablation.json's content.")] = False,
    progress: common.Progress = None,
) -> None:
    """Train every variant of RECIPE over seeds, evaluate each, write ablation.md and ablation.json.

    Finished runs are skipped and interrupted ones resumed, so the same command continues a grid.
    """
    common.load_components()
    evals: dict[str, Any] = {k: v for k, v in {"max_batches": max_batches, "samples": samples, "infill": infill,
                                               "steps_table": steps_table, "noise": noise}.items() if v is not None}
    if noise is not None:
        from zonkey.data.noise import NoiseSpecError, parse_noise

        try:
            parse_noise(noise)
        except NoiseSpecError as exc:
            common.fail(str(exc), common.EXIT_USAGE)
    from zonkey.ablate.grid import GridError, load_grid

    with common.user_errors():
        try:
            grid = load_grid(common.recipe_path(recipe), swaps=swap, seeds=seeds, steps=steps, baselines=baseline,
                             eval_updates=evals, extra=overrides, out=out)
        except GridError as exc:
            common.fail(str(exc), common.EXIT_USAGE)
    from zonkey.ablate.report import write_report
    from zonkey.ablate.runner import run_grid

    n = len(grid.variants) * len(grid.seeds)
    common.stderr().print(f"ablation of {grid.recipe.name}: {len(grid.variants)} variant(s) × {len(grid.seeds)} "
                          f"seed(s) = {n} run(s) in {grid.out}")
    given: list[tuple[str, Any]] = [("--swap", s) for s in swap or []] + [("--set", s) for s in overrides or []]
    given += [("--baseline", b) for b in baseline or []]
    given += [(flag, v) for flag, v in (("--steps", steps), ("--seeds", seeds), ("--max-batches", max_batches),
                                          ("--samples", samples), ("--infill", infill), ("--noise", noise),
                                          ("--out", out)) if v is not None]
    if steps_table is not None:
        given.append(("--steps-table" if steps_table else "--no-steps-table", None))
    command = " ".join(["zonkey ablate", shlex.quote(recipe)] +
                       [flag if v is None else f"{flag} {shlex.quote(str(v))}" for flag, v in given])

    finished = [0]

    from zonkey.core.checkpoint.runlock import RunLock

    with common.user_errors(), RunLock(grid.out, "zonkey ablate"), \
            common.progress_bar("ablate (runs)", progress) as bar:  # one ablate per folder at a time
        if bar is not None:
            bar(0, n)

        def report(r: dict[str, Any]) -> None:
            common.stderr().print(f"{r.get('status')}: {r.get('variant')} seed {r.get('seed')} ({r.get('run_dir')})"
                                  + (f": {r['error']}" if r.get("error") else ""), markup=False)
            finished[0] += 1
            if bar is not None:
                bar(finished[0], n)

        results = run_grid(grid, jobs=jobs, threads=threads, on_result=report)
        j, md = write_report(grid, results, command)
    failed = [r for r in results if r.get("status") == "failed"]
    if as_json:
        common.print_json(__import__("json").loads(j.read_text(encoding="utf-8")))
    else:
        common.print_text(md.read_text(encoding="utf-8"))
        common.print_text(f"written: {md} and {j}")
    if failed:
        common.fail(f"{len(failed)} of {n} run(s) failed (see {j}); run the same command again to retry them")
