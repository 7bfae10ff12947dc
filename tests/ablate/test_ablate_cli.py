"""`zonkey ablate` end to end on the micro recipe: every cell trained and evaluated, the tables
written, a second call skipping finished runs, more steps resuming them, worker processes."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from tests.helpers import micro_recipe
from zonkey.cli.app import app
from zonkey.core.recipe import recipe_to_dict


def _recipe(tmp_path):
    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe())))
    return p


def _ablate(*args):
    return CliRunner().invoke(app, ["ablate", *map(str, args)])


def test_ablate_trains_evaluates_and_resumes(tmp_path):
    recipe, out = _recipe(tmp_path), tmp_path / "grid"
    common = ["--swap", "model.levels.0.splitter=learned,entropy", "--seeds", "2", "--samples", "2", "--infill", "2",
              "--max-batches", "1", "--baseline", "ar", "--noise", "typos=0.05", "--out", out]
    r = _ablate(recipe, "--steps", 3, *common)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "ablation.json").read_text())
    assert [v["name"] for v in rep["variants"]] == ["splitter=learned", "splitter=entropy", "baseline=ar"]
    ent = rep["variants"][1]["metrics"]
    for key in ("boundary_f1", "recon_acc", "recon_acc_noise.0.3", "samples.valid_word_rate", "infill.exact_match",
                "noisy.boundary_f1", "train.bytes_per_s", "train.edge_f1_auc"):
        assert ent[key]["n"] == 2, key
    assert rep["variants"][2]["metrics"]["bits_per_byte"]["n"] == 2
    md = (out / "ablation.md").read_text()
    assert "| splitter=entropy | 2 |" in md and "zonkey ablate" in md and "± " in md
    assert (out / "splitter=entropy" / "seed-3" / "splitter-l0.json").is_file()
    # the same command again: every run is finished
    r = _ablate(recipe, "--steps", 3, *common)
    assert r.exit_code == 0 and r.output.count("skipped:") == 6, r.output
    # more steps: the runs resume from their checkpoints
    r = _ablate(recipe, "--steps", 5, *common)
    assert r.exit_code == 0 and r.output.count("done:") == 6, r.output
    assert "resumed" in r.output
    train = json.loads((out / "splitter=learned" / "seed-4" / "train.json").read_text())
    assert train["steps"] == 5
    # another recipe in the same folders is refused, run by run, never silently reused
    r = _ablate(recipe, "--steps", 5, "--set", "train.lr=0.004", *common)
    assert r.exit_code == 1 and r.output.count("another recipe") >= 6 and "Traceback" not in r.output


def test_ablate_in_worker_processes(tmp_path):
    recipe, out = _recipe(tmp_path), tmp_path / "grid"
    r = _ablate(recipe, "--swap", "model.levels.0.splitter=fixed,whitespace", "--steps", 2, "--seeds", 1,
                "--samples", 0, "--infill", 0, "--max-batches", 1, "-j", 2, "--out", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "ablation.json").read_text())
    assert all(v["metrics"]["recon_acc"]["n"] == 1 for v in rep["variants"])


def test_ablate_bad_input_is_one_line(tmp_path):
    recipe, out = _recipe(tmp_path), tmp_path / "grid"
    for args, code, msg in ((["--swap", "nokey"], 2, "KEY=VALUE"), (["--swap", "model.levels.0.splitter=zzz"], 1,
                            "unknown component"), ([], 2, "nothing to ablate"),
                            (["--swap", "train.lr=0.1", "--noise", "typos=x"], 2, "not a number")):
        r = _ablate(recipe, *args, "--out", out)
        assert r.exit_code == code and msg in r.output and "Traceback" not in r.output, r.output
