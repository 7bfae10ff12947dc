"""zonkey: a hierarchical diffusion language model with a learned, differentiable tokenizer.

Paper: Rozental, "Zonkey: A Hierarchical Diffusion Language Model with Differentiable Tokenization
and Probabilistic Attention". Public API (:mod:`zonkey.api`): :func:`load` (a run directory or
``hf://org/name[@rev]``), :func:`split`, :func:`reconstruct`, :func:`sample` (``list[str]``),
:func:`sample_details` (:class:`SampleResult`), :func:`infill` (``str``), :func:`infill_details`
(:class:`InfillDetails`), :func:`evaluate`; recipes: :class:`Recipe` (``Recipe.load("tiny")``),
:func:`load_recipe`; attention: :func:`zonkey.core.nn.attention.probabilistic_attention`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zonkey.core.recipe import Recipe, RecipeError, load_recipe
from zonkey.version import __version__

if TYPE_CHECKING:
    from zonkey.api import (
        EvalSettings,
        InfillCandidate,
        InfillDetails,
        SampleResult,
        evaluate,
        infill,
        infill_details,
        load,
        reconstruct,
        sample,
        sample_details,
        split,
    )

__all__ = [
    "EvalSettings",
    "InfillCandidate",
    "InfillDetails",
    "Recipe",
    "RecipeError",
    "SampleResult",
    "__version__",
    "evaluate",
    "infill",
    "infill_details",
    "load",
    "load_recipe",
    "reconstruct",
    "sample",
    "sample_details",
    "split",
]

_API = ("load", "split", "reconstruct", "sample", "sample_details", "infill", "infill_details", "evaluate",
        "EvalSettings", "InfillCandidate", "InfillDetails", "SampleResult")


def __getattr__(name: str) -> Any:
    """The user API of :mod:`zonkey.api`, imported on first use.

    So ``import zonkey`` (and every CLI command) stays free of torch until a model is needed.
    """
    if name in _API:
        from zonkey import api

        return getattr(api, name)
    raise AttributeError(f"module 'zonkey' has no attribute {name!r}")
