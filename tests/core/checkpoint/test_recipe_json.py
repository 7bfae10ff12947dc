"""``recipe.json``: round trip, versions, a newer schema refused, an older one migrated."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import zonkey
from tests.core.checkpoint.helpers import Net, save
from zonkey.core.checkpoint import CheckpointError, load_checkpoint, read_recipe_json, recipe_json, write_recipe_json
from zonkey.core.recipe import SCHEMA_VERSION
from zonkey.io import atomic_write_json


def test_recipe_json_round_trip_and_versions(tmp_path: Path) -> None:
    write_recipe_json(tmp_path, {"name": "tiny", "model": {"levels": []}})
    raw = json.loads((tmp_path / "recipe.json").read_text())
    assert raw["zonkey_version"] == zonkey.__version__ and raw["schema_version"] == SCHEMA_VERSION
    assert read_recipe_json(tmp_path) == {"name": "tiny", "model": {"levels": []}, "schema_version": SCHEMA_VERSION}
    with pytest.raises(CheckpointError, match=r"missing recipe\.json in "):
        read_recipe_json(tmp_path / "other")


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": SCHEMA_VERSION + 1, "zonkey_version": "9.0"})
    with pytest.raises(CheckpointError, match=r"recipe\.json: schema_version \d+ is newer .*zonkey 9\.0"):
        read_recipe_json(tmp_path)
    out = save(tmp_path, 1, Net())
    info = json.loads((out / "state.json").read_text())
    info["schema_version"] = SCHEMA_VERSION + 1
    atomic_write_json(out / "state.json", info)
    with pytest.raises(CheckpointError, match=r"state\.json: schema_version \d+ is newer"):
        load_checkpoint(tmp_path)


def test_older_schema_version_is_migrated_and_logged(tmp_path: Path, monkeypatch, caplog) -> None:
    old = SCHEMA_VERSION - 1
    monkeypatch.delitem(recipe_json.RECIPE_MIGRATIONS, old, raising=False)  # the real migration, restored afterwards
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": old, "old_name": 3})
    with pytest.raises(CheckpointError, match=f"no migration from schema_version {old}"):
        read_recipe_json(tmp_path)
    monkeypatch.setitem(recipe_json.RECIPE_MIGRATIONS, old, lambda d: {"new_name": d.pop("old_name"), **d})
    with caplog.at_level(logging.INFO, logger=recipe_json.__name__):
        data = read_recipe_json(tmp_path)
    assert data == {"new_name": 3, "schema_version": SCHEMA_VERSION}
    assert f"migrated recipe from schema_version {old} to {SCHEMA_VERSION}" in caplog.text
    atomic_write_json(tmp_path / "recipe.json", {"schema_version": "one"})
    with pytest.raises(CheckpointError, match="schema_version must be an integer"):
        read_recipe_json(tmp_path)
