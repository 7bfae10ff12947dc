"""The ablation grid: swaps read from the command line or a recipe's `ablation:` block, the variants
they make, the recipe's own component kept, and the report's mean ± std over seeds."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.helpers import micro_recipe
from zonkey.ablate.grid import GridError, build_variants, load_grid, parse_swap, split_values
from zonkey.ablate.report import aggregate, flatten, markdown
from zonkey.core.recipe import RecipeError, recipe_to_dict

ROOT_RECIPES = ["ablations/splitter", "ablations/objective", "ablations/attention"]


def _recipe(tmp_path, ablation=None):
    data = recipe_to_dict(micro_recipe())
    if ablation is not None:
        data["ablation"] = ablation
    p = tmp_path / "micro.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_values_split_outside_braces():
    assert split_values("a,{name: fixed, every: 5},[1, 2], b") == ["a", "{name: fixed, every: 5}", "[1, 2]", "b"]
    keys, vals = parse_swap("model.levels.0.splitter,model.levels.0.objective=learned,{name: fixed, every: 4},3")
    assert keys == ["model.levels.0.splitter", "model.levels.0.objective"]
    assert vals == ["learned", {"name": "fixed", "every": 4}, 3]


@pytest.mark.parametrize(("text", "msg"), [("nokey", "KEY=VALUE"), ("a..b=1", "empty key"), ("a=", "empty value"),
                                           ("a=1,,2", "empty value"), ("a={x: [}", "YAML")])
def test_bad_swaps(text, msg):
    with pytest.raises(GridError, match=msg):
        parse_swap(text)


def test_the_recipes_own_component_is_kept_and_others_swapped():
    base = recipe_to_dict(micro_recipe())
    vs = build_variants({"model.levels.0.splitter": ["learned", "fixed"], "train.lr": [0.001, 0.002]}, base)
    assert [v.name for v in vs] == ["splitter=learned+lr=0.001", "splitter=learned+lr=0.002",
                                    "splitter=fixed+lr=0.001", "splitter=fixed+lr=0.002"]
    assert vs[0].overrides == ["train.lr=0.001"]  # learned as the recipe configures it
    assert vs[2].overrides == ["model.levels.0.splitter=fixed", "train.lr=0.001"]
    two = build_variants({"model.levels.0.objective,model.attention": ["flow"]}, base)
    assert two[0].overrides == ["model.levels.0.objective=flow", "model.attention=flow"]


def test_a_grid_from_the_command_line_and_from_the_recipe(tmp_path):
    p = _recipe(tmp_path, {"swaps": {"model.levels.0.splitter": ["learned", "whitespace"]}, "seeds": 2,
                           "eval": {"samples": 0, "infill": 0}})
    g = load_grid(p, out=tmp_path / "out")
    assert [v.name for v in g.variants] == ["splitter=learned", "splitter=whitespace"] and g.seeds == [3, 4]
    assert g.run_dir(g.variants[1], 4) == tmp_path / "out" / "splitter=whitespace" / "seed-4"
    assert g.cell_recipe(g.variants[1], 4).model.levels[0].splitter.registered_name == "whitespace"
    g2 = load_grid(p, swaps=["model.attention=sdpa,hard"], seeds=1, steps=5, baselines=["ar"],
                   eval_updates={"samples": 3})
    assert [v.name for v in g2.variants] == ["attention=sdpa", "attention=hard", "baseline=ar"]
    assert g2.cell_recipe(g2.variants[0], 3).train.steps == 5 and g2.spec.eval.samples == 3
    assert g.fingerprint(g.variants[0], 3) != g2.fingerprint(g2.variants[0], 3)


def test_bad_grids_name_the_problem(tmp_path):
    p = _recipe(tmp_path)
    with pytest.raises(GridError, match="nothing to ablate"):
        load_grid(p)
    with pytest.raises(RecipeError, match="variant splitter=nosuch"):
        load_grid(p, swaps=["model.levels.0.splitter=nosuch"])
    with pytest.raises(GridError, match="unknown baseline"):
        load_grid(p, swaps=["train.lr=0.1"], baselines=["gpt"])
    bad = _recipe(tmp_path, {"swaps": {"train.lr": [0.1]}, "seeds": 0})
    with pytest.raises(GridError, match="ablation.seeds"):
        load_grid(bad)


@pytest.mark.parametrize("name", ROOT_RECIPES)
def test_the_bundled_ablations_have_grids(name):
    from zonkey.cli.common import recipe_path

    g = load_grid(recipe_path(name))
    assert len(g.variants) >= 2 and g.seeds == [0, 1, 2]
    raw = yaml.safe_load(recipe_path(name).read_text())
    assert raw["base"] == "tiny" and "model" not in raw


def test_flatten_and_mean_std(tmp_path):
    res = {"boundary": {"word": {"f1": 0.5}}, "recon_acc_noise": {"0.3": 0.9}, "examples": [1.0], "flag": True,
           "steps_table": [{"steps": 10, "judge_bpb": 3.0}], "nan": float("nan")}
    assert flatten(res) == {"boundary.word.f1": 0.5, "recon_acc_noise.0.3": 0.9, "steps_table.T10.judge_bpb": 3.0}
    g = load_grid(_recipe(tmp_path), swaps=["model.levels.0.splitter=learned,fixed"], seeds=2)
    results = [{"variant": "splitter=learned", "seed": s, "run_dir": "r", "status": "done",
                "eval": {"recon_acc": v}, "train": {"bytes_per_s": 100.0}} for s, v in ((3, 0.5), (4, 0.7))]
    results.append({"variant": "splitter=fixed", "seed": 3, "status": "failed", "error": "boom", "run_dir": "x"})
    rep = aggregate(g, results)
    m = rep["variants"][0]["metrics"]["recon_acc"]
    assert m["mean"] == pytest.approx(0.6) and m["std"] == pytest.approx(math.sqrt(0.02)) and m["n"] == 2
    assert rep["variants"][1]["metrics"] == {} and rep["failed"][0]["error"] == "boom"
    md = markdown(rep, "zonkey ablate x")
    assert "| splitter=learned | 2 | 0.6000 ± 0.1414 |" in md and "boom" in md and "zonkey ablate x" in md


def test_curve_summary_scores_each_step_by_the_better_edge_convention(tmp_path):
    from zonkey.ablate.runner import curve_summary

    rows = [{"step": 50, "l0.word_f1": 0.1, "l0.space_f1": 0.6, "l0.token": 2.0},
            {"step": 100, "l0.word_f1": 0.85, "l0.space_f1": 0.2, "l0.token": 1.0},
            {"step": 150, "l0.word_f1": 0.3, "l0.space_f1": 0.95, "l0.token": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    out = curve_summary(tmp_path)
    assert out["edge_f1_auc"] == pytest.approx((0.6 + 0.85 + 0.95) / 3)
    assert out["word_f1_auc"] == pytest.approx((0.1 + 0.85 + 0.3) / 3)
    assert out["steps_to_edge_f1_0.8"] == 100.0 and out["steps_to_space_f1_0.8"] == 150.0
    assert out["steps_to_word_f1_0.9"] is None and out["steps_to_edge_f1_0.9"] == 150.0
    assert out["space_f1_final"] == 0.95 and out["final.l0.token"] == 0.5
