"""The user API: load a trained model, split and reconstruct text, generate, infill.

Every function takes a model (from :func:`load`) or a run directory, which it loads first, and
returns one type::

    import zonkey
    model = zonkey.load("runs/tiny")                # or "hf://org/name@revision" (the `hub` extra)
    zonkey.split(model, ["The cat sat."])           # segments and p_bos per byte, at every level
    zonkey.reconstruct(model, ["The cat sat."])     # text -> level-0 latents -> text
    zonkey.sample(model, 4, steps=30, seed=0)       # list[str]: texts generated from noise
    zonkey.sample_details(model, 4)                 # SampleResult: texts, bytes, lengths, trace
    zonkey.infill(model, "Bob is a ", " player")    # str: prefix + gap + suffix
    zonkey.infill_details(model, "Bob is a ", " player")  # InfillDetails: gap, score, candidates
    zonkey.api.evaluate("runs/tiny", samples=100, infill=100)  # what `zonkey eval` prints, as a dict

This module sits on top of :mod:`zonkey.core`; nothing in core imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import InfillResult, ProgressFn, SampleResult
from zonkey.core.evaluate.run import EvalSettings, evaluate_model
from zonkey.core.generate import infill as _infilling
from zonkey.core.generate import sample as _sampling
from zonkey.core.model.inference import reconstruct_texts, split_texts
from zonkey.core.model.network import ZonkeyModel
from zonkey.hub import download, is_hub_address

__all__ = [
    "EvalSettings",
    "InfillCandidate",
    "InfillDetails",
    "SampleResult",
    "evaluate",
    "infill",
    "infill_details",
    "load",
    "reconstruct",
    "sample",
    "sample_details",
    "split",
]

ModelOrRun = Union[ZonkeyModel, str, "os.PathLike[str]"]


@dataclass(frozen=True)
class InfillCandidate:
    """One gap length the infill search tried.

    Attributes:
        gap_len: the gap's length in positions of the infill level (bytes at level 0).
        gap: the candidate's decoded gap text.
        bytes: the gap's length in UTF-8 bytes.
        score: context agreement of the candidate, in [-1, 1] (the highest is kept).
    """

    gap_len: int
    gap: str
    bytes: int
    score: float


@dataclass(frozen=True)
class InfillDetails:
    """A filled gap with everything the search found (:func:`infill_details`).

    Attributes:
        text: prefix + gap + suffix (what :func:`infill` returns).
        gap: the kept candidate's gap text.
        score: its context agreement, in [-1, 1].
        gap_len: its length in positions of ``level``.
        level: the level whose sequence held the gap.
        candidates: every searched gap length, in search order.
        raw: the gap's bytes (``gap`` decodes them, invalid UTF-8 replaced).
        slots: (p + gap_len + q, d) the kept candidate's final level-``level`` sequence.
        trace: per denoising step, the decoded gap of each candidate (empty unless traced).
        sigmas: the noise level of each trace entry.
    """

    text: str
    gap: str
    score: float
    gap_len: int
    level: int
    candidates: list[InfillCandidate]
    raw: bytes
    slots: Tensor
    trace: list[list[str]] = field(default_factory=list)
    sigmas: list[float] = field(default_factory=list)

    @classmethod
    def from_result(cls, res: InfillResult) -> InfillDetails:
        """The details of a core :class:`~zonkey.core.contracts.outputs.InfillResult`."""
        cands = [InfillCandidate(gap_len=int(c["gap_len"]), gap=str(c["gap"]), bytes=int(c["bytes"]),
                                 score=float(c["score"])) for c in res.candidates]
        return cls(text=res.text, gap=res.gap, score=float(res.score), gap_len=int(res.gap_len), level=int(res.level),
                   candidates=cands, raw=res.raw, slots=res.slots, trace=res.trace, sigmas=res.sigmas)

    def as_dict(self) -> dict[str, Any]:
        """``{text, gap, score, gap_len, level, candidates}`` as JSON-ready values (``zonkey infill --json``)."""
        return {"text": self.text, "gap": self.gap, "score": self.score, "gap_len": self.gap_len,
                "level": self.level, "candidates": [vars(c).copy() for c in self.candidates]}


def load(source: str | os.PathLike[str], *, use_ema: bool = True, device: str | torch.device = "cpu",
         verify: bool = True, cache_dir: str | os.PathLike[str] | None = None) -> ZonkeyModel:
    """Rebuild a trained model from a run directory (``recipe.json`` + the newest checkpoint).

    Args:
        source: a run directory, one checkpoint directory inside it, or a model on the Hugging
            Face hub as ``hf://org/name`` or ``hf://org/name@revision`` (downloaded through
            ``huggingface_hub.snapshot_download``; needs the ``hub`` extra).
        use_ema: use the EMA weights where the checkpoint has them.
        device: where to put the model.
        verify: check the checkpoint files against the SHA-256 recorded when they were saved.
        cache_dir: where hub downloads are kept (default: the hub's own cache).

    Returns:
        the model, in eval mode.

    Raises:
        CheckpointError: a missing or invalid recipe, no checkpoint, corrupt or mismatched weights.
        HubError: a malformed ``hf://`` address, the hub extra missing, or a failed download.
    """
    if isinstance(source, str) and is_hub_address(source):
        path = download(source, cache_dir=cache_dir)
    else:
        path = Path(source)
    return ZonkeyModel.from_run(path, use_ema=use_ema, device=device, verify=verify)


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
           segments: int | None = None, epsilon: float | None = None,
           progress: ProgressFn | None = None) -> list[str]:
    """Generate ``n`` texts from noise (§9.1), starting at ``level`` (default: the top level).

    Args:
        model: a model or a run directory.
        n: number of texts.
        steps: denoising steps at the starting level (default: the recipe's ``sample.steps``).
        seed: seed of all noise.
        level: the level drawn from the prior.
        segments: latents per sample at the starting level (default: the recipe's).
        epsilon: the sampler's noise scale (default: the recipe's).
        progress: ``progress(done, total)`` over the starting level's steps.

    Returns:
        the texts (invalid UTF-8 replaced by U+FFFD); :func:`sample_details` returns the rest.

    Raises:
        ValueError: a level that does not exist, or n, steps or segments below 1.
    """
    return sample_details(model, n, steps=steps, seed=seed, level=level, segments=segments, epsilon=epsilon,
                          progress=progress).texts


def sample_details(model: ModelOrRun, n: int = 4, *, steps: int | None = None, seed: int = 0,
                   level: int | None = None, segments: int | None = None, epsilon: float | None = None,
                   trace: bool = False, progress: ProgressFn | None = None) -> SampleResult:
    """:func:`sample` with everything the sampler returns.

    Args:
        model: a model or a run directory.
        n: number of texts.
        steps: denoising steps at the starting level (default: the recipe's ``sample.steps``).
        seed: seed of all noise.
        level: the level drawn from the prior.
        segments: latents per sample at the starting level (default: the recipe's).
        epsilon: the sampler's noise scale (default: the recipe's).
        trace: also decode the texts at every step of the starting level.
        progress: ``progress(done, total)`` over the starting level's steps.

    Returns:
        the :class:`~zonkey.core.contracts.outputs.SampleResult`: ``texts``, ``raw`` bytes,
        ``lengths`` and, with ``trace``, ``trace`` and ``sigmas``.

    Raises:
        ValueError: a level that does not exist, or n, steps or segments below 1.
    """
    return _sampling.sample(_model(model), n, steps=steps, seed=seed, level=level, segments=segments, epsilon=epsilon,
                   trace=trace, progress=progress)


def infill(model: ModelOrRun, prefix: str, suffix: str, *, level: int | None = None,
           gap: tuple[int, int] | int | None = None, steps: int | None = None, seed: int = 0,
           epsilon: float | None = None, span: int | None = None, progress: ProgressFn | None = None) -> str:
    """Fill the gap between ``prefix`` and ``suffix`` (§9.2; either may be empty).

    Args:
        model: a model or a run directory.
        prefix: the known text before the gap.
        suffix: the known text after the gap.
        level: with a sequence prior, the level whose latents fill the gap (default: the highest
            with a prior); otherwise the level whose sequence holds the gap (default: 1 when the
            model has it, else 0).
        gap: gap lengths searched, an int or an inclusive (lo, hi) range, in positions of that level.
        steps: denoising steps (default: the recipe's ``sample.infill_steps``).
        seed: seed of all noise.
        epsilon: the sampler's noise scale (default: the recipe's).
        span: positions of each denoising window (default: the level's).
        progress: ``progress(done, total)`` over the denoising steps.

    Returns:
        prefix + gap + suffix; :func:`infill_details` returns the gap, its score and the candidates.

    Raises:
        ValueError: both texts empty, a level that does not exist, a bad gap range or steps < 1.
    """
    return infill_details(model, prefix, suffix, level=level, gap=gap, steps=steps, seed=seed, epsilon=epsilon,
                          span=span, progress=progress).text


def infill_details(model: ModelOrRun, prefix: str, suffix: str, *, level: int | None = None,
                   gap: tuple[int, int] | int | None = None, steps: int | None = None, seed: int = 0,
                   epsilon: float | None = None, span: int | None = None, trace: bool = False,
                   progress: ProgressFn | None = None) -> InfillDetails:
    """:func:`infill` with the gap, its score and every candidate searched.

    Args:
        model: a model or a run directory.
        prefix: the known text before the gap.
        suffix: the known text after the gap.
        level: with a sequence prior, the level whose latents fill the gap (default: the highest
            with a prior); otherwise the level whose sequence holds the gap (default: 1 when the
            model has it, else 0).
        gap: gap lengths searched, an int or an inclusive (lo, hi) range, in positions of that level.
        steps: denoising steps (default: the recipe's ``sample.infill_steps``).
        seed: seed of all noise.
        epsilon: the sampler's noise scale (default: the recipe's).
        span: positions of each denoising window (default: the level's).
        trace: also decode every candidate's gap at every step.
        progress: ``progress(done, total)`` over the denoising steps.

    Returns:
        the :class:`InfillDetails`.

    Raises:
        ValueError: both texts empty, a level that does not exist, a bad gap range or steps < 1.
    """
    res = _infilling.infill(_model(model), prefix, suffix, level=level, gap=gap, steps=steps, seed=seed, epsilon=epsilon,
                  span=span, trace=trace, progress=progress)
    return InfillDetails.from_result(res)


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
