"""Helpers shared by the CLI commands.

Output (pure JSON on stdout, readable errors on stderr), recipe loading with overrides, and the
plain-data views the listing commands print.

Every function here returns data or prints; none of them trains, samples or touches tensors.
Commands stay thin: parse arguments, call one of these (or a library function), print.
"""

from __future__ import annotations

import errno
import importlib
import json
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from zonkey.core.contracts.registry import ALL_KINDS, RegistryError, load_plugins, registry
from zonkey.core.recipe import (
    Recipe,
    RecipeError,
    bundled_recipes_dir,
    load_recipe,
    read_yaml,
    resolve_recipe_path,
)
from zonkey.core.recipe import sections as recipe_sections
from zonkey.errors import ZonkeyError
from zonkey.inputs import InputError, check_text

#: exit code of a recipe or component error (the input was read but is wrong)
EXIT_INVALID = 1
#: exit code of a usage error (missing file, unknown kind): the same code click uses
EXIT_USAGE = 2


def stdout() -> Console:
    """A rich console on the current ``sys.stdout``."""
    # created per call: CliRunner and pytest swap sys.stdout between invocations
    return Console(file=sys.stdout, soft_wrap=True, highlight=False)


def stderr() -> Console:
    """A rich console on the current ``sys.stderr``."""
    return Console(file=sys.stderr, soft_wrap=True, highlight=False)


