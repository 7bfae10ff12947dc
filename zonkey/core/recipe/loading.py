"""Reading recipes: files, older schemas, ``base:``, overrides, validation; the bundled recipes.

A recipe file is YAML, or a run's saved ``recipe.json``. The order is fixed: read the file, set
the saved metadata aside, upgrade an older ``schema_version`` (:mod:`zonkey.core.recipe.migrate`),
resolve ``base:`` (:mod:`zonkey.core.recipe.inherit`), apply the overrides
(:mod:`zonkey.core.recipe.overrides`), validate (:class:`~zonkey.core.recipe.schema.Recipe`, which
these readers are given).
Every error names the file and the full dotted path, e.g. ``recipes/x.yaml:
model.levels.1.splitter.window: Input should be a valid integer``.
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from zonkey.core.contracts.registry import load_plugins
from zonkey.core.recipe.errors import RecipeError, format_validation_error
from zonkey.core.recipe.inherit import expand_base
from zonkey.core.recipe.migrate import MIGRATIONS, SCHEMA_VERSION
from zonkey.core.recipe.overrides import apply_override_as

logger = logging.getLogger(__name__)

#: keys a run's saved recipe.json carries beside the recipe (who wrote it), set aside when read
METADATA_KEYS: tuple[str, ...] = ("zonkey_version",)
#: keys other commands read from a recipe file, set aside too: ``ablation`` (the grid of ``zonkey ablate``)
ASIDE_KEYS: tuple[str, ...] = (*METADATA_KEYS, "ablation")

# the recipe class the readers validate with (:class:`~zonkey.core.recipe.schema.Recipe`, which calls them)
R = TypeVar("R", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) mapping.

    Raises:
        RecipeError: a missing or unreadable file, text that is not UTF-8, invalid YAML (with line
            and column), an empty file, or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"{p}: line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{p}: {where}invalid YAML: {problem}") from None
    if data is None:
        raise RecipeError(f"{p}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping at the top level, got {type(data).__name__}")
    return data


def upgrade(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Bring a recipe mapping to the current ``schema_version`` (a mapping without one is current).

    Raises:
        RecipeError: a non-integer version, one newer than this zonkey's, or no migration from it.
    """
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise RecipeError(f"{source}: schema_version: must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RecipeError(f"{source}: schema_version {version} is newer than this zonkey supports "
                          f"({SCHEMA_VERSION}); upgrade zonkey to read it")
    for v in range(version, SCHEMA_VERSION):
        step = MIGRATIONS.get(v)
        if step is None:
            raise RecipeError(f"{source}: schema_version: no migration from {v} to {v + 1}")
        try:
            data = step(data)
        except ValueError as exc:
            raise RecipeError(f"{source}: {exc}") from None
        data["schema_version"] = v + 1
        logger.info("%s: read recipe of schema_version %d as %d", source, v, v + 1)
    return data


def _current(data: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of ``data`` without saved metadata (and the keys of other commands), at the current schema."""
    data = {k: v for k, v in copy.deepcopy(data).items() if k not in ASIDE_KEYS}
    return upgrade(data, source)


def _read_base(path: Path) -> dict[str, Any]:
    return _current(read_yaml(path), str(path))


def validate_as(schema: type[R], data: dict[str, Any], *, source: str = "<dict>", overrides: Sequence[str] = (),
                base_dir: str | Path | None = None) -> R:
    """Validate a recipe mapping as ``schema`` (what :meth:`Recipe.from_dict` does).

    The saved metadata is set aside, an older schema upgraded, ``base:`` resolved and the
    overrides applied, in that order.

    Args:
        schema: the recipe class.
        data: the recipe as plain data (not modified).
        source: what error messages name as the origin.
        overrides: ``a.b.c=value`` strings, applied in order after ``base:``.
        base_dir: where a relative ``base:`` path starts (default: the working directory).

    Returns:
        The validated, frozen recipe.

    Raises:
        RecipeError: one line per problem, ``source: dotted.path: message``.
    """
    return _validate(schema, data, source, overrides, Path(base_dir) if base_dir is not None else None, ())


def load_as(schema: type[R], path: str | Path, overrides: Sequence[str] = ()) -> R:
    """Read, resolve and validate a recipe file as ``schema`` (what :meth:`Recipe.load` does).

    A recipe without ``name`` is named after its file (a base's name is not inherited).

    Args:
        schema: the recipe class.
        path: a YAML recipe, a run's saved ``recipe.json``, or a bundled recipe's name (``tiny``,
            ``ablations/fixed``), as the command line accepts.
        overrides: ``a.b.c=value`` strings, applied in order.

    Returns:
        The validated recipe.

    Raises:
        RecipeError: unreadable file, invalid YAML, a bad ``base:`` or override, or a validation
            error (each error with the file and the dotted path).
    """
    p = resolve_recipe_path(path)
    data = read_yaml(p)
    if "name" not in data:
        data["name"] = p.stem
    _confine_run_base(p, data)
    return _validate(schema, data, str(p), overrides, p.parent, (p.resolve(),))


def _confine_run_base(path: Path, data: dict[str, Any]) -> None:
    """A run's saved ``recipe.json`` (beside ``LATEST`` or ``checkpoints/``) may only extend a file inside the run.

    Raises:
        RecipeError: its ``base:`` resolves outside the run directory.
    """
    run = path.parent
    if path.name != "recipe.json" or "base" not in data or not (
            (run / "LATEST").exists() or (run / "checkpoints").exists()):
        return
    target = (run / str(data["base"])).resolve()
    if run.resolve() not in target.parents:
        raise RecipeError(f"{path}: base: {data['base']!r} resolves outside the run directory {run} ({target}); "
                          "refused")


def _validate(schema: type[R], data: dict[str, Any], source: str, overrides: Sequence[str], here: Path | None,
              seen: tuple[Path, ...]) -> R:
    load_plugins()  # a component a user's package registers through its entry point is known to every recipe
    data = _current(data, source)
    data = expand_base(data, here=here, source=source, read=_read_base, find_bundled=_bundled_file, seen=seen)
    for ov in overrides:
        data = apply_override_as(schema, data, ov, source=source)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None


def recipe_to_dict(recipe: BaseModel) -> dict[str, Any]:
    """The resolved recipe (a :class:`~zonkey.core.recipe.schema.Recipe`) as plain JSON-able data (every default filled in)."""
    return json.loads(recipe.model_dump_json())


def recipe_to_yaml(recipe: BaseModel) -> str:
    """The resolved recipe as YAML (every default filled in), in the schema's field order."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def bundled_recipes_dir() -> Path:
    """The recipes shipped with the package.

    They are the ``zonkey.recipes`` resource package: in a source checkout (an editable install),
    the repository's ``recipes/`` folder.

    Raises:
        RecipeError: the package was installed without them (an install older than the resource
            package: reinstall).
    """
    try:
        root = importlib.resources.files("zonkey.recipes")
    except ModuleNotFoundError:
        raise RecipeError("the bundled recipes (package zonkey.recipes) are not installed; reinstall zonkey "
                          "(`make setup`, or `pip install -e .` in a checkout)") from None
    return Path(str(root))


def _bundled_file(name: str) -> Path | None:
    root = bundled_recipes_dir()
    for cand in (root / f"{name}.yaml", root / name):
        if cand.is_file():
            return cand
    return None


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path as given, or the bundled recipe of that name (``tiny`` -> ``recipes/tiny.yaml``).

    Returns:
        The existing path, else the bundled file, else the path as given (the caller reports it).
    """
    p = Path(name_or_path)
    if p.exists():
        return p
    return _bundled_file(str(name_or_path)) or p
