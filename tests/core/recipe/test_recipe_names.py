"""Recipe.load by bundled name, as the command line resolves recipe arguments."""

from __future__ import annotations

import pytest

from zonkey.core.recipe import Recipe, RecipeError, resolve_recipe_path


def test_recipe_load_finds_bundled_recipes_by_name_as_the_cli_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: the name is looked up among the bundled ones
    tiny = Recipe.load("tiny")
    assert tiny.name == "tiny" and tiny == Recipe.load(resolve_recipe_path("tiny"))
    assert Recipe.load("ablations/splitter").name
    with pytest.raises(RecipeError, match="no-such-recipe: no such recipe file"):
        Recipe.load("no-such-recipe")
