"""``zonkey push``: upload a run's recipe, newest weights and a model card to the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zonkey.cli import common


def push_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    repo: Annotated[str, typer.Argument(help="Hub model repository, org/name (created if missing).")],
    eval_file: Annotated[Path | None, typer.Option("--eval", help="Evaluation for the model card, the output of "
                                                   "`zonkey eval RUN --json` (default: RUN/eval.json if present).")] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to commit to (default: main).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
) -> None:
    """Upload RUN to the hub: recipe.json, the newest weights with their state.json, and a README.md model card.

    Load it back with ``zonkey.load("hf://org/name")`` or ``zonkey sample hf://org/name``. Needs the
    hub extra (pip install "zonkey[hub]") and a login (huggingface-cli login, or HF_TOKEN).
    """
    from zonkey.hub import push

    with common.user_errors():
        url = push(run, repo, private=private, revision=revision, eval_file=eval_file, message=message)
    common.print_text(url)
