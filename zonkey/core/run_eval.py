"""``zonkey eval`` as one library call on a run directory, for either kind of run.

A diffusion run (``recipe.json``) gets every level's held-out metrics (:func:`zonkey.core.evaluate.evaluate`)
and the generation sections (:func:`zonkey.core.gen_eval.evaluate_generation`); an autoregressive
baseline run (``baseline.json``) gets :func:`zonkey.core.ar_eval.evaluate_ar`. With ``noise`` the
held-out text is made noisy first (:mod:`zonkey.data.noise`); the training split never is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zonkey.core.judge import DEFAULT_ORDER


class EvalSettings(BaseModel):
    """What an evaluation computes (the options of ``zonkey eval``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batches: int | None = Field(default=None, ge=1, description="held-out batches read at most (null: all)")
    samples: int = Field(default=200, ge=0, description="texts generated for the sample metrics (0: none)")
    infill: int = Field(default=500, ge=0, description="held-out sentences infilled (0: none)")
    steps_table: bool = Field(default=False, description="also score the samples at T = 5, 10, 30 and 100")
    candidates: int = Field(default=2000, ge=1, description="autoregressive runs: infill candidates rescored")
    steps: int = Field(default=4, ge=1, description="sampler steps back from each noise level of the reconstruction")
    seed: int = 0
    judge_order: int = Field(default=DEFAULT_ORDER, ge=1, le=7)
    ema: bool = True
    verify: bool = Field(default=True, description="check the checkpoint's files against their SHA-256")
    noise: str | None = Field(default=None, description="typos=RATE: evaluate on noisy held-out text")


def evaluate_run(run: str | Path, settings: EvalSettings | None = None) -> dict[str, Any]:
    """Every metric ``zonkey eval`` reports for the run in ``run``.

    Args:
        run: a run or step directory, of a diffusion model or of the autoregressive baseline.
        settings: what to compute (default: ``zonkey eval``'s defaults).

    Returns:
        The result dict of ``zonkey eval --json`` (``noise`` added when the text was noisy).

    Raises:
        CheckpointError: an unreadable run.
        NoiseSpecError: a noise spec that cannot be read.
    """
    from zonkey.baselines.ar_run import is_ar_run
    from zonkey.data import load_corpus
    from zonkey.data.noise import noisy_corpus, parse_noise

    s = settings or EvalSettings()
    spec = parse_noise(s.noise) if s.noise is not None else None
    info = None
    if is_ar_run(run):
        from zonkey.baselines.ar_run import load_ar_model, run_dir_of
        from zonkey.core.ar_eval import evaluate_ar

        model, cfg = load_ar_model(run, verify=s.verify)
        corpus = load_corpus(cfg.data)
        train_docs = corpus.documents("train")
        if spec is not None:
            corpus, info = noisy_corpus(corpus, spec, s.seed)
        res = evaluate_ar(model, corpus.batches("heldout", seed=s.seed, batch_bytes=cfg.data.batch_bytes), train_docs,
                          corpus.documents("heldout"), samples=s.samples, infill=s.infill, candidates=s.candidates,
                          seed=s.seed, max_batches=s.max_batches, judge_order=s.judge_order,
                          cache_dir=str(run_dir_of(run)))
    else:
        from zonkey.core.evaluate import evaluate
        from zonkey.core.gen_eval import evaluate_generation, run_directory
        from zonkey.core.model import ZonkeyModel

        model = ZonkeyModel.from_run(run, use_ema=s.ema, verify=s.verify)
        corpus = load_corpus(model.recipe.data)
        train_docs = corpus.documents("train")
        if spec is not None:
            corpus, info = noisy_corpus(corpus, spec, s.seed)
        res = evaluate(model, corpus, batch_bytes=model.recipe.data.batch_bytes, seed=s.seed,
                       max_batches=s.max_batches, steps=s.steps)
        if s.samples or s.infill or s.steps_table:
            res.update(evaluate_generation(model, train_docs, corpus.documents("heldout"), samples=s.samples,
                                           infill=s.infill, seed=s.seed, with_steps_table=s.steps_table,
                                           throughput_n=0, cache_dir=run_directory(run),
                                           judge_order=s.judge_order))
    if info is not None:
        res["noise"] = info
    res["checkpoint"] = str(run)
    return res
