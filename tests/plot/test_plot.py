"""`zonkey plot`: PNG files of non-trivial size and content for a run and for an ablation, the
attention adjustment as probabilistic attention defines it, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app
from zonkey.plot.run_plots import attention_bias, heldout_sentences


def _assert_real_png(path, min_bytes=10_000):
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > min_bytes, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path}: {len(colours)} colours (an empty figure?)"
    assert float(img[..., :3].std()) > 0.05


def test_plot_a_run(tmp_path):
    run = train_micro_run(tmp_path, steps=4)
    r = CliRunner().invoke(app, ["plot", str(run), "--out", str(tmp_path / "figs")])
    assert r.exit_code == 0, r.output
    names = {p.split("/")[-1] for p in r.stdout.split()}
    assert names == {"curves.png", "boundaries.png", "bos.png", "attention.png"}
    for n in names:
        _assert_real_png(tmp_path / "figs" / n)
    r = CliRunner().invoke(app, ["plot", str(run), "--text", "The river flows through the old city."])
    assert r.exit_code == 0 and (run / "plots" / "bos.png").is_file()


def test_plot_an_ablation(tmp_path):
    report = {"recipe_name": "x", "seeds": [0, 1], "variants": [
        {"name": n, "metrics": {"boundary_f1": {"mean": m, "std": 0.05, "n": 2},
                                "recon_acc": {"mean": 0.9, "std": 0.01, "n": 2}}}
        for n, m in (("splitter=learned", 0.9), ("splitter=fixed", 0.3), ("splitter=entropy", 0.85))]}
    (tmp_path / "ablation.json").write_text(json.dumps(report))
    r = CliRunner().invoke(app, ["plot", str(tmp_path)])
    assert r.exit_code == 0, r.output
    _assert_real_png(tmp_path / "plots" / "ablation.png")


def test_attention_bias_is_the_existence_ratio_above_the_diagonal():
    le = torch.log(torch.tensor([1.0, 1.0, 0.5, 0.1, 0.0]))
    b = attention_bias(le)
    assert b.shape == (5, 5) and torch.equal(torch.tril(b), torch.zeros(5, 5))
    assert float(b[0, 2]) == pytest.approx(np.log(0.5)) and float(b[2, 3]) == pytest.approx(np.log(0.2))
    assert bool((b <= 0).all()) and bool(torch.isfinite(b).all())


def test_heldout_sentences():
    docs = [b"Short. This sentence is long enough to be drawn here. Another one that fits the figure.", b"x" * 500]
    got = heldout_sentences(docs, 3)
    assert got[:2] == ["This sentence is long enough to be drawn here.", "Another one that fits the figure."]
    assert len(got) == 3 and len(got[2].encode()) <= 72


def test_plot_errors_are_one_line(tmp_path):
    for path, msg in ((tmp_path / "nothing", "no such run"), (tmp_path, "neither a run")):
        r = CliRunner().invoke(app, ["plot", str(path)])
        assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output
