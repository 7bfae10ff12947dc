"""The axis vocabulary used in every docstring and shape comment of zonkey.

Written once here so that a shape comment such as ``# (s, m, d)`` means the same thing in every
file:

==========  ==================================================================
letter      meaning
==========  ==================================================================
``b``       documents in the batch
``n``       positions of the level's sequence (bytes at level 0)
``s``       segments (all documents of the batch together)
``m``       max segment length of the level (``max_segment``)
``k``       compression vectors per segment (``n_compress``)
``d``       width of the level (``d_model``)
``h``       attention heads, ``dh`` the width of one head
``t``       diffusion time / noise level
``v``       vocabulary (256 UTF-8 byte values at level 0)
==========  ==================================================================
"""

from __future__ import annotations

AXES = {
    "b": "documents in the batch",
    "n": "positions of the level's sequence",
    "s": "segments",
    "m": "max segment length",
    "k": "compression vectors per segment",
    "d": "width",
    "h": "attention heads",
    "t": "diffusion time",
    "v": "vocabulary",
}

BYTE_VOCAB = 256


# --- dataclass outputs shared between components (shapes on the fields) ---------------------

from dataclasses import dataclass  # noqa: E402
from typing import Optional  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402


@dataclass
class LevelContext:
    """What a component of one level is built with (passed to ``config.build(ctx)``)."""

    level: int
    d_model: int
    max_segment: int
    n_compress: int
    heads: int
    ffn_mult: int
    dropout: float
    attention: nn.Module  # the attention backend module shared by the level's encoders


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
    rough_bos_logits: Optional[Tensor] = None  # (s, m) BOS head on the decoder's rough expansion
