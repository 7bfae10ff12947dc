"""`zonkey sample`, `zonkey infill` and the generation part of `zonkey eval` on a micro run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_micro_run(tmp_path_factory.mktemp("gen"), steps=2)


def test_sample_json_trace_and_seed(run_dir, tmp_path):
    trace = tmp_path / "trace.jsonl"
    args = ["sample", str(run_dir), "-n", "3", "--steps", "2", "--segments", "2", "--json"]
    res = runner.invoke(app, [*args, "--trace", str(trace)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(rows) == 3 and all(r["bytes"] == len(r["text"].encode()) for r in rows)
    steps = [json.loads(x) for x in trace.read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and [s["sigma"] for s in steps] == [1.0, 0.5]
    assert all(len(s["texts"]) == 3 for s in steps)
    assert runner.invoke(app, args).stdout == res.stdout


def test_sample_bad_level_is_a_one_line_error(run_dir):
    res = runner.invoke(app, ["sample", str(run_dir), "--level", "2"])
    assert res.exit_code == 1 and "level 2 does not exist" in res.output and "Traceback" not in res.output


def test_infill_marker_and_prefix_suffix_forms(run_dir, tmp_path):
    res = runner.invoke(app, ["infill", str(run_dir), "Bob is a ___ player", "--json", "--gap", "1-3", "--steps", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["text"].startswith("Bob is a ") and out["text"].endswith(" player")
    assert out["text"] == "Bob is a " + out["gap"] + " player"
    assert [c["gap_len"] for c in out["candidates"]] == [1, 2, 3] and out["level"] == 0
    trace = tmp_path / "t.jsonl"
    res = runner.invoke(app, ["infill", str(run_dir), "--prefix", "The end", "--gap", "2", "--steps", "2",
                              "--trace", str(trace)])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("The end")
    assert [json.loads(x)["step"] for x in trace.read_text().splitlines()] == [1, 2]
    res = runner.invoke(app, ["infill", str(run_dir), "--suffix", " is here.", "--gap", "2", "--steps", "1", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["text"].endswith(" is here.")


@pytest.mark.parametrize("args,code,message", [
    (["no gap here"], 2, "no ___"),
    (["a ___ b ___ c"], 2, "2 gaps"),
    ([""], 1, "empty"),
    (["___"], 1, "both empty"),
    ([], 2, "nothing to infill"),
    (["a ___", "--prefix", "x"], 2, "not both"),
    (["a ___", "--gap", "0"], 2, "--gap"),
    (["a ___", "--gap", "x-y"], 2, "--gap"),
    (["a ___", "--level", "3"], 1, "level 3 does not exist"),
])
def test_infill_parsing_errors(run_dir, args, code, message):
    res = runner.invoke(app, ["infill", str(run_dir), *args])
    assert res.exit_code == code, res.output
    assert message in res.output and "Traceback" not in res.output


def test_eval_reports_generation_keys(run_dir):
    res = runner.invoke(app, ["eval", str(run_dir), "--json", "--max-batches", "1", "--samples", "2", "--infill", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"recon_acc", "boundary_f1"} <= set(out)  # the existing keys stay
    assert {"n", "valid_word_rate", "mean_bytes", "real_mean_bytes", "distinct_1", "distinct_2",
            "real_distinct_1", "real_distinct_2"} <= set(out["samples"])
    assert {"n", "exact_match", "byte_acc", "baseline_exact_match", "baseline_byte_acc"} <= set(out["infill"])
    assert out["samples"]["n"] == 2
    res = runner.invoke(app, ["eval", str(run_dir), "--max-batches", "1", "--samples", "2", "--infill", "0"])
    assert res.exit_code == 0, res.output
    assert "valid-word rate" in res.stdout and "infill" not in res.stdout


def test_sample_settings_override_at_generation_time(run_dir):
    base = ["sample", str(run_dir), "-n", "2", "--segments", "2", "--json"]
    a = runner.invoke(app, [*base, "--steps", "2"])
    b = runner.invoke(app, [*base, "--set", "sample.steps=2"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.stdout == b.stdout  # the override reached the sampler
    res = runner.invoke(app, ["infill", str(run_dir), "a ___ b", "--set", "sample.eta=1", "--set",
                              "sample.infill_steps=2"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("cmd", "override", "message"), [
    ("sample", "model.levels.0.d_model=8", "only sample.* settings"),
    ("infill", "sample.guidance=-1", "guidance"),
    ("eval", "sample.nope=1", "nope"),
    ("eval", "sample.steps", "a.b.c=value"),
])
def test_bad_sample_overrides_are_one_line_errors(run_dir, cmd, override, message):
    extra = ["a ___ b"] if cmd == "infill" else []
    res = runner.invoke(app, [cmd, str(run_dir), *extra, "--set", override])
    assert res.exit_code == 1, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_sampler_steps_flag_and_the_recipe_field_give_the_same_message(run_dir):
    flag = runner.invoke(app, ["sample", str(run_dir), "-n", "1", "--steps", "10000000"])
    field = runner.invoke(app, ["sample", str(run_dir), "-n", "1", "--set", "sample.steps=10000000"])
    assert flag.exit_code != 0 and field.exit_code != 0
    assert "10,000,000 steps would take about" in flag.output and "10,000,000 steps would take about" in field.output
