"""What ``zonkey eval`` computes, as one settings object, and its diffusion-run half.

:class:`EvalSettings` holds every option of ``zonkey eval``; :func:`eval_corpus` builds the text an
evaluation reads (the recipe's held-out split or another source, made noisy on request, and the
training split the vocabulary, judge and baselines come from); :func:`evaluate_model` computes
every level's held-out metrics (:func:`zonkey.core.evaluate.heldout.evaluate`) and the generation
sections (:func:`zonkey.core.evaluate.generation.evaluate_generation`) of a diffusion model.

The one call that evaluates a run directory of either kind is :func:`zonkey.api.evaluate`; the
autoregressive baseline's half lives with the baseline (:mod:`zonkey.baselines.ar_eval`), since
nothing in core imports the baselines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zonkey.core.contracts.outputs import ProgressFn
from zonkey.core.evaluate.judge import DEFAULT_ORDER
from zonkey.core.recipe import DataConfig

#: most texts, problems or items one evaluation section may ask for
MAX_COUNT = 1_000_000
#: most sampler steps of the reconstruction from noise
MAX_STEPS = 100_000


class EvalSettings(BaseModel):
    """What an evaluation computes: every option of ``zonkey eval``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str | None = Field(default=None, description="evaluate on this source instead of the recipe's held-out "
                                                       "split ('wiki', a .txt/.jsonl/.parquet file or folder)")
    max_batches: int | None = Field(default=None, ge=1, description="held-out batches read at most (null: all)")
    samples: int = Field(default=200, ge=0, le=MAX_COUNT,
                         description="texts generated for the sample metrics (0: none)")
    infill: int = Field(default=500, ge=0, le=MAX_COUNT, description="held-out sentences infilled (0: none)")
    infill_items: tuple[tuple[str, str, str], ...] | None = Field(
        default=None, description="the user's own (prefix, suffix, answer) infill items, scored as well")
    steps_table: bool = Field(default=False, description="also score the samples at T = 5, 10, 30 and 100")
    prior_positions: int = Field(default=2000, ge=0, le=MAX_COUNT, description="held-out positions at which a "
                                 "vocabulary-headed prior's conditional likelihood is scored (0: none)")
    throughput: int = Field(default=0, ge=0, le=MAX_COUNT,
                            description="with samples or the steps table: time one call of this many samples")
    candidates: int = Field(default=2000, ge=1, le=MAX_COUNT,
                            description="autoregressive runs: infill candidates rescored")
    steps: int = Field(default=4, ge=1, le=MAX_STEPS,
                       description="sampler steps back from each noise level of the reconstruction")
    seed: int = 0
    judge_order: int = Field(default=DEFAULT_ORDER, ge=1, le=7)
    ema: bool = True
    verify: bool = Field(default=True, description="check the checkpoint's files against their SHA-256")
    noise: str | None = Field(default=None, description="typos=RATE: evaluate on noisy held-out text")
    sample_sets: tuple[str, ...] = Field(default=(), description="sample.key=value overrides of the run's "
                                                                 "generation settings (diffusion runs)")


def eval_corpus(data: DataConfig, settings: EvalSettings) -> tuple[Any, list[bytes], dict[str, Any] | None]:
    """The corpus an evaluation reads, the training documents and the noise applied.

    Args:
        data: the run's data section.
        settings: the evaluation's settings (``data`` replaces the source, ``noise`` makes the
            held-out text noisy).

    Returns:
        the corpus (held-out split possibly noisy), the run's own training documents (the
        vocabulary, judge and baselines come from them, whatever ``data`` says), and the noise
        report (None without noise).

    Raises:
        NoiseSpecError: a noise spec that cannot be read.
        DataError: a source that cannot be read.
    """
    from zonkey.data import load_corpus
    from zonkey.data.noise import noisy_corpus, parse_noise

    spec = parse_noise(settings.noise) if settings.noise is not None else None
    dcfg = data if settings.data is None else data.model_copy(update={"source": settings.data})
    corpus = load_corpus(dcfg)
    train_docs = (corpus if settings.data is None else load_corpus(data)).documents("train")
    info = None
    if spec is not None:
        corpus, info = noisy_corpus(corpus, spec, settings.seed)
    return corpus, train_docs, info


def evaluate_model(model: Any, run: str | Path, settings: EvalSettings,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Every metric ``zonkey eval`` reports for a diffusion model loaded from ``run``.

    Args:
        model: the :class:`~zonkey.core.model.network.ZonkeyModel`, with ``settings.sample_sets``
            already applied.
        run: its run or step directory (the judge is cached in the run).
        settings: what to compute.
        progress: ``progress(done, total)`` over the held-out batches, then over the infill problems.

    Returns:
        the result dict of ``zonkey eval --json``.
    """
    from zonkey.core.evaluate.generation import evaluate_generation, run_directory
    from zonkey.core.evaluate.heldout import evaluate

    s = settings
    corpus, train_docs, info = eval_corpus(model.recipe.data, s)
    res = evaluate(model, corpus, batch_bytes=model.recipe.data.batch_bytes, seed=s.seed,
                   max_batches=s.max_batches, steps=s.steps, progress=progress)
    if s.samples or s.infill or s.steps_table or s.infill_items:
        res.update(evaluate_generation(model, train_docs, corpus.documents("heldout"), samples=s.samples,
                                       infill=s.infill, seed=s.seed, with_steps_table=s.steps_table,
                                       throughput_n=s.throughput if s.samples or s.steps_table else 0,
                                       infill_items=s.infill_items, cache_dir=run_directory(run),
                                       judge_order=s.judge_order, progress=progress))
    if s.prior_positions:
        from zonkey.core.evaluate.prior import prior_likelihood

        found = prior_likelihood(model, train_docs, corpus.documents("heldout"), positions=s.prior_positions,
                                 seed=s.seed)
        if found is not None:
            res["prior"] = found
    if info is not None:
        res["noise"] = info
    res["checkpoint"] = str(run)
    return res
