"""The placement shared by all stitchers (what they return is :class:`zonkey.core.contracts.outputs.StitchOutput`).

``chain_starts`` and ``place`` live in :mod:`zonkey.core.nn.stitching` (the sampler needs them too)
and are re-exported here for the stitchers.
"""

from __future__ import annotations

from torch import Tensor

from zonkey.core.nn.existence import kept_mask
from zonkey.core.nn.stitching import chain_starts, place

__all__ = ["chain_starts", "kept_lengths", "place"]


def kept_lengths(log_existence: Tensor, threshold: float = 0.5) -> Tensor:
    """(s,) number of leading slots whose existence is at least ``threshold`` (>= 1)."""
    return kept_mask(log_existence, threshold).sum(1).clamp_min(1)
