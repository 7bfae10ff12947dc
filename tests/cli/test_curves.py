"""`zonkey curves`: training curves read back from metrics.jsonl."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from zonkey.cli.app import app

runner = CliRunner()


def _run(tmp_path, rows):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


ROWS = [{"step": s, "loss": 5.0 - s / 100, "l0.space_f1": s / 1000, "w.l1": 0.0} for s in range(50, 401, 50)]


def test_table_has_default_columns_present_in_the_log(tmp_path):
    res = runner.invoke(app, ["curves", str(_run(tmp_path, ROWS))])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].split() == ["step", "loss", "l0.space_f1", "w.l1"]
    assert len(lines) == 1 + len(ROWS)
    assert lines[-1].split()[:3] == ["400", "1.0000", "0.4000"]


def test_every_thins_rows_and_keeps_the_last(tmp_path):
    rows = ROWS + [{"step": 420, "loss": 0.5, "l0.space_f1": 0.9, "w.l1": 1.0}]
    res = runner.invoke(app, ["curves", str(_run(tmp_path, rows)), "--every", "200", "--json", "-k", "loss"])
    assert res.exit_code == 0, res.output
    got = [json.loads(x) for x in res.output.splitlines()]
    assert [g["step"] for g in got] == [200, 400, 420]
    assert got[-1] == {"step": 420, "loss": 0.5}


def test_unknown_column_and_missing_run_are_clear_errors(tmp_path):
    run = _run(tmp_path, ROWS)
    res = runner.invoke(app, ["curves", str(run), "-k", "nope"])
    assert res.exit_code == 1 and "no logged column 'nope'" in res.output
    res = runner.invoke(app, ["curves", str(tmp_path / "absent")])
    assert res.exit_code == 2 and "no metrics.jsonl" in res.output


def test_corrupt_line_is_named(tmp_path):
    run = _run(tmp_path, ROWS)
    with (run / "metrics.jsonl").open("a") as f:
        f.write("{not json\n")
    res = runner.invoke(app, ["curves", str(run)])
    assert res.exit_code == 1 and "metrics.jsonl:9" in res.output
