"""``zonkey eval``'s generation sections through the CLI: JSON and text output, --infill-items."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app

runner = CliRunner()
FAST = ["--max-batches", "1", "--samples", "0", "--infill", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_micro_run(tmp_path_factory.mktemp("geneval"), steps=4)


def test_infill_items_are_scored(run_dir, tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"prefix": "The cat ", "suffix": " on the mat.", "answer": "sat"}\n'
                 '{"prefix": "It was ", "suffix": "", "answer": " the "}\n')
    res = runner.invoke(app, ["eval", str(run_dir), *FAST, "--infill-items", str(f), "--json"])
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)["infill_items"]
    assert items["n"] == 2 and items["snap"] == "off"
    assert [x["answer"] for x in items["items"]] == ["sat", "the"]
    assert items["baselines"]["the"]["exact_match"] == 0.5
    text = runner.invoke(app, ["eval", str(run_dir), *FAST, "--infill-items", str(f)])
    assert text.exit_code == 0 and "infill items (n=2, snap: off)" in text.stdout


def test_a_malformed_items_line_is_a_one_line_error(run_dir, tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"prefix": "a ", "suffix": " b", "answer": "c"}\n{"prefix": "a", "answer": "c"}\n')
    res = runner.invoke(app, ["eval", str(run_dir), *FAST, "--infill-items", str(f)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and f"{f.name}:2" in res.output and "'suffix'" in res.output


def test_sample_tables_say_snap_off_and_carry_references(run_dir):
    res = runner.invoke(app, ["eval", str(run_dir), "--max-batches", "1", "--samples", "3", "--infill", "2",
                              "--throughput", "3", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out["samples"]["rows"]) == {"generated", "real", "repeat", "shuffled"}
    assert out["samples"]["snap"] == out["throughput"]["snap"] == out["infill"]["snap"] == "off"
    assert "steps_table" not in out  # only with --steps-table
    text = runner.invoke(app, ["eval", str(run_dir), "--max-batches", "1", "--samples", "2", "--infill", "0",
                               "--throughput", "0", "--steps-table"])
    assert text.exit_code == 0, text.output
    for needle in ("snap: off", "shuffled train words", "T=5", "T=100", "bits/B"):
        assert needle in text.stdout
    assert "sampling throughput" not in text.stdout


def test_every_eval_flag_reaches_the_one_library_call(run_dir, tmp_path, monkeypatch):
    """``zonkey eval`` builds EvalSettings from its flags and calls ``zonkey.api.evaluate`` with them."""
    import zonkey.api

    f = tmp_path / "items.jsonl"
    f.write_text('{"prefix": "The cat ", "suffix": " on the mat.", "answer": "sat"}\n')
    data = tmp_path / "other.txt"
    data.write_text("A small text of our own. " * 40)
    seen = []

    def spy(run, settings=None, **kwargs):
        seen.append((run, settings))
        return {"checkpoint": str(run)}

    monkeypatch.setattr(zonkey.api, "evaluate", spy)
    res = runner.invoke(app, ["eval", str(run_dir), "--data", str(data), "--infill-items", str(f), "--max-batches", "2",
                              "--samples", "3", "--infill", "4", "--steps", "2", "--seed", "5", "--throughput", "0",
                              "--judge-order", "4", "--no-ema", "--no-verify", "--noise", "typos=0.05",
                              "--set", "sample.steps=7", "--prior-positions", "9", "--json"])
    assert res.exit_code == 0, res.output
    (run, s), = seen
    assert str(run) == str(run_dir)
    assert s.data == str(data) and s.infill_items == (("The cat ", " on the mat.", "sat"),)
    assert (s.max_batches, s.samples, s.infill, s.steps, s.seed, s.throughput, s.judge_order) == (2, 3, 4, 2, 5, 0, 4)
    assert (s.ema, s.verify, s.noise, s.sample_sets) == (False, False, "typos=0.05", ("sample.steps=7",))
    assert s.prior_positions == 9


def test_the_library_call_reads_data_and_items_as_the_cli_does(run_dir, tmp_path):
    """The same evaluation through the Python API: ``data`` replaces the held-out text, items are scored."""
    from zonkey.api import evaluate

    data = tmp_path / "other.txt"
    data.write_text("\n\n".join(f"Paragraph {i} of a small text of our own, with words in it." for i in range(60)))
    base = evaluate(run_dir, max_batches=1, samples=0, infill=0)
    own = evaluate(run_dir, max_batches=1, samples=0, infill=0, data=str(data),
                   infill_items=(("The cat ", " on the mat.", "sat"),))
    assert own["infill_items"]["n"] == 1 and "infill_items" not in base
    assert own["eval_bytes"] != base["eval_bytes"]  # another held-out text was read
    cli = json.loads(runner.invoke(app, ["eval", str(run_dir), *FAST, "--data", str(data), "--json"]).stdout)
    assert cli["eval_bytes"] == own["eval_bytes"] and cli["recon_acc"] == own["recon_acc"]
