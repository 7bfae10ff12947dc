"""Fixtures of the fuzz suite: one micro run trained once per session, shared read-only.

Tests that damage a run work on a copy (``run_copy``). Every test that uses the shared run checks
afterwards that none of its files changed or went missing (a cache a command adds is allowed).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.fuzz.outcome import digest
from tests.helpers import micro_recipe


@dataclass(frozen=True)
class FuzzRun:
    """The shared run (two checkpoints, steps 2 and 4) and the recipe file it was trained from."""

    run: Path
    recipe: Path


@pytest.fixture(scope="session")
def fuzz_run(tmp_path_factory: pytest.TempPathFactory) -> FuzzRun:
    """A micro recipe trained for 4 steps (about a second), checkpoints at steps 2 and 4."""
    from zonkey.core.recipe import recipe_to_dict
    from zonkey.core.train.trainer import Trainer

    root = tmp_path_factory.mktemp("fuzz")
    rec = micro_recipe(steps=4, save_every=2)
    recipe = root / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(rec)), encoding="utf-8")
    threads = torch.get_num_threads()
    try:
        Trainer(rec, root / "run", progress=False, log=lambda s: None).fit()
    finally:
        torch.set_num_threads(threads)  # the recipe sets one thread; leave the session as it was
    return FuzzRun(run=root / "run", recipe=recipe)


@pytest.fixture(autouse=True)
def _saved_run_unchanged(request: pytest.FixtureRequest):
    """Whatever a case does, the files of the shared run stay as they were."""
    if "fuzz_run" not in request.fixturenames:
        yield
        return
    run: FuzzRun = request.getfixturevalue("fuzz_run")
    before = digest(run.run)
    yield
    after = digest(run.run)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"the shared run changed: {changed}"


@pytest.fixture()
def run_copy(fuzz_run: FuzzRun, tmp_path: Path) -> Path:
    """A private copy of the shared run, free to damage."""
    dst = tmp_path / "run"
    shutil.copytree(fuzz_run.run, dst)
    return dst
