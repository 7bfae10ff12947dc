"""``zonkey diagnose ...`` on micro runs: the reports add up and agree with the library they read."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from tests.helpers import micro_recipe, train_micro_run
from zonkey.cli.app import app
from zonkey.core.recipe import recipe_to_dict, validate_recipe
from zonkey.diagnose.byte_errors import byte_class, show_byte

runner = CliRunner()


def _train_two_level(directory, steps: int = 4):
    data = recipe_to_dict(micro_recipe(steps=steps))
    lv0 = data["model"]["levels"][0]
    lv0["splitter"]["target_segment"] = 3.0
    data["model"]["levels"].append({
        "d_model": lv0["n_compress"] * lv0["d_model"], "max_segment": 4, "n_compress": 2, "heads": 2, "ffn_mult": 1,
        "compressor": {"name": "cls", "layers": 1}, "denoiser": {"name": "ddmm", "decoder_layers": 1, "layers": 1}})
    validate_recipe(data)
    recipe = directory / "two.yaml"
    recipe.write_text(yaml.safe_dump(data))
    res = runner.invoke(app, ["train", str(recipe), "--out", str(directory / "run"), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    return directory / "run"


@pytest.fixture(scope="module")
def two_level(tmp_path_factory):
    return _train_two_level(tmp_path_factory.mktemp("diagnose2"))


@pytest.fixture(scope="module")
def one_level(tmp_path_factory):
    return train_micro_run(tmp_path_factory.mktemp("diagnose1"), steps=2)


def _json_lines(res) -> list[dict]:
    assert res.exit_code == 0, res.output
    return [json.loads(line) for line in res.stdout.splitlines()]


def test_byte_class_and_show():
    assert [byte_class(ord(c)) for c in "aZ7 \n.~"] == ["lowercase", "uppercase", "digit", "whitespace", "whitespace",
                                                       "punctuation", "punctuation"]
    assert byte_class(0xC3) == byte_class(0x80) == "non-ASCII"
    assert show_byte(ord("a")) == "a" and show_byte(10) == "\\x0a" and show_byte(0xE9) == "\\xe9"


@pytest.mark.parametrize("split", ["heldout", "train"])
def test_byte_errors_counts_add_up_and_match_the_decoder(one_level, split):
    from zonkey.core.inference import decode_own_spans
    from zonkey.core.model import ZonkeyModel
    from zonkey.data import load_corpus

    (out,) = _json_lines(runner.invoke(app, ["diagnose", "byte-errors", str(one_level), "--split", split,
                                             "--batches", "2", "--json"]))
    assert out["split"] == split and out["bytes"] > 0
    for kind in ("class", "slot", "length"):
        groups = out[f"by_{kind}"].values()
        assert sum(g["bytes"] for g in groups) == out["bytes"]
        assert sum(g["errors"] for g in groups) == out["errors"]
    assert sum(c["count"] for c in out["confusions"]) <= out["errors"]
    # the same bytes decoded directly
    model = ZonkeyModel.from_run(one_level)
    batches = load_corpus(model.recipe.data).batches(split, seed=0, batch_bytes=model.recipe.data.batch_bytes)
    hit = tot = 0
    with torch.no_grad():
        for i in range(min(2, len(batches))):
            pred, targets, own, _ = decode_own_spans(model, batches.batch(i))
            hit += int(((pred == targets) & own).sum())
            tot += int(own.sum())
    assert out["bytes"] == tot
    assert out["accuracy"] == pytest.approx(hit / tot)


def test_byte_errors_text_report(one_level):
    res = runner.invoke(app, ["diagnose", "byte-errors", str(one_level), "--batches", "1", "--raw"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{one_level}: t 0 byte accuracy ")
    assert [ln.split(":")[0] for ln in lines[1:]] == ["by class", "by slot", "by length",
                                                      "commonest confusions (target -> decoded)"]


def test_roundtrip_chunks_one_row_per_length_and_the_recipe_length_matches_eval(two_level):
    from zonkey.core.evaluate import evaluate_level1
    from zonkey.core.model import ZonkeyModel
    from zonkey.data import load_corpus

    rows = _json_lines(runner.invoke(app, ["diagnose", "roundtrip-chunks", str(two_level), "--lengths", "48,96",
                                           "--bytes", "384", "--json"]))
    assert [r["max_doc_bytes"] for r in rows] == [48, 96]
    for r in rows:
        assert all(0.0 <= r[k] <= 1.0 for k in ("strict", "aligned", "character", "l1_top1")), r
    model = ZonkeyModel.from_run(two_level)
    data = model.recipe.data
    assert data.max_doc_bytes == 96 and data.batch_bytes == 384
    ref = evaluate_level1(model, load_corpus(data).batches("heldout", seed=0, batch_bytes=384), max_batches=1)
    assert rows[1]["character"] == pytest.approx(ref["roundtrip_char_acc"])
    assert rows[1]["strict"] == pytest.approx(ref["roundtrip_acc"])
    text = runner.invoke(app, ["diagnose", "roundtrip-chunks", str(two_level), "--lengths", "96", "--bytes", "384"])
    assert text.exit_code == 0 and text.stdout.startswith("max_doc_bytes    96: strict ")


def test_probe_level1_rows_and_the_same_cos_parameter(two_level):
    base = ["diagnose", "probe-level1", str(two_level), "--steps", "4", "--every", "2", "--json"]
    rows = _json_lines(runner.invoke(app, base))
    assert [r["step"] for r in rows] == [0, 2, 4]
    assert all(r["recon_clean"] > 0 and 0.0 <= r["top1"] <= 1.0 and r["mean_segment"] > 0 for r in rows)
    assert _json_lines(runner.invoke(app, base)) == rows  # seeded
    # every candidate within cosine -0.99 of its target counts as the same unit: no negatives are left
    loose = _json_lines(runner.invoke(app, [*base, "--same-cos", "-0.99"]))
    assert loose[0]["recon_clean"] < 0.1 * rows[0]["recon_clean"], (loose[0], rows[0])
    assert len(_json_lines(runner.invoke(app, [*base, "--random", "--only", "recon_clean", "--set", "heads=1"]))) == 3
    text = runner.invoke(app, base[:-1])
    assert text.exit_code == 0 and text.stdout.splitlines()[0] == "step  recon_clean  top1  mean_segment"


@pytest.mark.parametrize(("args", "message"), [
    (["probe-level1", "{run2}", "--set", "no_such_field=1"], "no_such_field"),
    (["probe-level1", "{run2}", "--only", "recon_clean,bogus"], "bogus"),
    (["probe-level1", "{run1}"], "one level"),
    (["roundtrip-chunks", "{run1}"], "two levels"),
    (["roundtrip-chunks", "{run2}", "--lengths", "96,0"], ">= 1"),
    (["byte-errors", "{missing}"], "recipe.json"),
])
def test_bad_input_is_a_one_line_error(args, message, one_level, two_level, tmp_path):
    paths = {"{run1}": str(one_level), "{run2}": str(two_level), "{missing}": str(tmp_path / "nothing")}
    res = runner.invoke(app, ["diagnose", *[paths.get(a, a) for a in args]])
    assert res.exit_code in (1, 2), res.output
    assert "Traceback" not in res.output and message in res.output, res.output


def test_bad_lengths_are_a_usage_error(two_level):
    res = runner.invoke(app, ["diagnose", "roundtrip-chunks", str(two_level), "--lengths", "96,x"])
    assert res.exit_code == 2 and "--lengths" in res.output
