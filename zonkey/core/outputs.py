"""The dataclass outputs that components and levels hand to each other, with shapes on the fields.

One module for every output so that a reader finds what a call returns in one place; the axis
letters of the shape comments (``s``, ``m``, ``d`` ...) are those of :mod:`zonkey.core.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Segments:
    """Overlapping fixed-length segments cut from a batch at sampled (or thresholded) BOS positions."""

    vectors: Tensor  # (s, m, d) the level's input vectors in each segment
    valid: Tensor  # (s, m) bool, False past the document's end
    log_existence: Tensor  # (s, m) log existence (0 at the start, −inf on padding)
    shares: Tensor  # (s, m) existence shares: sum to 1 over the slots covering a document position
    doc: Tensor  # (s,) long, document of each segment
    start: Tensor  # (s,) long, first position of each segment
    positions: Tensor  # (s, m) long, document position of each slot
    span: Tensor  # (s,) long, own span length: start to next BOS (or the document's end)
    n_docs: int  # b
    seq_len: int  # n

    @property
    def num(self) -> int:
        """The number of segments ``s``."""
        return int(self.doc.shape[0])

    @property
    def own_span(self) -> Tensor:
        """(s, m) bool: slots between the segment's start and the next chosen BOS."""
        m = self.valid.shape[1]
        return (torch.arange(m, device=self.valid.device)[None, :] < self.span[:, None]) & self.valid


@dataclass
class SplitOutput:
    """What a splitter returns (§4 items 1-7)."""

    p_bos: Tensor  # (b, n) BOS probability of every position (1 at position 0, 0 on padding)
    bos: Tensor  # (b, n) bool, the sampled (training) or thresholded (inference) BOS decisions
    segments: Segments
    avg_bos: Tensor  # () mean BOS probability over real positions
    p_long: Tensor  # () long-segment probability
    p_short: Tensor  # () short-segment probability


@dataclass
class DenoiseOutput:
    """What a denoiser returns for a batch of noisy latents."""

    x_hat: Tensor  # (s, m, d) denoised segment vectors
    bos_logits: Tensor  # (s, m) final BOS head
    log_existence: Tensor  # (s, m) existence from the final BOS head (0 at slot 0)
    rough_bos_logits: Tensor | None = None  # (s, m) BOS head on the decoder's rough expansion


@dataclass
class ObjectiveOutput:
    """The objective's own loss and the denoiser outputs the level's reconstruction losses read."""

    loss: Tensor  # () the objective's diffusion loss (weighted by `losses.diffusion`)
    clean: DenoiseOutput  # denoised from light noise ("clean" reconstruction, §8)
    dirty: DenoiseOutput | None = None  # denoised from heavy noise ("dirty" reconstruction, §8)
    dirty_rows: Tensor | None = None  # (s',) rows of the batch the dirty output belongs to (None: all)
    extra_latents: list[Tensor] = field(default_factory=list)  # (s, k·d) re-compressed latents (collapse loss)


@dataclass
class StitchOutput:
    """What a stitcher returns: the segments laid back onto document positions."""

    x: Tensor  # (b, n, d) stitched document sequence
    valid: Tensor  # (b, n) bool
    starts: Tensor  # (s,) long: document position of each segment's first slot (hard, used for placement)
    offsets: Tensor | None = None  # (s,) expected offset of each segment after its predecessor (learned)
    losses: dict[str, Tensor] = field(default_factory=dict)  # training losses (given true starts)
