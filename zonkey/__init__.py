"""zonkey: a hierarchical diffusion language model with a learned, differentiable tokenizer.

Paper: Rozental, "Zonkey: A Hierarchical Diffusion Language Model with Differentiable Tokenization
and Probabilistic Attention". Public API (:mod:`zonkey.api`): :func:`load`, :func:`split`,
:func:`reconstruct`, :func:`sample`, :func:`infill`; recipes: :class:`Recipe`, :func:`load_recipe`;
attention: :func:`zonkey.core.nn.attention.probabilistic_attention`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zonkey.core.recipe import Recipe, RecipeError, load_recipe
from zonkey.version import __version__

if TYPE_CHECKING:
    from zonkey.api import infill, load, reconstruct, sample, split

__all__ = ["Recipe", "RecipeError", "load_recipe", "load", "split", "reconstruct", "sample", "infill", "__version__"]

_API = ("load", "split", "reconstruct", "sample", "infill")


def __getattr__(name: str) -> Any:
    """The user API of :mod:`zonkey.api`, imported on first use.

    So ``import zonkey`` (and every CLI command) stays free of torch until a model is needed.
    """
    if name in _API:
        from zonkey import api

        return getattr(api, name)
    raise AttributeError(f"module 'zonkey' has no attribute {name!r}")
