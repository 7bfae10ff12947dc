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
    from zonkey.core.model.inference import decode_own_spans
    from zonkey.core.model.network import ZonkeyModel
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
    from zonkey.core.evaluate.heldout import evaluate_level1
    from zonkey.core.model.network import ZonkeyModel
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


# --- diagnose denoise ----------------------------------------------------------------------------

LINES = ["the cat sat on the mat", "a dog ran in the park", "we like to read books", "the sun is warm today",
         "birds sing in the trees", "she drinks hot tea", "rain falls on the roof", "he plays the old piano"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-level micro model trained until level 0 reconstructs most of its (repetitive) held-out text."""
    from zonkey.core.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("denoise")
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(LINES * 4) + "\n")
    recipe = validate_recipe({
        "data": {"source": str(corpus), "max_doc_bytes": 64, "batch_bytes": 512, "heldout_fraction": 0.25},
        "model": {"levels": [{
            "d_model": 32, "max_segment": 8, "n_compress": 2, "heads": 2, "ffn_mult": 2,
            "splitter": {"name": "learned", "existence": "straight_through", "target_segment": 4.0, "kernels": [3]},
            "compressor": {"name": "cls", "layers": 1, "skip": True},
            "denoiser": {"name": "ddmm", "decoder": "linear", "layers": 1},
            "objective": {"name": "ddmm", "fraction": 0.25},
            "losses": {"diffusion": 0.1, "recon_dirty": 0.1}}]},
        "train": {"steps": 300, "lr": 0.003, "warmup_steps": 20, "log_every": 100, "seed": 0, "threads": 1},
    })
    Trainer(recipe, tmp / "run", progress=False, log=lambda s: None).fit()
    return tmp / "run"


def _denoise(run, *args: str) -> dict:
    (out,) = _json_lines(runner.invoke(app, ["diagnose", "denoise", str(run), *args, "--json"]))
    return out


@pytest.mark.learning
def test_denoise_content_is_lost_as_sigma_grows_on_a_trained_model(trained):
    from zonkey.diagnose.denoise import SIGMAS

    (lvl,) = _denoise(trained, "--samples", "0")["levels"]
    rows = {r["sigma"]: r for r in lvl["rows"]}
    assert list(rows) == list(SIGMAS) and lvl["latents"] > 20
    for r in rows.values():
        assert all(0.0 <= r[k] <= 1.0 for k in ("char_acc", "byte_acc", "latent_top1")), r
        assert r["slot_top1"] is None
    # a little noise keeps the content, pure noise loses it (measured: 0.61 vs 0.00 char acc, 0.66 vs 0.05 top-1)
    assert rows[0.1]["char_acc"] >= rows[1.0]["char_acc"] + 0.2, rows
    assert rows[0.1]["latent_top1"] >= 0.4 and rows[0.1]["latent_top1"] >= rows[1.0]["latent_top1"] + 0.3, rows


def test_denoise_level0_clean_row_is_evals_reconstruction(one_level):
    from zonkey.core.evaluate.heldout import evaluate_level0
    from zonkey.core.model.network import ZonkeyModel
    from zonkey.data import load_corpus

    out = _denoise(one_level, "--sigmas", "0,0.5", "--max-batches", "2", "--samples", "0", "--raw")
    assert out["run"] == str(one_level) and [lvl["level"] for lvl in out["levels"]] == [0]
    clean, noisy = out["levels"][0]["rows"]
    assert (clean["sigma"], noisy["sigma"]) == (0.0, 0.5)
    model = ZonkeyModel.from_run(one_level, use_ema=False)
    data = model.recipe.data
    ref = evaluate_level0(model, load_corpus(data).batches("heldout", seed=0, batch_bytes=data.batch_bytes),
                          noise_levels=(), max_batches=2)
    assert clean["byte_acc"] == pytest.approx(ref["recon_acc"])
    assert clean["char_acc"] == pytest.approx(ref["roundtrip0_char_acc"])
    assert _denoise(one_level, "--sigmas", "0,0.5", "--max-batches", "2", "--samples", "0", "--raw") == out  # seeded


def test_denoise_level1_rows_match_the_round_trip_and_samples_are_scored(two_level):
    from zonkey.core.evaluate.heldout import evaluate_level1
    from zonkey.core.model.network import ZonkeyModel
    from zonkey.data import load_corpus

    out = _denoise(two_level, "--level", "1", "--sigmas", "0,1", "--max-batches", "1", "--samples", "3",
                   "--sample-steps", "2")
    (lvl,) = out["levels"]
    assert lvl["level"] == 1 and lvl["batches"] == 1
    clean, noisy = lvl["rows"]
    assert clean["byte_acc"] is None and all(0.0 <= r[k] <= 1.0 for r in (clean, noisy)
                                             for k in ("char_acc", "slot_top1", "latent_top1"))
    model = ZonkeyModel.from_run(two_level)
    data = model.recipe.data
    ref = evaluate_level1(model, load_corpus(data).batches("heldout", seed=0, batch_bytes=data.batch_bytes),
                          max_batches=1)
    assert clean["slot_top1"] == pytest.approx(ref["l1_recon_acc"])
    assert clean["char_acc"] == pytest.approx(ref["roundtrip_char_acc"])
    samples = lvl["samples"]
    assert samples["n"] == 3 and samples["steps"] == 2 and set(samples["rows"]) == {"per-segment", "real"}
    for row in samples["rows"].values():
        assert 0.0 <= row["valid_word_rate"] <= 1.0 and row["byte_entropy"] >= 0.0
    assert len(samples["examples"]["per-segment"]) == 3


def test_denoise_text_table(two_level):
    res = runner.invoke(app, ["diagnose", "denoise", str(two_level), "--sigmas", "0.1,1", "--max-batches", "1",
                              "--samples", "2", "--sample-steps", "1"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("level ")]
    assert [lines[i].split(":")[0] for i in heads] == ["level 0", "level 1"]
    for i in heads:
        assert lines[i + 1].split() == ["σ", "char", "acc", "byte" if lines[i].startswith("level 0") else "slot",
                                        "acc" if lines[i].startswith("level 0") else "top-1", "latent", "top-1"]
        for ln, sigma in zip(lines[i + 2:i + 4], ("0.1", "1"), strict=True):
            cells = ln.split()
            assert cells[0] == sigma and all(0.0 <= float(c) <= 1.0 for c in cells[1:]), ln
        assert "prior alone" in lines[i + 4] and lines[i + 6].split()[0] == "per-segment" and lines[i + 7].split()[0] == "real"


@pytest.fixture(scope="module")
def with_prior(tmp_path_factory):
    """The one-level micro run with a sequence prior on level 0, trained two steps."""
    directory = tmp_path_factory.mktemp("denoise-prior")
    data = recipe_to_dict(micro_recipe(steps=2))
    data["model"]["levels"][0]["prior"] = {"name": "sequence", "d_model": 32, "layers": 1, "heads": 2, "max_len": 32}
    data["sample"] = {"length": 6, "steps": 2}
    recipe = directory / "prior.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(validate_recipe(data))))
    res = runner.invoke(app, ["train", str(recipe), "--out", str(directory / "run"), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    return directory / "run"


def test_denoise_scores_both_priors_where_the_level_has_a_sequence_prior(with_prior):
    from zonkey.core.generate.sample import sample
    from zonkey.core.model.network import ZonkeyModel

    (lvl,) = _denoise(with_prior, "--sigmas", "0", "--max-batches", "1", "--samples", "2")["levels"]
    assert set(lvl["samples"]["rows"]) == {"per-segment", "sequence", "real"}
    model = ZonkeyModel.from_run(with_prior)
    assert lvl["samples"]["examples"]["sequence"] == sample(model, 2, level=0).texts
    forced = sample(model, 2, level=0, per_segment=True).texts
    assert lvl["samples"]["examples"]["per-segment"] == forced
    model.levels[0].prior = None  # without its prior the level samples segment by segment: the same texts
    assert sample(model, 2, level=0).texts == forced


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--level", "1"], "--level 1", 1),
    (["--level", "-1"], "--level -1", 1),
    (["--sigmas", "0.5,1.5"], "[0, 1]", 1),
    (["--sigmas", "0.5,x"], "--sigmas", 2),
])
def test_denoise_bad_input_is_a_one_line_error(one_level, args, message, code):
    res = runner.invoke(app, ["diagnose", "denoise", str(one_level), "--samples", "0", *args])
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
