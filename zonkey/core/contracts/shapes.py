"""The axis vocabulary used in every docstring and shape comment of zonkey, and the build context.

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

from dataclasses import dataclass

from torch import nn

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
