"""Hostile recipes and overrides: every recipe loader (show, validate, train) and ``--set``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import FuzzRun
from tests.fuzz.outcome import OK, zonkey
from zonkey.core.checkpoint import load_checkpoint

BAD_RECIPES = {
    "empty": (b"", "is empty"),
    "blank": (b"   \n\n", "is empty"),
    "malformed-yaml": (b"model: [1, 2\n  x: }", r"line \d+, column \d+: invalid YAML"),
    "top-level-list": (b"- 1\n- 2\n", "must be a mapping"),
    "unknown-key": (b"name: x\nbogus: 1\n", "bogus"),
    "python-tag": (b"name: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    "not-utf8": (b"name: \xff\xfe\n", "not UTF-8"),
    "newer-schema": (b"schema_version: 999\n", "schema_version"),
    "wrong-type": (b"train:\n  steps: many\n", r"train\.steps"),
    "missing-base": (b"base: no-such-recipe-anywhere\n", "base"),
    "self-base": (b"base: self.yaml\n", "base"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_files_are_one_line_errors(tmp_path: Path, case: str) -> None:
    content, what = BAD_RECIPES[case]
    path = tmp_path / "self.yaml"
    path.write_bytes(content)
    zonkey(["show", path], expect=1, match=rf"self\.yaml.*{what}|{what}.*self\.yaml")


def test_bad_json_recipe_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"name": "x",, }')
    zonkey(["validate", path], expect=1, match=r"r\.json: line 1, column \d+")


def test_missing_recipe_is_a_usage_error(tmp_path: Path) -> None:
    zonkey(["show", tmp_path / "nope.yaml"], expect=2, match="nope.yaml")
    zonkey(["train", tmp_path / "nope.yaml", "--out", tmp_path / "run"], expect=2, match="nope.yaml")
    assert not (tmp_path / "run").exists()


def test_a_folder_as_a_recipe(tmp_path: Path) -> None:
    zonkey(["show", tmp_path], expect={1, 2}, match=str(tmp_path.name))


def test_a_runs_recipe_json_is_a_recipe(fuzz_run: FuzzRun) -> None:
    """A run's own recipe.json (with the zonkey_version it was written by) reads back as a recipe."""
    recipe_json = fuzz_run.run / "recipe.json"
    shown = zonkey(["show", recipe_json, "--json"], expect=OK)
    assert json.loads(shown.stdout)["train"]["steps"] == 4
    zonkey(["validate", recipe_json], expect=OK)


def test_train_resume_from_the_runs_own_recipe_json(run_copy: Path) -> None:
    before = load_checkpoint(run_copy).model
    zonkey(["train", run_copy / "recipe.json", "--out", run_copy, "--resume", "--no-progress"], expect=OK)
    # already at train.steps: the checkpoint of step 4 is saved again, every weight the same
    after = load_checkpoint(run_copy)
    assert after.step == 4 and all(torch.equal(before[k], after.model[k]) for k in before)


def test_train_into_an_existing_run_without_resume_changes_nothing(fuzz_run: FuzzRun) -> None:
    zonkey(["train", fuzz_run.recipe, "--out", fuzz_run.run, "--no-progress"], expect=1, match="--resume")


def test_train_resume_with_another_recipe_changes_nothing(fuzz_run: FuzzRun) -> None:
    zonkey(["train", fuzz_run.recipe, "--out", fuzz_run.run, "--resume", "--no-progress",
            "--set", "model.levels.0.d_model=32"], expect=1, match="recipe.json differs")


