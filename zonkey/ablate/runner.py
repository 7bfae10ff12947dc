"""Training and evaluating the cells of an ablation grid, resumably, in one process or several.

A cell's run directory ends with ``eval.json`` (the evaluation, with the cell's fingerprint) and
``train.json`` (steps, seconds, bytes and bytes/s of its training, summed over resumed sessions).
A cell whose ``eval.json`` carries the current fingerprint is finished and skipped; one with a
checkpoint short of its steps is resumed; one trained to its steps is only evaluated; a folder
with no checkpoint is started afresh.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from zonkey.ablate.grid import Grid, Variant
from zonkey.core.evaluate.run import EvalSettings
from zonkey.errors import ZonkeyError
from zonkey.fsguard import read_regular
from zonkey.inputs import parse_json
from zonkey.io import atomic_write_json, inside, read_json

EVAL_FILE = "eval.json"
TRAIN_FILE = "train.json"


@dataclass
class Cell:
    """One (variant, seed) of a grid, as a worker receives it (plain data, picklable)."""

    variant: str
    seed: int
    run_dir: str
    recipe_path: str
    overrides: list[str]
    baseline: str | None
    fingerprint: str
    eval: dict[str, Any]
    threads: int = 1


def cells_of(grid: Grid, threads: int = 1) -> list[Cell]:
    """Every cell of ``grid``, variant by variant, seed by seed."""
    out = []
    for v in grid.variants:
        for s in grid.seeds:
            out.append(Cell(v.name, s, str(grid.run_dir(v, s)), str(grid.recipe_path), grid.overrides(v, s),
                            v.baseline, grid.fingerprint(v, s), grid.spec.eval.model_dump(), threads))
    return out


def _saved_step(run: Path) -> int | None:
    """The step of a run's newest checkpoint (None: no checkpoint)."""
    from zonkey.core.checkpoint import find_latest_checkpoint

    step_dir = find_latest_checkpoint(run)
    if step_dir is None:
        return None
    state = read_json(inside(run, step_dir / "state.json", str(run)))
    return int(state["step"]) if isinstance(state, dict) and isinstance(state.get("step"), int) else None


def _finished(run: Path, fingerprint: str) -> dict[str, Any] | None:
    """The cell's saved result when it finished with this fingerprint."""
    f = run / EVAL_FILE
    if not f.is_file():
        return None
    inside(run, f, str(run))
    try:
        saved = parse_json(read_regular(f, str(f)), str(f))
    except ZonkeyError:
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fingerprint else None


def training_hash(recipe: Any, baseline: str | None) -> str:
    """A hash of what a run trains, its step count left out (more steps continue the same run)."""
    from zonkey.core.recipe import recipe_to_dict

    d = recipe_to_dict(recipe)
    d["train"] = {k: v for k, v in d["train"].items() if k != "steps"}
    return hashlib.sha256(json.dumps({"recipe": d, "baseline": baseline}, sort_keys=True).encode()).hexdigest()[:16]


def _train(cell: Cell, log: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume) the cell's run; its training summary, summed over sessions."""
    from zonkey.core.recipe import Recipe

    run = Path(cell.run_dir)
    recipe = Recipe.load(cell.recipe_path, cell.overrides)
    steps = recipe.train.steps
    saved = _saved_step(run)
    prev = read_json(inside(run, run / TRAIN_FILE, str(run))) if (run / TRAIN_FILE).is_file() else {}
    same = training_hash(recipe, cell.baseline)
    if saved is not None and prev and prev.get("training") != same:
        raise RuntimeError(f"{run} holds a run of another recipe or baseline; remove it or choose another --out")
    if saved is not None and saved >= steps and prev:
        return prev
    if saved is None and run.exists():
        shutil.rmtree(run)  # a start that never reached a checkpoint: begin again cleanly
        prev = {}
    resume = saved is not None
    if cell.baseline == "ar":
        from zonkey.baselines.ar_run import ARRun, train_ar

        r = train_ar(ARRun.from_recipe(recipe), run, resume=resume, log=log)
        seconds, nbytes, step = r.seconds, r.bytes_per_s * r.seconds, r.step
    else:
        from zonkey.core.train.trainer import Trainer

        res = Trainer(recipe, run, resume=resume, progress=False, log=log).fit()
        seconds, nbytes, step = res.seconds, res.bytes_seen, res.step
    total_s = float(prev.get("seconds", 0.0)) + seconds
    total_b = float(prev.get("bytes", 0.0)) + nbytes
    out = {"steps": step, "seconds": round(total_s, 2), "bytes": int(total_b),
           "bytes_per_s": round(total_b / max(total_s, 1e-9), 1), "training": same}
    atomic_write_json(run / TRAIN_FILE, out)
    return out


