"""The autoregressive byte baseline: the key/value cache changes nothing, continuation scores are the
model's own log-probabilities, training resumes exactly, and `zonkey eval` scores such a run."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import micro_recipe
from zonkey.baselines.ar_eval import continuation_logprobs, generate, rescore_infill
from zonkey.baselines.ar_model import BOS, END, ARConfig, ByteTransformer, shift_inputs
from zonkey.baselines.ar_run import ARRun, ARTrainer, is_ar_run, load_ar_model, read_ar_run, train_ar
from zonkey.cli.app import app
from zonkey.io import CheckpointError

SMALL = ARConfig(d_model=16, layers=2, heads=2, ffn_mult=2, context=64)


def _model(seed: int = 0) -> ByteTransformer:
    torch.manual_seed(seed)
    return ByteTransformer(SMALL).eval()


def test_the_cache_gives_the_same_logits_as_one_pass():
    m = _model()
    x = torch.randint(0, 256, (3, 12))
    x[:, 0] = BOS
    full = m(x)
    cache = m.new_cache(3)
    steps = [m(x[:, :5], cache)] + [m(x[:, i:i + 1], cache) for i in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache.length == 12


def test_continuation_scores_are_the_models_log_probabilities():
    m = _model(1)
    prefix, conts = b"the ca", [b"t sat", b"r", b"mel ran"]
    got = continuation_logprobs(m, prefix, conts, batch=2)
    for c, g in zip(conts, got.tolist(), strict=True):
        ids = torch.tensor([[BOS, *prefix, *c]])
        with torch.no_grad():
            logp = torch.log_softmax(m(ids), dim=-1)[0]
        want = sum(float(logp[len(prefix) + j, c[j]]) for j in range(len(c)))
        assert g == pytest.approx(want, abs=1e-4)


def test_rescoring_picks_the_likeliest_candidate():
    m = _model(2)
    cands = ["cat", "dog", "a", "mat"]
    preds, ranked = rescore_infill(m, [("the ", " sat on the mat")], cands, shortlist=len(cands))
    full = continuation_logprobs(m, b"the ", [c.encode() + b" sat on the mat" for c in cands])
    assert preds[0] == cands[int(torch.argmax(full))] and sorted(ranked[0]) == sorted(cands)
    with pytest.raises(ValueError, match="no infill candidates"):
        rescore_infill(m, [("a", "b")], [""])


def test_shift_inputs_and_the_end_target():
    tokens = torch.tensor([[104, 105, 0], [120, 0, 0]])
    valid = torch.tensor([[True, True, False], [True, False, False]])
    inputs, targets = shift_inputs(tokens, valid, torch.tensor([True, False]))
    assert inputs.tolist() == [[BOS, 104, 105, 0], [BOS, 120, 0, 0]]
    assert targets.tolist() == [[104, 105, END, -100], [120, -100, -100, -100]]


def test_generate_is_seeded_and_stops_at_the_end_class():
    m = _model(3)
    a, b = generate(m, 4, max_bytes=20, seed=5), generate(m, 4, max_bytes=20, seed=5)
    assert a == b and len(a) == 4 and all(len(t) <= 20 for t in a)
    with torch.no_grad():  # an end class that always wins: every text is empty
        m.head.bias[END] = 1e4
    assert generate(m, 3, max_bytes=10) == [b"", b"", b""]
    with pytest.raises(ValueError, match="temperature"):
        generate(m, 1, temperature=0)


def _run(steps: int = 4) -> ARRun:
    return ARRun.from_recipe(micro_recipe(steps=steps), model=ARConfig(d_model=16, layers=1, heads=2, ffn_mult=2))


def test_training_resumes_exactly(tmp_path):
    straight = train_ar(_run(4), tmp_path / "a", log=lambda s: None)
    assert straight.step == 4 and straight.finished
    half = ARTrainer(_run(2), tmp_path / "b", log=lambda s: None)
    half.fit()
    rest = train_ar(_run(4), tmp_path / "b", resume=True, log=lambda s: None)
    assert rest.step == 4
    ma, _ = load_ar_model(tmp_path / "a")
    mb, cfg = load_ar_model(tmp_path / "b")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert cfg.model.context == micro_recipe().data.max_doc_bytes + 1
    assert is_ar_run(tmp_path / "a") and not is_ar_run(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a run"):
        ARTrainer(_run(4), tmp_path / "a")
    with pytest.raises(CheckpointError, match="missing file"):
        read_ar_run(tmp_path)


def test_a_time_budget_stops_training(tmp_path):
    run = _run(10_000).model_copy(update={"seconds": 1.0})
    res = train_ar(run, tmp_path / "t", log=lambda s: None)
    assert res.finished and 0 < res.step < 10_000


def test_cli_trains_and_eval_scores_the_run(tmp_path):
    import yaml

    from zonkey.core.recipe import recipe_to_dict

    recipe = tmp_path / "micro.yaml"
    recipe.write_text(yaml.safe_dump(recipe_to_dict(micro_recipe(steps=3))))
    run = tmp_path / "ar"
    r = CliRunner().invoke(app, ["baseline", "ar", str(recipe), "--out", str(run), "--d-model", "16",
                                 "--layers", "1", "--heads", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["step"] == 3 and (run / "baseline.json").is_file()
    r = CliRunner().invoke(app, ["eval", str(run), "--samples", "3", "--infill", "2", "--candidates", "20",
                                 "--max-batches", "1", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["kind"] == "ar" and res["bits_per_byte"] > 0
    assert set(res["samples"]["rows"]) == {"generated", "real", "repeat", "shuffled"}
    assert res["infill"]["n"] == 2 and res["infill"]["candidates"] == 20
    r = CliRunner().invoke(app, ["eval", str(run), "--samples", "2", "--infill", "0", "--max-batches", "1"])
    assert r.exit_code == 0 and "bits per byte" in r.stdout
    r = CliRunner().invoke(app, ["baseline", "sample", str(run), "-n", "2", "--max-bytes", "8", "--json"])
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 2
    r = CliRunner().invoke(app, ["baseline", "ar", str(recipe), "--out", str(tmp_path / "x"), "--d-model", "18",
                                 "--heads", "4"])
    assert r.exit_code == 2 and "divisible" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["baseline", "sample", str(tmp_path)])
    assert r.exit_code == 1 and "baseline.json" in r.output


@pytest.mark.learning
def test_the_baseline_learns_held_out_text(tmp_path):
    """150 steps on the micro data: held-out 3.89 bits per byte when measured (uniform bytes: 8)."""
    from zonkey.baselines.ar_eval import heldout_bits
    from zonkey.data import load_corpus

    run = ARRun.from_recipe(micro_recipe(steps=150, lr=0.003, warmup_steps=10),
                            model=ARConfig(d_model=32, layers=2, heads=2))
    train_ar(run, tmp_path / "ar", log=lambda s: None)
    model, cfg = load_ar_model(tmp_path / "ar")
    bits = heldout_bits(model, load_corpus(cfg.data).batches("heldout", batch_bytes=cfg.data.batch_bytes))
    assert bits["bits_per_byte"] < 4.2, bits
