"""``zonkey train``: train a recipe into a run directory (a thin wrapper of zonkey.core.train.trainer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from zonkey.cli import common


def train(
    recipe: Annotated[str, typer.Argument(help="Recipe file or bundled name (e.g. tiny).")],
    overrides: Annotated[list[str] | None, typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/<recipe name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its newest checkpoint.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Start over: delete the run files in --out (recipe.json, "
                                          "metrics.jsonl, checkpoints, weights) first; other files stay.")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).")] = None,
    no_verify: common.NoVerify = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Train RECIPE; checkpoints, recipe.json and metrics.jsonl go to the run directory."""
    common.load_components()
    with common.user_errors():
        rec = common.load_recipe_arg(recipe, overrides)
        from zonkey.core.train.trainer import train as run_training

        if resume and restart:
            common.fail("--resume and --restart exclude each other: continue the run, or start it over", common.EXIT_USAGE)
        run_dir = out if out is not None else Path("runs") / rec.name
        result = run_training(rec, run_dir, resume=resume, progress=progress, verify=not no_verify, restart=restart)
    if os.environ.get("RANK", "0") not in ("", "0"):  # under torchrun only rank 0 reports
        return
    summary = {"run_dir": str(result.run_dir), "step": result.step, "last_loss": result.last_loss,
               "skipped_steps": result.skipped_steps, "seconds": round(result.seconds, 1),
               "bytes_per_s": round(result.metrics["bytes_per_s"], 1), "interrupted": result.interrupted}
    if as_json:
        common.print_json(summary)
    else:
        common.print_text(f"trained {summary['step']} steps in {summary['seconds']} s "
                          f"({summary['bytes_per_s']:.0f} bytes/s); run: {summary['run_dir']}")
        common.print_text(json.dumps(summary))
    if result.interrupted is not None:  # saved, but not finished: the exit code a signal gives
        raise typer.Exit(128 + result.interrupted)
