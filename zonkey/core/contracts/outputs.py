"""The dataclass outputs that components and levels hand to each other, with shapes on the fields.

One module for every output so that a reader finds what a call returns in one place; the axis
letters of the shape comments (``s``, ``m``, ``d`` ...) are those of :mod:`zonkey.core.contracts.shapes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

#: progress callback of long loops: (done, total)
ProgressFn = Callable[[int, int], None]


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


# --- the walk up the hierarchy and the training pass ---------------------------------------


@dataclass
class LevelSequence:
    """Level l's latents arranged as level l+1's input (see ``hierarchy.latents_to_sequence``)."""

    x: Tensor  # (b, n1, k·d) latents in BOS order, 0 on padding
    valid: Tensor  # (b, n1) bool
    position: Tensor  # (s,) long: each level-l segment's position in its document's sequence


@dataclass
class LevelPass:
    """One level of the encoder walk up the hierarchy (``ZonkeyModel.walk`` / ``encode``).

    ``above`` is built once the consumer of the walk has finished with this pass (the walk builds
    it when it is asked for the next pass), so a pass returned by ``encode`` always has it.
    """

    index: int  # the level
    x: Tensor  # (b, n, d) the level's input sequence (byte embeddings at level 0), 0 on padding
    valid: Tensor  # (b, n) bool
    split: SplitOutput  # the level's split of x (sampled in training, thresholded at inference)
    latents: Tensor  # (s, k·d) clean latents of its segments, on the sphere
    above: LevelSequence | None = None  # the latents in BOS order: the next level's input


# decode_loss(z, rows) -> (loss, top-1 accuracy): a level's reconstruction loss when its segments
# ``rows`` (r,) are decoded from the latents z (r, k·d) instead of their own
DecodeLossFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class LevelOutput:
    """One level's training pass: its split and latents, and its loss terms."""

    split: SplitOutput
    latents: Tensor  # (s, k·d) clean latents on the sphere
    loss: Tensor  # () weighted sum
    terms: dict[str, Tensor] = field(default_factory=dict)  # unweighted loss terms
    stats: dict[str, float] = field(default_factory=dict)
    decoded: Tensor | None = None  # (s, m, d) the clean latents decoded back to slots (σ ≈ 0)
    decode_loss: DecodeLossFn | None = None  # read by the level above's ``decode`` term


@dataclass
class ModelOutput:
    """The model's training pass: the total loss and every level's terms, prefixed ``l{i}.``."""

    loss: Tensor  # () curriculum-weighted sum over the levels
    terms: dict[str, Tensor] = field(default_factory=dict)  # "l0.token" -> unweighted value
    stats: dict[str, float] = field(default_factory=dict)
    levels: list[LevelOutput] = field(default_factory=list)


# --- what the user API returns ---------------------------------------------------------------


@dataclass
class TextSplit:
    """The deterministic segmentation of one text at every level."""

    text: str
    segments: list[str]  # level-0 own spans (start to next BOS), decoded with errors="replace"
    p_bos: list[float]  # one value per UTF-8 byte
    starts: list[int]  # byte offsets of the BOS positions
    levels: list[dict[str, Any]] | None = None  # per level: {segments, p_bos} (level l >= 1 groups level l−1 units)

    def as_dict(self) -> dict[str, Any]:
        """``{text, segments, p_bos, starts}`` and, with two or more levels, ``levels``."""
        d: dict[str, Any] = {"text": self.text, "segments": self.segments, "p_bos": self.p_bos, "starts": self.starts}
        if self.levels is not None:
            d["levels"] = self.levels
        return d


@dataclass
class SampleResult:
    """Texts generated from noise (``zonkey.core.generate.sample.sample``)."""

    texts: list[str]
    lengths: list[int] = field(default_factory=list)  # bytes per sample
    trace: list[list[str]] = field(default_factory=list)  # per top-level step: decoded texts (if traced)
    sigmas: list[float] = field(default_factory=list)  # noise level of each trace entry
    raw: list[bytes] = field(default_factory=list)  # the generated bytes (texts decode them with errors="replace")
    # share of the top-level positions drawn outside the prior's vocabulary (its "other" class);
    # None without a vocabulary head
    other_share: float | None = None


@dataclass
class InfillResult:
    """One filled gap (``zonkey.core.generate.infill``). Lengths count positions of the infill level (bytes at level 0)."""

    text: str  # prefix + gap + suffix
    gap: str
    score: float  # context agreement of the kept candidate, in [−1, 1]
    gap_len: int
    level: int
    candidates: list[dict[str, Any]]  # every searched gap length: {gap_len, gap, bytes, score}
    prefix_vectors: Tensor  # (p, d) the prefix as level-`level` input vectors
    suffix_vectors: Tensor  # (q, d)
    slots: Tensor  # (p + gap_len + q, d) the kept candidate's final document (prefix and suffix clamped)
    raw: bytes = b""  # the gap's bytes (``gap`` decodes them with errors="replace")
    trace: list[list[str]] = field(default_factory=list)  # per step: the decoded gap of each candidate
    sigmas: list[float] = field(default_factory=list)  # noise level of each trace entry

    def as_dict(self) -> dict[str, Any]:
        """``{text, gap, score, gap_len, level, candidates}`` (JSON-ready)."""
        return {"text": self.text, "gap": self.gap, "score": self.score, "gap_len": self.gap_len,
                "level": self.level, "candidates": self.candidates}
