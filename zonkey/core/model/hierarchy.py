"""Wiring levels together (§5.1, §8).

Level l+1's sequence is level l's clean latents in BOS order per document.

Segments come out of a split sorted by (document, start) (``nonzero`` order), so a segment's place
in its document's level-(l+1) sequence is its rank among the segments of that document. The gather
keeps the autograd graph: gradients of level l+1's losses flow down into level l's compressor and
splitter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import LevelSequence

__all__ = ["LevelSequence", "latents_to_sequence"]


def latents_to_sequence(latents: Tensor, doc: Tensor, b: int) -> LevelSequence:
    """Arrange (s, D) latents of segments sorted by (doc, start) into (b, n1, D) + mask.

    Args:
        latents: (s, D) clean latents of level l.
        doc: (s,) long, non-decreasing document index of each segment.
        b: documents in the batch.

    Returns:
        the sequence x (b, n1, D) with n1 the most segments of one document, its mask (b, n1)
        and each segment's position (s,).
    """
    s, dim = latents.shape
    counts = torch.bincount(doc, minlength=b)  # (b,)
    offsets = torch.cumsum(counts, 0) - counts
    position = torch.arange(s, device=latents.device) - offsets[doc]  # (s,)
    n1 = int(counts.max()) if s else 0  # one host sync per level
    if b == 1 and s and not torch.is_grad_enabled():
        x = latents[None]  # one document at inference: its latents already are the sequence (no copy)
    else:
        x = latents.new_zeros(b, max(n1, 1), dim)
        x = x.index_put((doc, position), latents)  # (b, n1, D), differentiable
    valid = torch.zeros(b, max(n1, 1), dtype=torch.bool, device=latents.device)
    valid[doc, position] = True
    return LevelSequence(x=x, valid=valid, position=position)