def test_train_resume_of_an_empty_folder(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    zonkey(["train", fuzz_run.recipe, "--out", tmp_path, "--resume", "--no-progress"], expect=1,
           match="recipe.json")


def test_train_out_is_a_file(fuzz_run: FuzzRun, tmp_path: Path) -> None:
    out = tmp_path / "a-file"
    out.write_text("keep me")
    zonkey(["train", fuzz_run.recipe, "--out", out, "--no-progress"], expect={1, 2}, match="a-file")
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("override, what", [
    ("train.steps=-1", r"train\.steps"),
    ("train.steps=0", r"train\.steps"),
    ("train.lr=-1", r"train\.lr"),
    ("train.lr=.nan", r"train\.lr"),
    ("train.lr=.inf", r"train\.lr"),
    ("train.max_nonfinite=0", r"train\.max_nonfinite"),
    ("train.threads=-1", r"train\.threads"),
    ("train.threads=1000000000000000000000", r"train\.threads"),
    ("train.seed=100000000000000000000000", r"train\.seed"),
    ("data.batch_bytes=0", r"data\.batch_bytes"),
    ("model.levels.0.d_model=0", r"model\.levels\.0\.d_model"),
    ("model.levels.0.max_segment=-3", r"model\.levels\.0\.max_segment"),
    ("model.levels.7.d_model=16", "no list element 7"),
    ("model.nope=1", "nope"),
    ("no-equals-sign", "expected the form"),
    ("=1", "empty key"),
    ("a..b=1", "empty key"),
])
def test_bad_overrides_are_refused_before_training(fuzz_run: FuzzRun, tmp_path: Path, override: str,
                                                    what: str) -> None:
    zonkey(["train", fuzz_run.recipe, "--out", tmp_path / "run", "--set", override, "--no-progress"],
           expect=1, match=what)
    assert not (tmp_path / "run").exists()


@settings(max_examples=40)
@given(st.text(min_size=0, max_size=40))
def test_any_override_text_is_accepted_or_refused_in_one_line(fuzz_recipe: Path, text: str) -> None:
    zonkey(["show", fuzz_recipe, "--set", text])


@settings(max_examples=30)
@given(st.sampled_from(["train.steps", "train.lr", "train.seed", "data.max_doc_bytes", "model.levels.0.heads",
                        "model.levels.0.splitter", "sample.steps", "name", "data.source"]),
       st.one_of(st.integers(-(2**70), 2**70).map(str), st.floats().map(repr),
                 st.sampled_from(["[]", "{}", "null", "~", "yes", "'", "[1, [2]]", "!!binary AA==", "1e400"])))
def test_any_value_of_a_known_key(fuzz_recipe: Path, key: str, value: str) -> None:
    zonkey(["show", fuzz_recipe, "--set", f"{key}={value}"])


@pytest.fixture(scope="module")
def fuzz_recipe(tmp_path_factory: pytest.TempPathFactory, fuzz_run: FuzzRun) -> Path:
    """A private copy of the micro recipe (hypothesis runs many examples against one fixture)."""
    dst = tmp_path_factory.mktemp("recipe") / "micro.yaml"
    shutil.copyfile(fuzz_run.recipe, dst)
    return dst


def test_listing_commands(tmp_path: Path) -> None:
    zonkey(["components"], expect=OK)
    zonkey(["components", "--kind", "splitter", "--json"], expect=OK)
    zonkey(["components", "--kind", "nope"], expect=2, match="nope")
    zonkey(["recipes", "--json"], expect=OK)
    zonkey(["--version"], expect=OK)
    zonkey(["nope"], expect=2, match="No such command 'nope'")
    zonkey(["diagnose", "nope"], expect=2, match=r"zonkey diagnose: No such command")
    zonkey(["show"], expect=2, match=r"zonkey show: Missing argument")
    zonkey(["show", "tiny", "--bogus"], expect=2, match=r"No such option: --bogus")
    zonkey(["validate", tmp_path / "nope.yaml"], expect=2, match="nope.yaml")


def test_usage_errors_are_one_line_with_the_command_and_its_help(fuzz_run: FuzzRun) -> None:
    res = zonkey(["sample", fuzz_run.run, "-n", "many"], expect=2)
    assert res.stderr.strip() == res.stderr.strip().splitlines()[0]
    assert res.stderr.startswith("error: zonkey sample: Invalid value for '-n'")
    assert res.stderr.rstrip().endswith("(see 'zonkey sample --help')")