def print_json(obj: Any) -> None:
    """Print one JSON document on stdout, nothing else (no colour, no wrapping)."""
    sys.stdout.write(json.dumps(obj, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    """Print text verbatim on stdout (no rich markup: YAML may contain ``[...]``)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A warning on stderr, one line per line of ``message``."""
    stderr().print(f"[yellow]warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    """An error on stderr. Multi-line messages (one recipe error per line) stay as they are."""
    stderr().print(f"[bold red]error:[/bold red] {escape(message)}")


def fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    """Print ``message`` as an error and leave with ``code`` (never a traceback)."""
    error(message)
    raise typer.Exit(code)


#: the largest seed every generator takes (torch's, numpy's, Python's)
MAX_SEED = 2**63 - 1
#: ``--seed``: where a command's random draws start
Seed = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of the random draws.")]
#: the most CPU threads ``--threads`` accepts
MAX_THREADS = 1024
#: the most sampler steps a ``--steps`` accepts: the recipe's limit (``sample.steps``)
MAX_STEPS = recipe_sections.MAX_SAMPLE_STEPS
#: the most training steps a flag accepts: the recipe's limit (``train.steps``)
MAX_TRAIN_STEPS = recipe_sections.MAX_TRAIN_STEPS


def sampler_steps(value: int | None) -> int | None:
    """Callback of the ``--steps`` flags of samplers: the recipe's own check of ``sample.steps``.

    So that ``--steps 10000000`` and ``--set sample.steps=10000000`` give the same message.
    """
    if value is None:
        return value
    try:
        return recipe_sections.check_sample_steps("", value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


#: the most texts, items or segments a count flag (``--samples``, ``--segments`` ...) accepts
MAX_COUNT = 1_000_000

#: ``--no-verify``, on every command that loads a run
SampleSets = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="sample.KEY=VALUE",
    help="Override a generation setting of the run's recipe (repeatable; only sample.* keys, e.g. "
    "sample.eta=1).")]
NoVerify = Annotated[bool, typer.Option("--no-verify", help="Load the checkpoint without checking its files "
                                        "against the SHA-256 recorded in state.json.")]

def _click(part: str) -> Any:
    """A module of the click that typer runs on: its own copy (newer typer) or the click package."""
    try:
        return importlib.import_module(f"typer._click.{part}")
    except ImportError:
        return importlib.import_module(f"click.{part}")


# how torch's CPU allocator, CUDA and Python say that memory ran out
_NO_MEMORY = re.compile(r"can't allocate memory|cannot allocate memory|out of memory|not enough memory", re.I)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports exhausted memory (``MemoryError``, or torch's allocator failing)."""
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and bool(_NO_MEMORY.search(str(exc))))


def out_of_memory_message(exc: BaseException, where: str | None = None) -> str:
    """One line for an exhausted memory: the command, the size asked for when known, what to try.

    Args:
        exc: the error.
        where: the command (default: the one running, from click's context).
    """
    if where is None:
        ctx = _click("globals").get_current_context(silent=True)
        where = ctx.command_path if ctx is not None else "zonkey"
    m = re.search(r"allocate (\d+) bytes", str(exc))
    asked = f" ({int(m.group(1)) / 2**30:.1f} GiB asked for)" if m else ""
    return (f"{where}: out of memory{asked}; try shorter or fewer texts, a smaller -n or --segments, "
            "or fewer batches")


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause into a message and an exit code instead of a traceback.

    Recipe errors (bad YAML, failed validation, bad override), registry errors (unknown
    component), a file that cannot be read or written and exhausted memory exit with
    :data:`EXIT_INVALID`; a missing file exits with :data:`EXIT_USAGE`.
    """
    try:
        yield
    except ZonkeyError as exc:  # data, recipe, registry, checkpoint, training, ...
        fail(str(exc), EXIT_INVALID)
    except FileNotFoundError as exc:
        fail(f"{exc.filename}: no such file" if exc.filename else str(exc), EXIT_USAGE)
    except OSError as exc:  # a folder where a file should be, no permission, a full disk
        if exc.errno == errno.ENOMEM:
            fail(out_of_memory_message(exc), EXIT_INVALID)
        fail(f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else " ".join(str(exc).split()),
             EXIT_INVALID)
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        fail(out_of_memory_message(exc), EXIT_INVALID)


class OneLineErrors(TyperGroup):
    """The root command group: a usage error is one line on stderr, like every other error.

    click prints a usage error as the usage, a hint and a boxed message; here it becomes
    ``error: zonkey sample: Invalid value for '-n': ... (see 'zonkey sample --help')`` with the same
    exit code (2). Exhausted memory in any command, where the command itself did not catch it, ends
    the same way with exit code 1.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the command line; in standalone mode leave through ``sys.exit`` (as click does)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        exceptions = _click("exceptions")
        bad = _bad_argument(sys.argv[1:] if args is None else args)
        if bad is not None:
            error(bad)
            sys.exit(EXIT_USAGE)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except exceptions.NoArgsIsHelpError as exc:  # the help is printed already
            sys.exit(exc.exit_code)
        except exceptions.ClickException as exc:
            error(usage_line(exc))
            sys.exit(exc.exit_code)
        except (getattr(exceptions, "Abort", typer.Abort), typer.Abort):
            error("aborted")
            sys.exit(EXIT_INVALID)
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            error(out_of_memory_message(exc, _command_path(prog_name, args)))
            sys.exit(EXIT_INVALID)
        sys.exit(rv if isinstance(rv, int) else 0)


def _bad_argument(args: Sequence[str]) -> str | None:
    """The message for the first command-line argument that is not valid text, or None.

    Bytes that are not UTF-8 reach Python as lone surrogates (``surrogateescape``); they would
    fail much later, in the UTF-8 encoder of whatever writes them.
    """
    for i, a in enumerate(args, 1):
        try:
            check_text(str(a), f"zonkey: argument {i}")
        except InputError as exc:
            return str(exc)
    return None


def _command_path(prog_name: str | None, args: Sequence[str] | None) -> str:
    """``zonkey sample``: the program and the command words of ``args`` (options and values left out)."""
    words = [prog_name or "zonkey"]
    for a in list(sys.argv[1:] if args is None else args)[:2]:
        if a.startswith("-"):
            break
        words.append(a)
    return " ".join(words[:2])


def usage_line(exc: Any) -> str:
    """A click error's message on one line, after the command it concerns, with a pointer to its help.

    Args:
        exc: a ``ClickException`` (a usage error carries the context of its command).

    Returns:
        The line, without the ``error:`` prefix.
    """
    msg = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return msg
    return f"{ctx.command_path}: {msg} (see '{ctx.command_path} --help')"


def load_components() -> None:
    """Register built-in and third-party components; report plugins that failed on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, once, in our own words
        report = load_plugins()
    for name, msg in report.failed.items():
        warn(f"plugin {name!r} failed to load: {msg}")


def recipe_path(name_or_path: str) -> Path:
    """The file of a recipe argument (a path or a bundled name such as ``tiny``).

    Raises:
        FileNotFoundError: neither a file nor a bundled recipe; the message lists bundled names.
    """
    path = resolve_recipe_path(name_or_path)
    if not path.is_file():
        names = ", ".join(bundled_recipe_names()) or "(none)"
        raise FileNotFoundError(f"{name_or_path}: no such recipe file, nor a bundled recipe (bundled: {names})")
    return path


def load_recipe_arg(name_or_path: str, overrides: Sequence[str] | None = None) -> Recipe:
    """Resolve, read, override and validate one recipe argument (raises like :func:`load_recipe`)."""
    return load_recipe(recipe_path(name_or_path), list(overrides or ()))


def describe_components(kind: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """Every registered component: ``{kind: {name: {doc, fields}}}``; one kind if ``kind`` is given.

    ``fields`` maps each config field (except ``name``) to its type, default, whether it is
    required and its description.

    Raises:
        UnknownComponentError: ``kind`` is not a component kind.
    """
    kinds = [registry(kind).kind] if kind is not None else list(ALL_KINDS)
    return {
        k: {e.name: {"doc": e.doc, "fields": e.fields()} for e in registry(k).entries()} for k in kinds
    }


def bundled_recipe_files() -> list[Path]:
    """Every ``*.yaml`` under the bundled recipes folder, recursively, sorted."""
    root = bundled_recipes_dir()
    return sorted(root.rglob("*.yaml")) if root.is_dir() else []


def bundled_recipe_names() -> list[str]:
    """Bundled recipes by the name ``zonkey show`` accepts (``tiny``, ``ablations/fixed``)."""
    root = bundled_recipes_dir()
    return [p.relative_to(root).with_suffix("").as_posix() for p in bundled_recipe_files()]


def describe_recipes() -> dict[str, dict[str, Any]]:
    """Bundled recipes: ``{bundled name: {path, name, description, valid, error}}``.

    ``name`` and ``description`` come from the file even when it does not validate; ``error`` is
    the validation message (``None`` when valid).
    """
    out: dict[str, dict[str, Any]] = {}
    for key, path in zip(bundled_recipe_names(), bundled_recipe_files(), strict=True):
        info: dict[str, Any] = {"path": str(path), "name": path.stem, "description": "", "valid": False,
                                "error": None}
        try:
            raw = read_yaml(path)
            info["name"] = str(raw.get("name", path.stem))
            info["description"] = str(raw.get("description", "") or "")
            load_recipe(path)
            info["valid"] = True
        except (RecipeError, RegistryError) as exc:
            info["error"] = str(exc)
        out[key] = info
    return out


Progress = Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="Progress bar on stderr (default: when stderr is a terminal).")]


@contextmanager
def progress_bar(label: str, enabled: bool | None) -> Iterator[Any]:
    """A transient rich progress bar on stderr (default: when stderr is a terminal).

    Yields:
        The ``progress(done, total)`` callback the library calls, or None.
    """
    if not (sys.stderr.isatty() if enabled is None else enabled):
        yield None
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
              TimeElapsedColumn(), console=stderr(), transient=True)
    task = bar.add_task(label, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def hub_or_path(run: Path | str) -> Path | str:
    """``hf://org/name`` as given on the command line (a Path argument folds it to ``hf:/org/name``)."""
    text = str(run)
    if text.startswith("hf:/") and not text.startswith("hf://"):
        return "hf://" + text[len("hf:/"):]
    return text if text.startswith("hf://") else Path(run)


def load_model(run: Path | str, use_ema: bool = True, verify: bool = True) -> Any:
    """The model of a run or step directory, or of ``hf://org/name[@rev]``, through :func:`zonkey.api.load`."""
    from zonkey.api import load

    load_components()  # a plugin that fails to load is one line on stderr, before the recipe names it
    return load(hub_or_path(run), use_ema=use_ema, verify=verify)
