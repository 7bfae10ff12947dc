"""``RUN/recipe.json``: the resolved recipe with its versions, and the migration of older ones.

A recipe of an older ``schema_version`` is upgraded one version at a time through
:data:`RECIPE_MIGRATIONS`, each step logged; a newer one is refused with the version that wrote it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from zonkey.core.checkpoint.layout import CHECKPOINTS_DIR, FORMAT_VERSION, RECIPE_FILE, STATE_FILE
from zonkey.core.recipe import MIGRATIONS, SCHEMA_VERSION, Recipe, RecipeError, read_yaml, validate_recipe
from zonkey.io import CheckpointError, atomic_write_json, inside, read_json
from zonkey.version import __version__

__all__ = [
    "RECIPE_MIGRATIONS",
    "check_versions",
    "migrate_recipe",
    "read_recipe_json",
    "read_run_recipe",
    "run_dir_of",
    "write_recipe_json",
    "zonkey_version",
]

logger = logging.getLogger(__name__)

# schema_version v -> function turning a recipe mapping of version v into one of version v + 1.
RECIPE_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = MIGRATIONS


def zonkey_version() -> str:
    """The running zonkey's version string (written beside every recipe and checkpoint)."""
    return __version__


def check_versions(info: dict[str, Any], where: Path) -> None:
    """Refuse a file written by a newer zonkey (its ``format_version`` or ``schema_version``).

    Args:
        info: the file's JSON (or safetensors header) fields; absent versions count as current.
        where: the file, first in the message.

    Raises:
        CheckpointError: a version newer than this zonkey reads, naming the writer's version.
    """
    fmt = info.get("format_version", FORMAT_VERSION)
    if isinstance(fmt, int) and fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: checkpoint format_version {fmt} is newer than this zonkey supports ({FORMAT_VERSION}); "
            f"written by zonkey {info.get('zonkey_version', '?')}"
        )
    schema = info.get("schema_version", SCHEMA_VERSION)
    if isinstance(schema, str) and schema.isdigit():
        schema = int(schema)
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise CheckpointError(
            f"{where}: schema_version {schema} is newer than this zonkey supports ({SCHEMA_VERSION}); "
            f"written by zonkey {info.get('zonkey_version', '?')}, upgrade zonkey to read it"
        )


def write_recipe_json(run_dir: str | Path, recipe: dict[str, Any] | BaseModel) -> Path:
    """Write ``RUN/recipe.json`` atomically: the resolved recipe plus its versions.

    Args:
        run_dir: the run directory (created if needed).
        recipe: a recipe mapping or a validated recipe object (pydantic model).

    Returns:
        The path of recipe.json.

    Raises:
        CheckpointError: ``recipe`` is neither a mapping nor a pydantic model, or not JSON-able.
    """
    if isinstance(recipe, BaseModel):
        recipe = recipe.model_dump(mode="json")
    if not isinstance(recipe, dict):
        raise CheckpointError(f"{run_dir}: a recipe must be a mapping, got {type(recipe).__name__}")
    data = dict(recipe)
    data["schema_version"] = SCHEMA_VERSION
    data["zonkey_version"] = zonkey_version()
    return atomic_write_json(Path(run_dir) / RECIPE_FILE, data)


def migrate_recipe(data: dict[str, Any], where: str | Path) -> dict[str, Any]:
    """Bring a recipe mapping to the current ``schema_version`` through :data:`RECIPE_MIGRATIONS`.

    Args:
        data: the recipe as read, with its ``schema_version``.
        where: the file, first in messages.

    Returns:
        The recipe at the current schema_version.

    Raises:
        CheckpointError: no or a non-integer schema_version, a newer one, or a missing migration.
    """
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: schema_version must be an integer, got {version!r}")
    check_versions(data, Path(where))
    for v in range(version, SCHEMA_VERSION):
        step = RECIPE_MIGRATIONS.get(v)
        if step is None:
            raise CheckpointError(f"{where}: no migration from schema_version {v} to {v + 1}")
        data = step(dict(data))
        data["schema_version"] = v + 1
        logger.info("%s: migrated recipe from schema_version %d to %d", where, v, v + 1)
    return data


def read_recipe_json(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN/recipe.json``, migrated to the current schema and ready for ``validate_recipe``.

    The writer's ``zonkey_version`` is removed; ``schema_version`` stays (it is a recipe field).

    Args:
        run_dir: the run directory.

    Returns:
        The recipe mapping.

    Raises:
        CheckpointError: missing or invalid file, a link out of the run directory, or a
            schema_version this zonkey cannot read.
    """
    run = Path(run_dir)
    path = run / RECIPE_FILE
    if not path.is_file():
        raise CheckpointError(f"missing {RECIPE_FILE} in {run}")
    inside(run, path, str(run))
    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    data = migrate_recipe(data, path)
    data.pop("zonkey_version", None)
    if "base" in data:
        _confine_base(run, path, data["base"])
    return data


def _confine_base(run: Path, path: Path, ref: Any) -> None:
    """Refuse a ``base:`` in a run's recipe.json unless it names a file inside the run (without a base of its own).

    A saved recipe is resolved (it has no ``base:``); one that has one was edited, and like every
    other path read from a run directory it must not lead out of it.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise CheckpointError(f"{path}: base: expected a file inside {run}, got {ref!r}")
    target = run / ref
    inside(run, target, f"{path}: base")
    if not target.is_file():
        raise CheckpointError(f"{path}: base: {ref!r} is no file inside {run} (a run's recipe may only extend "
                              "a file of the run)")
    try:
        nested = read_yaml(target)
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from None
    if "base" in nested:
        raise CheckpointError(f"{target}: base: a base read from a run directory may not have a base of its own")


def run_dir_of(path: str | Path) -> Path:
    """The run directory of a run or step directory (a step directory holds state.json).

    Only a step directory inside a ``checkpoints`` folder leads up to its run; any other directory
    is its own run, so that nothing derived from it lies outside the directory given.

    Args:
        path: ``RUN`` or ``RUN/checkpoints/step-N``.

    Returns:
        ``RUN``.
    """
    path = Path(path)
    step = (path / STATE_FILE).is_file() and path.parent.name == CHECKPOINTS_DIR
    return path.parent.parent if step else path


def read_run_recipe(path: str | Path) -> Recipe:
    """The validated recipe a run (or one of its step directories) was trained with.

    Args:
        path: ``RUN`` or ``RUN/checkpoints/step-N``.

    Returns:
        The recipe (frozen).

    Raises:
        CheckpointError: missing or invalid recipe.json, or a recipe that does not validate.
    """
    run = run_dir_of(path)
    data = read_recipe_json(run)
    try:
        return validate_recipe(data, source=str(run / RECIPE_FILE), base_dir=run)
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from None
