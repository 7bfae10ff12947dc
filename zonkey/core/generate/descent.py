"""Descending the hierarchy: a sequence of one level's input vectors decoded down to bytes.

Every vector of level l's sequence is a latent of level l − 1: all of them, across rows, are
decoded in one batch (``Level.decode``: noised to σ and denoised back in a few steps), truncated
where existence < ε and stitched per row, and the result descends further. At level 0 the
stitched vectors become bytes through the tied embedding table. Used by sampling, by the
sequence priors and by infilling.
"""

from __future__ import annotations

import torch
from torch import Tensor

from zonkey.core.contracts.outputs import ProgressFn
from zonkey.core.model.inference import decode_bytes_from_slots
from zonkey.core.model.network import ZonkeyModel
from zonkey.core.nn.stitching import stitch

__all__ = ["ProgressFn", "decode_down", "descend"]


@torch.no_grad()
def descend(model: ZonkeyModel, level_idx: int, x: Tensor, valid: Tensor, *, steps: int, sigma: float, epsilon: float,
            generator: torch.Generator | None) -> list[bytes]:
    """A stitched sequence of ``level_idx``'s input vectors down to bytes, one batch per level.

    At level 0 the vectors are byte embeddings (argmax against the tied table); above, each valid
    vector is a latent of the level below: all of them are decoded in one batched pass, truncated
    and stitched per row, and the result descends further. Each level's decoding is
    ``Level.decode`` (noised to ``sigma`` and denoised back in ``steps`` steps).

    Args:
        model: the model.
        level_idx: the level whose input vectors x holds.
        x: (b, n, d) sequence.
        valid: (b, n) bool (each row's valid positions in order).
        steps: sampler steps of each lower level's decoding loop.
        sigma: the noise level each lower level's decoding starts from.
        epsilon: the truncation threshold.
        generator: source of the decoding noise.

    Returns:
        the bytes of each row.
    """
    b = x.shape[0]
    for lvl in range(level_idx, 0, -1):
        rows, pos = valid.nonzero(as_tuple=True)  # row-major: sorted by row, then position
        if rows.numel() == 0:
            return [b"" for _ in range(b)]
        below = model.levels[lvl - 1]
        out = below.decode(x[rows, pos], sigma=sigma, steps=steps, generator=generator)
        st = stitch(below.stitcher, out.x_hat, out.log_existence, rows, b, epsilon)
        x, valid = st.x, st.valid
    pred = decode_bytes_from_slots(x, model.table)  # (b, n)
    return [bytes(pred[i][valid[i]].tolist()) for i in range(b)]


@torch.no_grad()
def decode_down(model: ZonkeyModel, level_idx: int, x_hat: Tensor, log_existence: Tensor, doc: Tensor, b: int, *,
                steps: int, sigma: float, epsilon: float, generator: torch.Generator | None) -> list[bytes]:
    """Decoded segments of ``level_idx`` down to bytes per document: truncate, stitch, descend.

    Args:
        model: the model.
        level_idx: the level the segments were decoded at.
        x_hat: (s, m, d) decoded segments.
        log_existence: (s, m) their existence.
        doc: (s,) document of each segment.
        b: number of documents.
        steps: sampler steps of each lower level's decoding loop.
        sigma: the noise level each lower level's decoding starts from.
        epsilon: the truncation threshold.
        generator: source of the decoding noise.

    Returns:
        the bytes of each document.
    """
    st = stitch(model.levels[level_idx].stitcher, x_hat, log_existence, doc, b, epsilon)
    return descend(model, level_idx, st.x, st.valid, steps=steps, sigma=sigma, epsilon=epsilon, generator=generator)
