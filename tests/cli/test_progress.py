"""Long commands report progress through the one helper, ``zonkey.cli.common.progress_bar``:
``eval`` (held-out batches, then infill problems), ``ablate`` (runs of the grid) and the batch loops
of ``diagnose byte-errors`` and ``diagnose denoise``; and ``eval`` names the model's boundary convention."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.helpers import micro_recipe, train_micro_run
from zonkey.cli import common
from zonkey.cli.app import app
from zonkey.core.recipe import recipe_to_dict

runner = CliRunner()


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, int]]]:
    """Every bar the commands open (label -> its updates), in place of the terminal one."""
    seen: dict[str, list[tuple[int, int]]] = {}

    @contextmanager
    def recorder(label: str, enabled: bool | None) -> Iterator[object]:
        updates = seen.setdefault(label, [])
        yield lambda done, total: updates.append((done, total))

    monkeypatch.setattr(common, "progress_bar", recorder)
    return seen


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_micro_run(tmp_path_factory.mktemp("progress"), steps=2)


def test_eval_reports_its_held_out_batches_and_names_the_convention(run: Path, bars: dict) -> None:
    r = runner.invoke(app, ["eval", str(run), "--max-batches", "2", "--samples", "0", "--infill", "0"])
    assert r.exit_code == 0, r.output
    assert bars["eval"] == [(1, 2), (2, 2)]
    line = next(ln for ln in r.output.splitlines() if ln.startswith("boundary_f1"))
    conv = "space" if "space convention" in line else "word"
    assert f"({conv} convention: a BOS on" in line
    other = {"word": "space", "space": "word"}[conv]
    assert not any(ln.startswith(f"boundary {other}") for ln in r.output.splitlines())  # not its convention


def test_diagnose_reports_its_batches(run: Path, bars: dict) -> None:
    r = runner.invoke(app, ["diagnose", "byte-errors", str(run), "--batches", "2"])
    assert r.exit_code == 0, r.output
    assert bars["byte-errors"] == [(1, 2), (2, 2)]
    r = runner.invoke(app, ["diagnose", "denoise", str(run), "--max-batches", "1", "--samples", "0",
                            "--sigmas", "0,0.5"])
    assert r.exit_code == 0, r.output
    assert bars["denoise level 0"] == [(1, 1)]


def test_ablate_reports_its_runs(tmp_path: Path, bars: dict) -> None:
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe())))
    r = runner.invoke(app, ["ablate", str(recipe), "--swap", "model.levels.0.splitter=fixed,whitespace", "--steps",
                            "1", "--seeds", "1", "--samples", "0", "--infill", "0", "--max-batches", "1",
                            "--out", str(tmp_path / "grid")])
    assert r.exit_code == 0, r.output
    assert bars["ablate (runs)"] == [(0, 2), (1, 2), (2, 2)]
