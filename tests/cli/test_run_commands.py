"""train / eval / split / reconstruct through the CLI on a micro recipe (seconds)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_micro_run(tmp_path_factory.mktemp("cli"), steps=4)


def test_train_json_summary(run_dir):
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "recipe.json").is_file()


def test_train_refuses_existing_run(run_dir):
    res = runner.invoke(app, ["train", str(run_dir.parent / "micro.yaml"), "--out", str(run_dir), "--no-progress"])
    assert res.exit_code == 1
    assert "--resume" in res.output


def test_eval_json(run_dir):
    res = runner.invoke(app, ["eval", str(run_dir), "--json", "--max-batches", "1"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert {"recon_acc", "recon_acc_noise", "boundary", "boundary_f1", "mean_segment_bytes"} <= set(out)


def test_split_json_one_object_per_input_in_order(run_dir):
    texts = ["Hello world.", "naïve café 日本"]
    res = runner.invoke(app, ["split", str(run_dir), *texts, "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    for r, t in zip(rows, texts, strict=True):
        assert "".join(r["segments"]) == t
        assert len(r["p_bos"]) == len(t.encode("utf-8"))


def test_split_input_file_and_bad_utf8(run_dir, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("first line\n\nsecond line\n")
    res = runner.invoke(app, ["split", str(run_dir), "--input", str(f), "--json"])
    assert res.exit_code == 0
    assert [json.loads(x)["text"] for x in res.stdout.splitlines()] == ["first line", "second line"]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe broken\n")
    res = runner.invoke(app, ["split", str(run_dir), "--input", str(bad)])
    assert res.exit_code == 1 and "not valid UTF-8" in res.output and "line 2" in res.output


def _long_line(n: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "naive", "cafe", "1987,", "x", "(the)"]
    out, size, i = [], 0, 0
    while size < n:
        w = words[(i * 7 + i // 3) % len(words)]
        out.append(w)
        size += len(w.encode("utf-8")) + 1
        i += 1
    return " ".join(out).encode("utf-8")[:n].decode("utf-8", errors="ignore").strip()


def _run_on_long_line(cmd, run_dir, tmp_path, n):
    """``zonkey CMD RUN --input FILE --json`` on one n-byte line: the line and the JSON row."""
    line = _long_line(n)
    f = tmp_path / "long.txt"
    f.write_text(line + "\n")
    res = runner.invoke(app, ["--threads", "1", cmd, str(run_dir), "--input", str(f), "--json"])
    assert res.exit_code == 0, res.output[-500:]
    return line, json.loads(res.stdout)


def test_split_a_200_kb_single_line_through_the_cli(run_dir, tmp_path):
    """One 200,000-byte line goes through ``split --input`` (local attention, pieces, batched segments)."""
    line, row = _run_on_long_line("split", run_dir, tmp_path, 200_000)
    assert "".join(row["segments"]) == line
    assert len(row["p_bos"]) == len(line.encode("utf-8")) > 199_000
    assert max(len(s.encode("utf-8")) for s in row["segments"]) <= 8  # max_segment holds far from the start too


def test_reconstruct_a_long_line_from_a_file(run_dir, tmp_path):
    line, row = _run_on_long_line("reconstruct", run_dir, tmp_path, 40_000)
    assert row["text"] == line
    # one decoded byte per input byte (invalid UTF-8 from this 4-step model becomes U+FFFD)
    assert 0 < len(row["reconstruction"]) <= len(line)


def test_reconstruct_json(run_dir):
    res = runner.invoke(app, ["reconstruct", str(run_dir), "abc def", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)
    assert row["text"] == "abc def" and isinstance(row["reconstruction"], str)


def test_corrupt_checkpoint_is_a_one_line_error(run_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    for f in broken.rglob("model.safetensors"):
        f.write_bytes(b"garbage")
    res = runner.invoke(app, ["eval", str(broken), "--max-batches", "1"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "safetensors" in res.output


def test_empty_text_is_rejected(run_dir):
    res = runner.invoke(app, ["split", str(run_dir), ""])
    assert res.exit_code == 1 and "empty" in res.output


def test_sample_json_and_trace(run_dir, tmp_path):
    trace = tmp_path / "trace.jsonl"
    res = runner.invoke(app, ["sample", str(run_dir), "-n", "2", "--steps", "3", "--json", "--trace", str(trace)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(rows) == 2 and all(isinstance(r["text"], str) for r in rows)
    steps = [json.loads(x) for x in trace.read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3]
    again = runner.invoke(app, ["sample", str(run_dir), "-n", "2", "--steps", "3", "--json"])
    assert again.stdout == res.stdout  # seeded and reproducible
