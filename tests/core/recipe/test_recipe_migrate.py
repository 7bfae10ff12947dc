"""Older recipe schemas: the migration table, a run's saved recipe.json as a recipe, and hints for
keys that moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import zonkey
from zonkey.core import checkpoint as ck
from zonkey.core.recipe import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Recipe,
    RecipeError,
    bundled_recipes_dir,
    load_recipe,
    recipe_to_dict,
    v1_to_v2,
    v2_to_v3,
    validate_recipe,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
#: recipes/tiny.yaml as a run of schema_version 1 saved it (its recipe.json, every default filled in)
TINY_V1 = FIXTURES / "tiny-recipe-v1.json"
TINY = bundled_recipes_dir() / "tiny.yaml"


def test_the_schema_is_version_3_and_the_table_reaches_it():
    assert SCHEMA_VERSION == 3
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))
    assert ck.RECIPE_MIGRATIONS is MIGRATIONS  # one table for recipes and checkpoints


def test_a_v1_recipe_json_loads_as_the_current_tiny_recipe(tmp_path):
    # the fixture was saved before tiny's level-1 splitter got its own window (128) and before its
    # level-0 target_segment moved from 6 to 7; it has the old values
    from zonkey.components.splitter.learned import LearnedSplitterConfig

    default = LearnedSplitterConfig.model_fields["window"].default
    # and before tiny validated and saved checkpoints while training, and computed segments in
    # length buckets (with causal denoiser slots), and before it had a sequence prior and its sampler,
    # and when it trained 1,200 steps with level 1 on every step from 600
    v1 = json.loads(TINY_V1.read_text())
    old_schedule = ["train.steps=1200", "model.levels.1.schedule.lr_start=600",
                    f"train.curriculum={json.dumps(v1['train']['curriculum'])}"]
    tiny = load_recipe(TINY, overrides=[*old_schedule, "model.levels.0.prior=null", "sample.steps=10", "sample.mode=mean",
                                        "sample.other_scale=1.0", f"model.levels.1.splitter.window={default}",
                                        "model.levels.0.splitter.target_segment=6.0", "train.eval_every=0",
                                        "train.save_every=0", "model.packing=off",
                                        "model.levels.0.denoiser.slots=bidirectional",
                                        "model.levels.1.denoiser.slots=bidirectional"])
    assert v1["schema_version"] == 1 and "token_focal" in v1["model"]["levels"][0]
    assert validate_recipe(v1) == tiny
    assert Recipe.load(TINY_V1) == tiny
    # through the checkpoint reader (a v1 run directory), as `zonkey.load` reads it
    (tmp_path / "recipe.json").write_text(TINY_V1.read_text())
    assert validate_recipe(ck.read_recipe_json(tmp_path)) == tiny


def test_v1_to_v2_regroups_every_moved_key():
    v1 = {"schema_version": 1, "model": {"levels": [
        {"d_model": 16, "token_focal": 2.0, "token_balance": 0.5, "lr_start": 3, "lr_scale": 1.5,
         "grad_from_above": 0.0, "split_grad_from_above": 0.25},
        {"d_model": 64, "token_focal": 0.0, "grad_from_above": 0.5},
    ]}}
    v2 = v1_to_v2(v1)
    assert v2["schema_version"] == 2
    assert v2["model"]["byte_loss"] == {"focal": 2.0, "balance": 0.5}
    assert v2["model"]["levels"][0] == {"d_model": 16, "schedule": {"lr_start": 3, "lr_scale": 1.5},
                                        "grad_from_above": {"latents": 0.0, "split": 0.25}}
    assert v2["model"]["levels"][1] == {"d_model": 64, "grad_from_above": {"latents": 0.5}}
    assert v1["model"]["levels"][0]["token_focal"] == 2.0  # the input is not modified


def test_a_v1_byte_loss_knob_on_level_1_is_still_reported():
    v1 = {"schema_version": 1, "model": {"levels": [
        {"d_model": 16, "max_segment": 8, "n_compress": 2, "heads": 2},
        {"d_model": 32, "max_segment": 4, "n_compress": 2, "heads": 2, "token_focal": 1.0}]}}
    with pytest.raises(RecipeError, match=r"model\.levels\.1\.token_focal: unknown key .*model\.byte_loss\.focal"):
        validate_recipe(v1, source="r.json")


def test_a_runs_own_recipe_json_is_a_recipe(tmp_path):
    tiny = load_recipe(TINY)
    path = ck.write_recipe_json(tmp_path, recipe_to_dict(tiny))
    saved = json.loads(path.read_text())
    assert saved["zonkey_version"] == zonkey.__version__  # metadata beside the recipe
    assert load_recipe(path) == tiny
    assert load_recipe(path, ["train.steps=5"]).train.steps == 5


@pytest.mark.parametrize(("version", "needle"), [
    (SCHEMA_VERSION + 1, f"schema_version {SCHEMA_VERSION + 1} is newer than this zonkey supports ({SCHEMA_VERSION})"),
    ("two", "schema_version: must be an integer, got 'two'"),
    (0, "schema_version: no migration from 0 to 1"),
])
def test_bad_schema_versions(tmp_path, version, needle):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"schema_version": version, "model": {"levels": [{}]}}))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}: {needle}" + ("; upgrade zonkey to read it" if version == SCHEMA_VERSION + 1 else "")


def test_invalid_json_reports_line_and_column(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"model": {"levels": [}\n')
    with pytest.raises(RecipeError, match=r"recipe\.json: line 1, column \d+: invalid JSON: "):
        load_recipe(path)


@pytest.mark.parametrize(("key", "value", "hint"), [
    ("lr_start", 600, "moved it to model.levels.0.schedule.lr_start"),
    ("lr_scale", 1.5, "moved it to model.levels.0.schedule.lr_scale"),
    ("split_grad_from_above", 0.0, "moved it to model.levels.0.grad_from_above.split"),
    ("token_balance", 0.5, "moved it to model.byte_loss.balance"),
    ("grad_from_above", 0.0, "groups it: model.levels.0.grad_from_above.latents"),
])
def test_a_key_of_schema_1_in_a_current_recipe_says_where_it_went(key, value, hint):
    with pytest.raises(RecipeError) as info:
        validate_recipe({"model": {"levels": [{key: value}]}}, source="r.yaml")
    msg = str(info.value)
    assert msg.startswith(f"r.yaml: model.levels.0.{key}: ") and f"schema_version 2 {hint}" in msg


def _tiny_v2_json() -> dict:
    """tiny's recipe.json as a schema-2 run saved it: every default filled in, ``sample.use_ema`` too."""
    v2 = recipe_to_dict(load_recipe(TINY))
    v2["schema_version"] = 2
    v2["sample"]["use_ema"] = False
    return v2


