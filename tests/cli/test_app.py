"""The command line: listing components and recipes, showing and validating recipes, errors."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import zonkey.core.contracts.registry as registry_mod
from zonkey.cli.app import app
from zonkey.core.contracts.registry import ALL_KINDS, ENTRY_POINT_GROUP, KINDS
from zonkey.core.recipe import bundled_recipes_dir, validate_recipe

TINY = bundled_recipes_dir() / "tiny.yaml"
runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def bad_recipes(tmp_path: Path) -> dict[str, Path]:
    files = {
        "wrong_type": "model:\n  levels:\n    - d_model: wide\n",
        "unknown_key": "model:\n  attention: {name: sdpa, threshold: 0.5}\n  levels: [{}]\n",
        "bad_yaml": "model:\n  levels: [{}\n  attention: sdpa\n",
    }
    out = {}
    for name, text in files.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_text(text)
    return out


# --- components ---------------------------------------------------------------------------------


def test_components_json_lists_every_kind_and_the_attention_backends():
    result = invoke("components", "--json")
    assert result.exit_code == 0
    table = json.loads(result.stdout)  # pure JSON, one object
    assert set(table) == set(ALL_KINDS)
    assert {"reference", "sdpa", "flex", "hard"} <= set(table["attention"])
    hard = table["attention"]["hard"]
    assert hard["doc"]
    assert hard["fields"]["threshold"]["type"] == "float"
    assert hard["fields"]["threshold"]["default"] == 0.5
    assert hard["fields"]["threshold"]["description"]
    for kind in KINDS:
        for entry in table[kind].values():
            assert set(entry) == {"doc", "fields"}
            assert "name" not in entry["fields"]


def test_components_one_kind():
    result = invoke("components", "--kind", "attention", "--json")
    assert result.exit_code == 0
    assert list(json.loads(result.stdout)) == ["attention"]


def test_components_text():
    result = invoke("components", "-k", "attention")
    assert result.exit_code == 0
    for name in ("reference", "sdpa", "flex", "hard", "threshold"):
        assert name in result.stdout


def test_components_unknown_kind_is_a_usage_error():
    result = invoke("components", "--kind", "tokenizer")
    assert result.exit_code == 2
    assert "unknown component kind 'tokenizer'" in result.stderr
    assert "splitter" in result.stderr
    assert result.stdout == ""


def test_components_reports_a_broken_plugin_on_stderr(tmp_path, monkeypatch):
    (tmp_path / "zz_cli_broken.py").write_text("raise ImportError('missing dependency frobnicate')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint(name="frob", value="zz_cli_broken", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **p: [ep] if p.get("group") == ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry_mod, "_plugin_report", None)  # restored afterwards
    try:
        result = invoke("components", "--json")
    finally:
        sys.modules.pop("zz_cli_broken", None)
    assert result.exit_code == 0
    assert "plugin 'frob' failed to load" in result.stderr
    assert "missing dependency frobnicate" in result.stderr
    assert "attention" in json.loads(result.stdout)  # stdout stays pure JSON


# --- recipes ------------------------------------------------------------------------------------


def test_recipes_json_includes_tiny():
    result = invoke("recipes", "--json")
    assert result.exit_code == 0
    table = json.loads(result.stdout)
    assert table["tiny"]["valid"] is True
    assert table["tiny"]["error"] is None
    assert table["tiny"]["name"] == "tiny"
    assert table["tiny"]["description"]
    assert Path(table["tiny"]["path"]) == TINY
    assert len(table) == len(list(bundled_recipes_dir().rglob("*.yaml")))


def test_recipes_text():
    result = invoke("recipes")
    assert result.exit_code == 0
    assert "tiny" in result.stdout and "ok" in result.stdout


# --- show ---------------------------------------------------------------------------------------


def test_show_bundled_name_prints_the_resolved_recipe():
    result = invoke("show", "tiny")
    assert result.exit_code == 0
    shown = yaml.safe_load(result.stdout)
    assert shown["name"] == "tiny"
    assert shown["model"]["levels"][0]["d_model"] == 64
    assert shown["train"]["grad_clip"] == 1.0  # defaults are filled in
    assert validate_recipe(shown).name == "tiny"  # what show prints is itself a valid recipe


def test_show_path_json_with_overrides():
    result = invoke("show", str(TINY), "--json", "--set", "model.attention=hard", "-s", "model.levels.0.heads=8")
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    assert shown["model"]["attention"] == {"name": "hard", "threshold": 0.5}
    assert shown["model"]["levels"][0]["heads"] == 8


def test_show_missing_recipe():
    result = invoke("show", "no_such_recipe")
    assert result.exit_code == 2
    assert "no_such_recipe: no such recipe file" in result.stderr
    assert "tiny" in result.stderr  # lists the bundled names
    assert result.stdout == ""


def test_show_invalid_recipe(bad_recipes):
    result = invoke("show", str(bad_recipes["wrong_type"]), "--json")
    assert result.exit_code == 1
    assert "model.levels.0.d_model" in result.stderr
    assert result.stdout == ""


def test_show_bad_override():
    result = invoke("show", "tiny", "--set", "model.levels.0.d_model")
    assert result.exit_code == 1
    assert "expected the form a.b.c=value" in result.stderr
    result = invoke("show", "tiny", "--set", "model.levels.0.d_model=wide")
    assert result.exit_code == 1
    assert "model.levels.0.d_model" in result.stderr


# --- validate -----------------------------------------------------------------------------------


def test_validate_tiny():
    result = invoke("validate", str(TINY))
    assert result.exit_code == 0
    assert result.stdout.strip() == f"ok {TINY}"


def test_validate_wrong_type(bad_recipes):
    path = bad_recipes["wrong_type"]
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}: model.levels.0.d_model: " in result.stderr
    assert result.stdout == ""


def test_validate_unknown_key(bad_recipes):
    path = bad_recipes["unknown_key"]
    result = invoke("validate", str(path))
    assert result.exit_code == 1
    assert f"{path}: model.attention.threshold: unknown key" in result.stderr


def test_validate_invalid_yaml(bad_recipes):
    result = invoke("validate", str(bad_recipes["bad_yaml"]))
    assert result.exit_code == 1
    assert "invalid YAML" in result.stderr and "line 3" in result.stderr


def test_validate_many_reports_each(bad_recipes):
    result = invoke("validate", "tiny", str(bad_recipes["wrong_type"]), str(bad_recipes["unknown_key"]))
    assert result.exit_code == 1
    assert result.stdout.strip() == f"ok {TINY}"
    assert "model.levels.0.d_model" in result.stderr
    assert "model.attention.threshold" in result.stderr


def test_validate_missing_file_exits_2(bad_recipes, tmp_path):
    result = invoke("validate", str(bad_recipes["wrong_type"]), str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2
    assert "absent.yaml: no such recipe file" in result.stderr


def test_validate_with_overrides():
    assert invoke("validate", "tiny", "--set", "train.steps=3").exit_code == 0
    result = invoke("validate", "tiny", "--set", "train.steps=-1")
    assert result.exit_code == 1
    assert "train.steps" in result.stderr


def test_validate_json_one_object_per_recipe(bad_recipes):
    result = invoke("validate", "--json", "tiny", str(bad_recipes["unknown_key"]))
    assert result.exit_code == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {"recipe": "tiny", "path": str(TINY), "valid": True, "errors": []}
    assert second["valid"] is False
    assert any("model.attention.threshold" in e for e in second["errors"])


# --- entry points -------------------------------------------------------------------------------


def test_no_arguments_prints_help():
    result = runner.invoke(app, [])
    assert "components" in result.output and "validate" in result.output


def test_version():
    from zonkey import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"zonkey {__version__}"


def test_python_dash_m_zonkey():
    proc = subprocess.run(
        [sys.executable, "-m", "zonkey", "validate", "tiny"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"ok {TINY}"


def test_threads_option_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        result = invoke("--threads", "1", "components", "--kind", "splitter")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
