"""zonkey: a hierarchical diffusion language model with a learned, differentiable tokenizer.

Paper: Rozental, "Zonkey: A Hierarchical Diffusion Language Model with Differentiable Tokenization
and Probabilistic Attention". Public API: :func:`load`, :class:`Recipe`,
:func:`zonkey.core.attention.probabilistic_attention`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from zonkey.core.recipe import Recipe, RecipeError, load_recipe  # noqa: E402

__all__ = ["Recipe", "RecipeError", "load_recipe", "load", "__version__"]


def load(run_dir: Any, **kwargs: Any) -> Any:
    """Rebuild a trained model from a run directory (``model.safetensors`` + ``recipe.json``).

    Keyword arguments go to :meth:`zonkey.core.model.ZonkeyModel.from_run` (``use_ema``, ``device``).
    """
    from zonkey.core.model import ZonkeyModel

    return ZonkeyModel.from_run(run_dir, **kwargs)
