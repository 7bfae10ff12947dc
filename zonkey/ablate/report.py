"""``ablation.json`` and ``ablation.md``: every metric of every variant, mean ± std over its seeds.

Each cell's ``zonkey eval`` result is flattened to dotted keys (``boundary.word.f1``,
``recon_acc_noise.0.3``, ``samples.rows.generated.judge_bpb``, ``steps_table.T30.valid_word_rate``,
``noisy.boundary_f1``); its training adds ``train.seconds``, ``train.bytes_per_s`` and the curve
summary (``train.edge_f1_auc``, ``train.steps_to_edge_f1_0.8`` ...). The std is the sample standard
deviation over seeds (0 for one seed); a metric a seed lacks is averaged over the others (``n``
says over how many).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zonkey.ablate.grid import Grid
from zonkey.io import atomic_write_bytes, atomic_write_json

SKIP = {"examples", "items", "judge", "checkpoint", "candidates_list", "traceback"}
#: the columns of the headline table (label, metric), shown where some variant has the metric
HEADLINE = (
    # each run's F1 under the convention it learned (word or space): a word-start F1 beside it would read
    # near 0 for every splitter that marks the space before a word
    ("boundary F1", "boundary_f1"), ("segment", "mean_segment_bytes"),
    ("recon t=0", "recon_acc"), ("recon σ0.3", "recon_acc_noise.0.3"), ("recon σ0.5", "recon_acc_noise.0.5"),
    ("L1 recon", "l1_recon_acc"), ("round trip", "roundtrip_char_acc"), ("bits/B", "bits_per_byte"),
    ("valid words", "samples.valid_word_rate"), ("judge bits/B", "samples.rows.generated.judge_bpb"),
    ("infill EM", "infill.exact_match"), ("noisy F1", "noisy.boundary_f1"), ("noisy recon", "noisy.recon_acc"),
    ("edge F1 AUC (train)", "train.edge_f1_auc"), ("steps to F1 0.8", "train.steps_to_edge_f1_0.8"), ("train B/s", "train.bytes_per_s"),
)


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a nested result as ``{dotted.key: value}`` (booleans and strings left out).

    A list of rows with a ``steps`` field (the steps table) is keyed ``T<steps>``; other lists are left out.
    """
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in SKIP:
                continue
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        if obj and all(isinstance(r, dict) and "steps" in r for r in obj):
            for r in obj:
                out.update(flatten({k: v for k, v in r.items() if k != "steps"}, f"{prefix}T{r['steps']}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and math.isfinite(float(obj)):
        out[prefix[:-1]] = float(obj)
    return out


def cell_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Every metric of one cell's result (its eval, training and curve)."""
    m = flatten(result.get("eval", {}))
    m.update(flatten(result.get("train", {}), "train."))
    m.update(flatten(result.get("curve", {}), "train."))
    return m


def _stats(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "values": list(values)}


def aggregate(grid: Grid, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ablation's JSON: the grid and, per variant, every metric's mean, std and values over seeds."""
    rows = []
    for v in grid.variants:
        mine = [r for r in results if r.get("variant") == v.name and r.get("status") in ("done", "skipped")]
        per = [cell_metrics(r) for r in mine]
        keys = sorted({k for m in per for k in m})
        rows.append({"name": v.name, "overrides": v.overrides, "baseline": v.baseline,
                     "seeds": [r["seed"] for r in mine], "runs": [r["run_dir"] for r in mine],
                     "metrics": {k: _stats([m[k] for m in per if k in m]) for k in keys}})
    failed = [{k: r.get(k) for k in ("variant", "seed", "run_dir", "error")} for r in results
              if r.get("status") == "failed"]
    return {"recipe": str(grid.recipe_path), "recipe_name": grid.recipe.name, "out": str(grid.out),
            "swaps": grid.spec.swaps, "seeds": grid.seeds, "steps": grid.spec.steps or grid.recipe.train.steps,
            "extra_overrides": grid.extra, "eval": grid.spec.eval.model_dump(), "variants": rows, "failed": failed}


def _cell(stats: dict[str, Any] | None) -> str:
    if stats is None:
        return "—"
    mean, std = stats["mean"], stats["std"]
    digits = 0 if abs(mean) >= 1000 else 4 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if stats["n"] > 1 else f"{mean:.{digits}f}"


def markdown(report: dict[str, Any], command: str = "") -> str:
    """``ablation.md``: the command, a headline table (a row per variant) and every metric (a row per metric)."""
    variants = report["variants"]
    lines = [f"# Ablation of `{report['recipe_name']}`", ""]
    if command:
        lines += ["Made by:", "", "```", command, "```", ""]
    lines += [f"Seeds {', '.join(map(str, report['seeds']))}; {report['steps']} training steps per run; values are "
              "mean ± std over the seeds (sample standard deviation).", ""]
    cols = [(label, key) for label, key in HEADLINE if any(key in v["metrics"] for v in variants)]
    if cols:
        lines += ["| variant | seeds | " + " | ".join(label for label, _ in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for v in variants:
            cells = [_cell(v["metrics"].get(key)) for _, key in cols]
            lines.append(f"| {v['name']} | {len(v['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    if report["failed"]:
        lines += ["Failed runs:", ""] + [f"- {f['variant']} seed {f['seed']}: {f['error']}" for f in report["failed"]]
        lines.append("")
    keys = sorted({k for v in variants for k in v["metrics"]})
    lines += ["## Every metric", "", "| metric | " + " | ".join(v["name"] for v in variants) + " |",
              "|---|" + "---|" * len(variants)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_cell(v["metrics"].get(k)) for v in variants) + " |")
    return "\n".join(lines) + "\n"


def write_report(grid: Grid, results: Sequence[dict[str, Any]], command: str = "") -> tuple[Path, Path]:
    """Write ``OUT/ablation.json`` and ``OUT/ablation.md`` (atomically).

    Returns:
        Their paths.
    """
    report = aggregate(grid, results)
    report["command"] = command
    grid.out.mkdir(parents=True, exist_ok=True)
    j = atomic_write_json(grid.out / "ablation.json", report)
    md = atomic_write_bytes(grid.out / "ablation.md", markdown(report, command).encode("utf-8"))
    return j, md
