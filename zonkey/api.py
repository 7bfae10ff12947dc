"""The user API: load a trained model, split and reconstruct text, generate, infill.

Every function takes a model (from :func:`load`) or a run directory, which it loads first::

    import zonkey
    model = zonkey.load("runs/tiny")
    zonkey.split(model, ["The cat sat."])           # segments and p_bos per byte, at every level
    zonkey.reconstruct(model, ["The cat sat."])     # text -> level-0 latents -> text
    zonkey.sample(model, 4, steps=30, seed=0)       # texts generated from noise
    zonkey.infill(model, "Bob is a ", " player in the NBA", return_details=True)
    zonkey.api.evaluate("runs/tiny", samples=100, infill=100)  # what `zonkey eval` prints, as a dict

This module sits on top of :mod:`zonkey.core`; nothing in core imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import torch

from zonkey.core.contracts.outputs import ProgressFn, SampleResult
from zonkey.core.evaluate.run import EvalSettings, evaluate_model
from zonkey.core.generate.infill import infill as _infill
from zonkey.core.generate.sample import sample as _sample
from zonkey.core.model.inference import reconstruct_texts, split_texts
from zonkey.core.model.network import ZonkeyModel

__all__ = ["EvalSettings", "evaluate", "infill", "load", "reconstruct", "sample", "split"]

ModelOrRun = Union[ZonkeyModel, str, "os.PathLike[str]"]


def load(run_dir: str | os.PathLike[str], *, use_ema: bool = True,
         device: str | torch.device = "cpu", verify: bool = True) -> ZonkeyModel:
    """Rebuild a trained model from a run directory (``recipe.json`` + the newest checkpoint).

    Args:
        run_dir: a run directory, or one checkpoint directory inside it.
        use_ema: use the EMA weights where the checkpoint has them.
        device: where to put the model.
        verify: check the checkpoint files against the SHA-256 recorded when they were saved.

    Returns:
        the model, in eval mode.

    Raises:
        CheckpointError: a missing or invalid recipe, no checkpoint, corrupt or mismatched weights.
    """
    return ZonkeyModel.from_run(Path(run_dir), use_ema=use_ema, device=device, verify=verify)


def _model(model: ModelOrRun) -> ZonkeyModel:
    return model if isinstance(model, ZonkeyModel) else load(model)


def _texts(texts: Sequence[str] | str) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def split(model: ModelOrRun, texts: Sequence[str] | str) -> list[dict[str, Any]]:
    """The deterministic segmentation of each text.

    Args:
        model: a model or a run directory.
        texts: one text or several.

    Returns:
        per text ``{text, segments, p_bos, starts}`` (level 0: the segments' strings, the BOS
        probability of every UTF-8 byte, the byte offsets of the BOS positions) and, with two or
        more levels, ``levels``: per level ``{segments, p_bos}``, each level grouping the units of
        the level below.
    """
    return [t.as_dict() for t in split_texts(_model(model), _texts(texts))]


def reconstruct(model: ModelOrRun, texts: Sequence[str] | str, *, sigma: float = 0.0, steps: int = 4,
                seed: int = 0) -> list[str]:
    """Round trip text -> level-0 latents -> text, optionally noised to ``sigma`` first.

    Args:
        model: a model or a run directory.
        texts: one text or several.
        sigma: noise level in [0, 1], along level 0's own objective path; 0 decodes the clean latents.
        steps: sampler steps back from ``sigma`` to 0.
        seed: seed of the noise.

    Returns:
        the reconstruction of each text.

    Raises:
        ValueError: sigma outside [0, 1] or steps below 0.
    """
    return reconstruct_texts(_model(model), _texts(texts), sigma=sigma, steps=steps, seed=seed)


def sample(model: ModelOrRun, n: int = 4, *, steps: int | None = None, seed: int = 0, level: int | None = None,
           return_details: bool = False, **kwargs: Any) -> list[str] | SampleResult:
    """Generate ``n`` texts from noise (§9.1), starting at ``level`` (default: the top level).

    Args:
        model: a model or a run directory.
        n: number of texts.
        steps: denoising steps at the starting level (default: the recipe's ``sample.steps``).
        seed: seed of all noise.
        level: the level drawn from the prior.
        return_details: return the whole :class:`~zonkey.core.contracts.outputs.SampleResult`.
        **kwargs: ``segments``, ``epsilon``, ``trace``, ``progress`` of :func:`zonkey.core.generate.sample.sample`.

    Returns:
        the texts, or the SampleResult with ``return_details``.

    Raises:
        ValueError: a level that does not exist, or n, steps or segments below 1.
    """
    res = _sample(_model(model), n, steps=steps, seed=seed, level=level, **kwargs)
    return res if return_details else res.texts


def infill(model: ModelOrRun, prefix: str, suffix: str, *, level: int | None = None,
           gap: tuple[int, int] | int | None = None, steps: int | None = None, seed: int = 0,
           return_details: bool = False, **kwargs: Any) -> str | dict[str, Any]:
    """Fill the gap between ``prefix`` and ``suffix`` (§9.2; either may be empty).

    Args:
        model: a model or a run directory.
        prefix: the known text before the gap.
        suffix: the known text after the gap.
        level: the level whose sequence holds the gap (default: 1 when the model has it, else 0).
        gap: gap lengths searched, an int or an inclusive (lo, hi) range, in positions of that level.
        steps: denoising steps (default: the recipe's ``sample.infill_steps``).
        seed: seed of all noise.
        return_details: return ``{text, gap, score, gap_len, level, candidates}`` instead of the text.
        **kwargs: ``epsilon``, ``span``, ``trace``, ``progress`` of :func:`zonkey.core.generate.infill.infill_many`.

    Returns:
        prefix + gap + suffix, or the details with ``return_details``.

    Raises:
        ValueError: both texts empty, a level that does not exist, a bad gap range or steps < 1.
    """
    res = _infill(_model(model), prefix, suffix, level=level, gap=gap, steps=steps, seed=seed, **kwargs)
    return res.as_dict() if return_details else res.text


def evaluate(run: str | os.PathLike[str], settings: EvalSettings | None = None, *,
             progress: ProgressFn | None = None, **fields: Any) -> dict[str, Any]:
    """Every metric ``zonkey eval`` reports for a run directory, of either kind.

    The one evaluation path: ``zonkey eval`` prints what this returns, and ``zonkey ablate`` scores
    its cells with it. A diffusion run (``recipe.json``) gets every level's held-out metrics and the
    generation sections; an autoregressive baseline run (``baseline.json``) gets the metrics of a
    byte LM (:func:`zonkey.baselines.ar_eval.evaluate_ar_run`).

    Args:
        run: a run directory, or one checkpoint directory inside it.
        settings: what to compute (default: ``zonkey eval``'s defaults).
        progress: ``progress(done, total)`` over the held-out batches, then the infill problems (diffusion runs).
        **fields: fields of :class:`~zonkey.core.evaluate.run.EvalSettings` that replace those of
            ``settings``, e.g. ``samples=100``.

    Returns:
        the result dict of ``zonkey eval --json``.

    Raises:
        CheckpointError: an unreadable run.
        RecipeError: a ``sample_sets`` override that does not validate.
        NoiseSpecError: a noise spec that cannot be read.
        pydantic.ValidationError: a field out of its range.
    """
    from zonkey.baselines.ar_eval import evaluate_ar_run
    from zonkey.baselines.ar_run import is_ar_run

    run = Path(run)
    s = settings or EvalSettings()
    if fields:
        s = EvalSettings.model_validate({**s.model_dump(), **fields})
    if is_ar_run(run):
        return evaluate_ar_run(run, s)
    model = load(run, use_ema=s.ema, verify=s.verify).with_sample_settings(list(s.sample_sets))
    return evaluate_model(model, run, s, progress)
