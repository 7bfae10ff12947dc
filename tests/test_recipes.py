"""The bundled recipes: every YAML under ``recipes/`` validates, ``small`` is ``tiny`` plus its
overrides, they ship in a wheel, and a run's own ``recipe.json`` is a recipe too."""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app
from zonkey.core.recipe import bundled_recipes_dir, load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
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


# --- base: small is tiny plus its overrides ---------------------------------------------------------


def test_small_is_tiny_at_3000_steps():
    small, tiny = load_recipe(RECIPES_DIR / "small.yaml"), load_recipe(RECIPES_DIR / "tiny.yaml", ["train.steps=3000"])
    assert small.name == "small" and small.description != tiny.description
    assert small.model_copy(update={"name": "x", "description": ""}) == tiny.model_copy(
        update={"name": "x", "description": ""})
    raw = yaml.safe_load((RECIPES_DIR / "small.yaml").read_text(encoding="utf-8"))
    assert raw["base"] == "tiny" and "model" not in raw  # not a hand copy


def test_show_small_prints_the_resolved_recipe():
    result = CliRunner().invoke(app, ["show", "small"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert "base" not in shown
    assert shown["train"]["steps"] == 3000 and len(shown["model"]["levels"]) == 2
    assert shown["model"]["byte_loss"] == {"focal": 3.0, "balance": 0.5}


# --- recipes as package data ---------------------------------------------------------------------


def test_bundled_recipes_come_from_the_resource_package():
    assert Path(str(importlib.resources.files("zonkey.recipes"))) == bundled_recipes_dir()
    result = CliRunner().invoke(app, ["recipes", "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert sorted(table) == sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPE_FILES)
    assert all(info["valid"] for info in table.values()), table


def test_a_built_wheel_ships_the_recipes(tmp_path):
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("zonkey", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check", str(src), "-w", str(tmp_path / "whl")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "whl").glob("zonkey-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")
    want = {f"zonkey/recipes/{p.relative_to(RECIPES_DIR).as_posix()}" for p in RECIPE_FILES}
    assert want <= names, sorted(want - names)
    assert not any(n.startswith("recipes/") for n in names)  # no top-level `recipes` package
    # the installed copy finds its own recipes, not the checkout's
    probe = ("from zonkey.core.recipe import bundled_recipes_dir, load_recipe; d = bundled_recipes_dir(); "
             "print(d); print(load_recipe(d / 'small.yaml').train.steps)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 0, out.stderr
    where, steps = out.stdout.split()
    assert Path(where) == tmp_path / "site" / "zonkey" / "recipes" and steps == "3000"


# --- a run's own recipe.json -------------------------------------------------------------------------


def test_a_run_resumes_from_its_own_recipe_json(tmp_path):
    run = train_micro_run(tmp_path, steps=2)
    result = CliRunner().invoke(app, ["train", str(run / "recipe.json"), "--out", str(run), "--resume",
                                      "--set", "train.steps=3", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 3