def curve_summary(run: Path) -> dict[str, float | None]:
    """How fast the level-0 splitter found word edges, and the last loss terms, from ``metrics.jsonl``.

    Both are of training batches, not held-out text. Word edges are scored two ways, as the
    evaluation's ``boundary_f1`` is: a BOS on each word's first byte (``word``) or on the space before
    it (``space``, where a causal splitter puts it); ``edge`` is the better of the two at each
    logged step, so a splitter is scored by the convention it learned.

    Returns:
        for each of ``word``, ``space`` and ``edge``: ``<kind>_f1_final`` (last logged),
        ``<kind>_f1_auc`` (mean over the logged steps) and ``steps_to_<kind>_f1_{0.5,0.8,0.9}``
        (first logged step at or above it; None: never); and ``final.l<i>.<term>``, every loss term
        of the last logged row (level 1's ``mlm`` among them); empty when nothing was logged.
    """
    path = run / "metrics.jsonl"
    logged: list[dict[str, Any]] = []
    if path.is_file():
        inside(run, path, str(run))
        for line in read_regular(path, str(path)).decode("utf-8", "replace").splitlines():
            try:
                row = parse_json(line, str(path))
            except ZonkeyError:
                continue
            if isinstance(row, dict):
                logged.append(row)
    out: dict[str, float | None] = {}
    if logged:
        from zonkey.core.recipe import LossWeights

        last = logged[-1]
        out.update({f"final.{k}": float(v) for k, v in last.items() if isinstance(v, (int, float))
                    and "." in k and k.split(".", 1)[1] in LossWeights.model_fields and k[0] == "l"})
    def num(r: dict[str, Any], key: str) -> float | None:
        v = r.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    curves: dict[str, list[tuple[int, float]]] = {"word": [], "space": [], "edge": []}
    for r in logged:
        word, space = num(r, "l0.word_f1"), num(r, "l0.space_f1")
        step = int(r.get("step", 0))
        for kind, v in (("word", word), ("space", space)):
            if v is not None:
                curves[kind].append((step, v))
        if word is not None or space is not None:
            curves["edge"].append((step, max(v for v in (word, space) if v is not None)))
    for kind, rows in curves.items():
        if rows:
            out.update({f"{kind}_f1_final": rows[-1][1], f"{kind}_f1_auc": sum(f for _, f in rows) / len(rows)})
            for t in (0.5, 0.8, 0.9):
                out[f"steps_to_{kind}_f1_{t}"] = next((float(s) for s, f in rows if f >= t), None)
    return out


def run_cell(cell: Cell, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, evaluate and save one cell (or read it back when it is finished).

    Returns:
        ``{variant, seed, run_dir, status, train, eval, curve}``; ``status`` is ``done``, ``skipped``
        or ``failed`` (with ``error``). A failure is reported, never raised: the grid goes on.
    """
    import torch

    torch.set_num_threads(max(cell.threads, 1))
    run = Path(cell.run_dir)
    tag = f"[{cell.variant} seed {cell.seed}] "
    say = log or (lambda s: print(tag + s, file=sys.stderr, flush=True))
    head = {"variant": cell.variant, "seed": cell.seed, "run_dir": cell.run_dir}
    try:
        done = _finished(run, cell.fingerprint)
        if done is not None:
            # the curve is re-read from metrics.jsonl, so a report always has this code's summary of it
            return {**head, "status": "skipped", "train": done.get("train", {}), "eval": done.get("eval", {}),
                    "curve": curve_summary(run)}
        t0 = time.perf_counter()
        train = _train(cell, say)
        from zonkey.api import evaluate

        settings = EvalSettings.model_validate(cell.eval)
        result = evaluate(run, settings.model_copy(update={"noise": None}))
        if settings.noise is not None:  # the same input-reading metrics on noisy text
            noisy = evaluate(run, settings.model_copy(update={"samples": 0, "infill": 0, "steps_table": False}))
            result["noisy"] = noisy
        curve = curve_summary(run)
        atomic_write_json(run / EVAL_FILE, {"fingerprint": cell.fingerprint, "train": train, "eval": result,
                                            "curve": curve})
        say(f"done in {time.perf_counter() - t0:.0f} s")
        return {**head, "status": "done", "train": train, "eval": result, "curve": curve}
    except Exception as exc:  # one broken cell must not lose the others
        say(f"failed: {type(exc).__name__}: {exc}")
        return {**head, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5)}


def run_grid(grid: Grid, *, jobs: int = 1, threads: int = 1,
             on_result: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every cell of ``grid``: in this process (``jobs`` 1) or in ``jobs`` worker processes.

    Args:
        grid: the grid.
        jobs: cells run at once.
        threads: torch CPU threads of each cell.
        on_result: called with each cell's result as it comes.

    Returns:
        The results in cell order.
    """
    cells = cells_of(grid, threads)
    results: list[dict[str, Any] | None] = [None] * len(cells)
    if jobs <= 1:
        for i, c in enumerate(cells):
            results[i] = run_cell(c)
            if on_result is not None:
                on_result(results[i] or {})
    else:
        # spawned workers: a fresh interpreter each, nothing inherited from this process's torch state
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_cell, c): i for i, c in enumerate(cells)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if on_result is not None:
                    on_result(results[futures[fut]] or {})
    return [r for r in results if r is not None]


def variant_of(grid: Grid, name: str) -> Variant:
    """The variant of ``grid`` called ``name``."""
    return next(v for v in grid.variants if v.name == name)
