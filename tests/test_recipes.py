"""Every bundled recipe (every YAML under ``recipes/``, recursively) validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonkey.core.recipe import bundled_recipes_dir, load_recipe

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPE_FILES = sorted(RECIPES_DIR.rglob("*.yaml"))


def test_recipes_exist():
    assert RECIPE_FILES, f"no recipes under {RECIPES_DIR}"
    assert RECIPES_DIR / "tiny.yaml" in RECIPE_FILES
    assert bundled_recipes_dir() == RECIPES_DIR


@pytest.mark.parametrize("path", RECIPE_FILES, ids=[p.relative_to(RECIPES_DIR).as_posix() for p in RECIPE_FILES])
def test_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name
    assert recipe.model.levels
