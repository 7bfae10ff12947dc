"""``base:`` inheritance: merging rules, lists by index, bundled and relative bases, cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonkey.core.recipe import RecipeError, bundled_recipes_dir, load_recipe, merge, recipe_to_dict, validate_recipe

TINY = bundled_recipes_dir() / "tiny.yaml"
LEVEL = "{d_model: 64, max_segment: 16, n_compress: 4, heads: 4}"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bundled_base_is_extended_by_the_recipe(tmp_path):
    path = write(tmp_path, "long.yaml", "base: tiny\ntrain: {steps: 2000}\n")
    recipe = load_recipe(path)
    tiny = load_recipe(TINY)
    assert recipe.train.steps == 2000 and tiny.train.steps == 800
    assert recipe.train.curriculum == tiny.train.curriculum  # the rest of `train` is the base's
    assert recipe.model == tiny.model
    assert recipe.name == "long"  # a name is never inherited: the file's stem
    assert recipe.description == tiny.description


def test_a_relative_base_and_a_chain_of_bases(tmp_path):
    write(tmp_path, "a/root.yaml", f"name: root\nmodel: {{levels: [{LEVEL}]}}\ntrain: {{steps: 5, lr: 0.01}}\n")
    write(tmp_path, "b/mid.yaml", "base: ../a/root.yaml\ntrain: {steps: 6}\n")
    leaf = write(tmp_path, "leaf.yaml", "base: b/mid.yaml\ntrain: {lr: 0.02}\n")
    recipe = load_recipe(leaf)
    assert (recipe.train.steps, recipe.train.lr, recipe.name) == (6, 0.02, "leaf")


def test_mappings_merge_and_lists_replace():
    base = {"a": {"x": 1, "y": {"p": 1, "q": 2}}, "l": [1, 2, 3], "s": "keep"}
    out = merge(base, {"a": {"y": {"q": 5}}, "l": [9]}, where="r.yaml")
    assert out == {"a": {"x": 1, "y": {"p": 1, "q": 5}}, "l": [9], "s": "keep"}
    assert base["a"]["y"]["q"] == 2  # the base is not modified


def test_a_mapping_over_a_list_changes_elements_by_index():
    base = {"levels": [{"d": 1, "k": 2}, {"d": 3, "k": 4}]}
    assert merge(base, {"levels": {1: {"k": 7}}}, where="r")["levels"] == [{"d": 1, "k": 2}, {"d": 3, "k": 7}]
    assert merge(base, {"levels": {"-1": {"d": 0}}}, where="r")["levels"][1] == {"d": 0, "k": 4}
    with pytest.raises(RecipeError, match=r"^r: levels\.2: the base's levels has no element 2 \(length 2\)"):
        merge(base, {"levels": {2: {"k": 7}}}, where="r")
    with pytest.raises(RecipeError, match=r"levels\.first: the base's levels has no element first"):
        merge(base, {"levels": {"first": {}}}, where="r")


def test_a_component_with_another_name_replaces_the_base_node():
    base = {"splitter": {"name": "learned", "target_segment": 6.0, "context": "causal"}}
    assert merge(base, {"splitter": {"name": "fixed"}}, where="r")["splitter"] == {"name": "fixed"}
    same = merge(base, {"splitter": {"name": "learned", "target_segment": 4.0}}, where="r")["splitter"]
    assert same == {"name": "learned", "target_segment": 4.0, "context": "causal"}
    assert merge(base, {"splitter": {"target_segment": 5.0}}, where="r")["splitter"]["context"] == "causal"
    assert merge(base, {"splitter": None}, where="r")["splitter"] is None  # null replaces too


def test_levels_of_a_base_are_overridden_by_index_in_yaml(tmp_path):
    path = write(tmp_path, "r.yaml", "base: tiny\nmodel:\n  levels:\n    1: {schedule: {lr_start: 700}, "
                                     "splitter: {name: fixed}}\n")
    recipe = load_recipe(path)
    tiny = load_recipe(TINY)
    assert recipe.model.levels[1].schedule.lr_start == 700
    assert recipe.model.levels[1].splitter.name == "fixed"
    assert recipe.model.levels[1].losses == tiny.model.levels[1].losses
    assert recipe.model.levels[0] == tiny.model.levels[0]


def test_overrides_apply_after_the_base(tmp_path):
    path = write(tmp_path, "r.yaml", "base: tiny\ntrain: {steps: 2000}\n")
    assert load_recipe(path, ["train.steps=7", "model.levels.1.n_compress=3"]).train.steps == 7


def test_errors_after_merging_name_the_recipe_file(tmp_path):
    path = write(tmp_path, "r.yaml", "base: tiny\nmodel:\n  levels:\n    0: {splitter: {layers: wide}}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: model.levels.0.splitter.layers: Input should be a valid integer")


def test_a_cycle_of_bases_is_an_error(tmp_path):
    a = write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match=r"base: a cycle of bases: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_recipe(a)
    me = write(tmp_path, "me.yaml", "base: me.yaml\n")
    with pytest.raises(RecipeError, match=r"me\.yaml: base: a cycle of bases"):
        load_recipe(me)


@pytest.mark.parametrize(("text", "needle"), [
    ("base: no_such_recipe\n", "base: 'no_such_recipe' is neither a file"),
    ("base: 3\n", "base: expected a bundled recipe name or a path, got 3"),
    ("base: ''\n", "base: expected a bundled recipe name or a path"),
])
def test_bad_bases(tmp_path, text, needle):
    path = write(tmp_path, "r.yaml", text)
    with pytest.raises(RecipeError, match=needle) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: base: ")


def test_an_invalid_base_file_names_the_base(tmp_path):
    write(tmp_path, "broken.yaml", "model: {levels: [1, 2\n")
    path = write(tmp_path, "r.yaml", "base: broken.yaml\n")
    with pytest.raises(RecipeError, match=r"broken\.yaml: line \d+, column \d+: invalid YAML"):
        load_recipe(path)


def test_a_dict_may_name_a_base():
    recipe = validate_recipe({"base": "tiny", "name": "d", "train": {"seed": 4}})
    assert recipe.train.seed == 4 and recipe.model.levels[1].d_model == 192
    assert "base" not in recipe_to_dict(recipe)  # the resolved recipe is self-contained
