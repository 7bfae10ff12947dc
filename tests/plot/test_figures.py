"""Figures that cannot mislead: curriculum ramps shaded, held-out curves marked, one boundary convention
per run (named), y-axes fitted to the data, and ``zonkey plot --format png|pdf|svg``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import train_micro_run
from zonkey.cli.app import app
from zonkey.plot.ablation_plots import ablation_figure, y_range
from zonkey.plot.run_plots import boundaries_figure, boundary_convention, curves_figure, ramp_spans

runner = CliRunner()


def _ramp_rows() -> list[dict]:
    """Rows as tiny logs them: level 1 ramps in over steps 600-900, its bos term over 900-1100."""
    rows = []
    for s in range(400, 1201, 50):
        w1 = min(max((s - 600) / 300, 0.0), 1.0)
        wb = min(max((s - 900) / 200, 0.0), 1.0)
        rows.append({"step": s, "loss": 0.8 + 8 * w1, "l0.token": 0.5, "l1.recon_clean": 2.0, "w.l1": w1,
                     "w.l1.bos": wb, "l0.word_f1": 0.06, "l0.space_f1": 0.93})
    for r in rows[::4]:
        r.update({"val.loss": r["loss"] + 0.1, "val.l0.token": 0.6, "val.l0.word_f1": 0.05, "val.l0.space_f1": 0.9})
    return rows


def test_ramp_spans_come_from_the_logged_weights_one_per_term_or_shared_range() -> None:
    assert ramp_spans(_ramp_rows()) == [(600, 900, ["l1"]), (900, 1100, ["l1.bos"])]
    rows = [{"step": s, "w.l0.diffusion": min(max((s - 300) / 400, 0), 1), "w.l0.collapse": min(max((s - 300) / 400, 0), 1),
             "w.l1": 1.0 if s >= 900 else 0.0} for s in range(100, 1201, 100)]
    assert ramp_spans(rows) == [(300, 700, ["l0.collapse", "l0.diffusion"]), (800, 900, ["l1"])]
    assert ramp_spans([{"step": 1, "loss": 1.0}]) == []


def test_curves_shade_the_ramps_and_draw_held_out_curves_dashed() -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure(_ramp_rows())
    total = fig.axes[0]
    assert len(total.patches) == 2 and total.patches[0].get_label() == "curriculum ramp"
    labels = [t.get_text().strip() for t in total.texts]
    assert labels == ["l1 ramps", "l1: bos ramps"]
    val = [ln for ln in total.get_lines() if "held out" in str(ln.get_label())]
    assert len(val) == 1 and val[0].get_linestyle() == "--"
    assert all(any(p.get_label() == "curriculum ramp" for p in ax.patches) for ax in fig.axes)
    plt.close(fig)


def test_one_boundary_convention_per_run_named_and_drawn_alone() -> None:
    import matplotlib.pyplot as plt

    rows = _ramp_rows()
    assert boundary_convention(rows) == "space"
    assert boundary_convention([{"step": 1, "l0.word_f1": 0.8, "l0.space_f1": 0.1,
                                 "val.l0.word_f1": 0.2, "val.l0.space_f1": 0.7}]) == "space"  # held out decides
    assert boundary_convention([{"step": 1, "l0.word_f1": 0.5, "l0.space_f1": 0.5}]) == "word"
    assert boundary_convention([{"step": 1, "loss": 1.0}]) is None
    fig = boundaries_figure(rows)
    ax = fig.axes[0]
    assert "space convention" in ax.get_title() and "whitespace before each word" in ax.get_title()
    assert sorted(str(ln.get_label()) for ln in ax.get_lines()) == ["held out (val.)", "training batches"]
    assert max(max(ln.get_ydata()) for ln in ax.get_lines()) > 0.8  # the space curve, not the word one (0.06)
    plt.close(fig)


def test_ablation_panels_are_points_on_an_axis_fitted_to_the_data() -> None:
    import matplotlib.pyplot as plt

    report = {"recipe_name": "x", "seeds": [0, 1], "variants": [
        {"name": n, "metrics": {"recon_acc": {"mean": m, "std": 0.002, "n": 2}}}
        for n, m in (("a", 0.951), ("b", 0.972), ("c", 0.990))]}
    fig = ablation_figure(report)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 0.94 < lo < 0.951 - 0.002 and 0.992 < hi < 1.0  # not from 0: the 4-point spread fills the panel
    assert not ax.patches  # no bars
    plt.close(fig)
    assert y_range([0.5], [0.0]) == pytest.approx((0.45, 0.55))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_micro_run(tmp_path_factory.mktemp("figs"), steps=4)


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<svg")])
def test_plot_writes_the_format_asked_for(run: Path, tmp_path: Path, fmt: str, magic: bytes) -> None:
    r = runner.invoke(app, ["plot", str(run), "--format", fmt, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    names = sorted(p.split("/")[-1] for p in r.stdout.split())
    assert names == sorted(f"{n}.{fmt}" for n in ("curves", "boundaries", "bos", "attention"))
    for n in names:
        head = (tmp_path / n).read_bytes()[:400]
        assert magic in head, n


def test_an_unknown_format_is_a_one_line_usage_error(run: Path) -> None:
    r = runner.invoke(app, ["plot", str(run), "--format", "jpg"])
    assert r.exit_code == 2 and "one of png, pdf, svg" in r.output and "Traceback" not in r.output


def test_curves_table_marks_ramps_and_keeps_to_the_runs_convention(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _ramp_rows()))
    r = runner.invoke(app, ["curves", str(folder), "--json"])
    assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in r.output.splitlines()]
    assert "l0.space_f1" in got[0] and "l0.word_f1" not in got[0] and "val.l0.word_f1" not in got[0]
    assert [g["step"] for g in got if g.get("ramping")] == list(range(650, 1101, 50))
    by_step = {g["step"]: g.get("ramping") for g in got}
    assert (by_step[700], by_step[950]) == ("l1", "l1.bos")
