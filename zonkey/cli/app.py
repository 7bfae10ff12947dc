"""The ``zonkey`` command line: one Typer app, thin commands (parse, validate, call the library).

Commands: ``components``, ``recipes``, ``show``, ``validate``. A command defined in another module
is added here by importing its function and registering it, which keeps the command list in one
place::

    from zonkey.cli.train import train
    app.command("train")(train)

Output rules: ``--json`` prints pure JSON on stdout (nothing else goes to stdout); messages,
warnings and errors go to stderr. A user error (bad recipe, unknown component, missing file)
prints a short message and exits with 1 (invalid input) or 2 (usage), never a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from zonkey.cli import common
from zonkey.core.recipe import RecipeError, recipe_to_dict, recipe_to_yaml
from zonkey.version import __version__

app = typer.Typer(
    name="zonkey",
    help="Zonkey: a hierarchical diffusion language model with a learned tokenizer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    cls=common.OneLineErrors,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a recipe value, e.g. model.levels.0.d_model=128 "
                 "(repeatable)."),
]


def _version(value: bool) -> None:
    if value:
        common.print_text(f"zonkey {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    threads: Annotated[
        int, typer.Option("--threads", min=0, max=common.MAX_THREADS, envvar="ZONKEY_THREADS",
                          help="CPU threads for torch (0: torch's default). On a shared machine 1 is often "
                               "much faster than oversubscribing the cores. `train` prefers train.threads when it is set.")
    ] = 0,
) -> None:
    """Zonkey: a hierarchical diffusion language model with a learned tokenizer."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@app.command()
def components(
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind (attention, splitter, ...).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List the registered components of every kind, with their config fields."""
    common.load_components()
    try:
        table = common.describe_components(kind)
    except common.RegistryError as exc:
        common.fail(str(exc), common.EXIT_USAGE)
    if as_json:
        common.print_json(table)
        return
    out = common.stdout()
    for k, entries in table.items():
        if not entries:
            out.print(f"[bold]{k}[/bold]: (no components registered)")
            continue
        t = Table(title=k, title_justify="left", show_lines=True)
        t.add_column("name", style="bold cyan", no_wrap=True)
        t.add_column("description")
        t.add_column("fields")
        for name, info in entries.items():
            t.add_row(escape(name), escape(info["doc"]), _fields_markup(info["fields"]))
        out.print(t)


def _fields_markup(fields: dict[str, dict[str, Any]]) -> str:
    """One line per field (``name: type = default``), its description dimmed below it."""
    if not fields:
        return "-"
    lines = []
    for fname, f in fields.items():
        default = "(required)" if f["required"] else f"= {f['default']!r}"
        lines.append(escape(f"{fname}: {f['type']} {default}"))
        if f["description"]:
            lines.append(f"[dim]  {escape(f['description'])}[/dim]")
    return "\n".join(lines)


@app.command()
def recipes(as_json: JsonFlag = False) -> None:
    """List the bundled recipes, with their description and whether each validates."""
    common.load_components()
    table = common.describe_recipes()
    if as_json:
        common.print_json(table)
        return
    if not table:
        common.warn(f"no recipes under {common.bundled_recipes_dir()}")
        return
    t = Table(title=f"recipes in {common.bundled_recipes_dir()}", title_justify="left")
    t.add_column("recipe", style="bold cyan", no_wrap=True)
    t.add_column("valid", no_wrap=True)
    t.add_column("description")
    for key, info in table.items():
        valid = "[green]ok[/green]" if info["valid"] else "[red]invalid[/red]"
        desc = escape(info["description"])
        if info["error"]:
            desc += f"\n[red]{escape(info['error'].splitlines()[0])}[/red]"
        t.add_row(escape(key), valid, desc)
    common.stdout().print(t)


@app.command()
def show(
    recipe: Annotated[str, typer.Argument(help="A recipe file or a bundled recipe name (e.g. tiny).")],
    overrides: Overrides = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a recipe resolved and validated, every default filled in (YAML, or JSON)."""
    common.load_components()
    with common.user_errors():
        resolved = common.load_recipe_arg(recipe, overrides)
    if as_json:
        common.print_json(recipe_to_dict(resolved))
    else:
        common.print_text(recipe_to_yaml(resolved))


@app.command()
def validate(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files or bundled recipe names.")],
    overrides: Overrides = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate recipes: `ok PATH` for each valid one, the errors of the others on stderr.

    Exits with 1 if any recipe is invalid, 2 if any is missing, else 0.
    """
    common.load_components()
    code = 0
    for arg in recipes:
        result: dict[str, Any] = {"recipe": arg, "path": None, "valid": False, "errors": []}
        try:
            path = common.recipe_path(arg)
            result["path"] = str(path)
            common.load_recipe_arg(arg, overrides)
            result["valid"] = True
        except FileNotFoundError as exc:
            result["errors"] = [str(exc)]
            code = max(code, common.EXIT_USAGE)
        except (RecipeError, common.RegistryError) as exc:
            result["errors"] = str(exc).splitlines()
            code = max(code, common.EXIT_INVALID)
        if as_json:
            common.print_json(result)
        elif result["valid"]:
            common.print_text(f"ok {result['path']}")
        else:
            common.error("\n".join(result["errors"]))
    if code:
        raise typer.Exit(code)


from zonkey.cli.evaluate import eval_cmd as _eval
from zonkey.cli.evaluate import reconstruct_cmd as _reconstruct
from zonkey.cli.evaluate import split_cmd as _split
from zonkey.cli.generate import infill_cmd as _infill
from zonkey.cli.generate import sample_cmd as _sample
from zonkey.cli.train import train as _train

app.command("train")(_train)
app.command("eval")(_eval)
app.command("split")(_split)
app.command("reconstruct")(_reconstruct)
app.command("sample")(_sample)
app.command("infill")(_infill)

from zonkey.cli.curves import curves_cmd as _curves

app.command("curves")(_curves)

from zonkey.cli.diagnose import app as _diagnose

app.add_typer(_diagnose, name="diagnose")

from zonkey.cli.baseline import app as _baseline

app.add_typer(_baseline, name="baseline")

from zonkey.cli.ablate import ablate_cmd as _ablate

app.command("ablate")(_ablate)

from zonkey.cli.plot import plot_cmd as _plot

app.command("plot")(_plot)

from zonkey.cli.hub import push_cmd as _push

app.command("push")(_push)


def main() -> None:
    """Entry point of the ``zonkey`` console script and of ``python -m zonkey``."""
    app(prog_name="zonkey")