def test_v2_to_v3_drops_use_ema_and_nothing_else():
    v2 = _tiny_v2_json()
    v3 = v2_to_v3(v2)
    assert v3["schema_version"] == 3 and "use_ema" not in v3["sample"]
    assert {k: v for k, v in v3["sample"].items()} == {k: v for k, v in v2["sample"].items() if k != "use_ema"}
    assert v2["sample"]["use_ema"] is False  # the input is not modified


def test_a_v2_recipe_json_with_use_ema_still_loads(tmp_path):
    (tmp_path / "recipe.json").write_text(json.dumps(_tiny_v2_json()))
    assert validate_recipe(ck.read_recipe_json(tmp_path)) == load_recipe(TINY)
    assert Recipe.load(tmp_path / "recipe.json") == load_recipe(TINY)


def test_use_ema_in_a_current_recipe_says_what_replaced_it():
    with pytest.raises(RecipeError) as info:
        validate_recipe({**recipe_to_dict(load_recipe(TINY)), "sample": {"use_ema": True}}, source="r.yaml")
    msg = str(info.value)
    assert msg.startswith("r.yaml: sample.use_ema: ") and "schema_version 3 removed it" in msg
    assert "--ema/--no-ema" in msg and "\n" not in msg


def test_a_v2_prior_with_the_rejected_options_off_loads_and_one_that_used_them_is_refused(tmp_path):
    v2 = recipe_to_dict(load_recipe("recipes/tiny-prior.yaml"))
    v2["schema_version"] = 2
    prior = v2["model"]["levels"][0]["prior"]
    prior.update({"mixture": 0, "mixture_temp": 0.05, "sphere_out": True, "memory": 0, "scatter": 0.0})
    v2["sample"].update({"guidance": 1.0, "project_below": 0.0, "mean_below": 0.0, "use_ema": True})
    assert validate_recipe(v2) == load_recipe("recipes/tiny-prior.yaml")
    prior["mixture"] = 16
    (tmp_path / "recipe.json").write_text(json.dumps(v2))
    with pytest.raises(RecipeError) as info:
        Recipe.load(tmp_path / "recipe.json")
    msg = str(info.value)
    assert "model.levels.0.prior.mixture is 16, which schema 3 removed" in msg and "\n" not in msg


def test_a_removed_prior_option_in_a_current_recipe_says_why():
    data = recipe_to_dict(load_recipe("recipes/tiny-prior.yaml"))
    data["model"]["levels"][0]["prior"]["mixture"] = 4
    with pytest.raises(RecipeError) as info:
        validate_recipe(data, source="r.yaml")
    assert "model.levels.0.prior.mixture: " in str(info.value) and "schema_version 3 removed it" in str(info.value)
