"""One level of the hierarchy: Splitter -> Compressor -> Objective/Denoiser (§4-§8).

A level receives its sequence (b, n, d) with a validity mask. :meth:`Level.encode` splits it and
compresses every segment to its clean latent (the level's output to the level above);
:meth:`Level.losses` adds the level's weighted loss terms on top of that (training), and
:meth:`Level.decode` turns latents back into slots, optionally through a short loop of the level
objective's own sampler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import cast, overload

import torch
from torch import Tensor, nn

from zonkey.core.contracts.outputs import DenoiseOutput, LevelOutput, Segments, SplitOutput
from zonkey.core.contracts.protocols import (
    Compressor,
    Denoiser,
    Objective,
    Prior,
    SlotStatesCompressor,
    Splitter,
    Stitcher,
    packs_rows,
    packs_slots,
)
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.model import level_losses
from zonkey.core.nn.packing import PACKING, Packing, bucket_cut, needed_slots, pad_slots, run_bucketed
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.recipe import ByteLossConfig, LevelConfig

#: without gradients, segments are compressed this many at a time (bounded memory on long documents)
SEGMENT_BATCH = 2048


class Level(nn.Module):
    """Components of one level, built from its recipe block.

    Args:
        cfg: the level's recipe block.
        index: the level's place in the hierarchy (0 reads bytes).
        attention: the model's attention backend, shared by every level.
        byte_loss: level 0's byte-loss weighting (``model.byte_loss``); unused above level 0.
        same_tol: levels >= 1: a candidate whose cosine to a target exceeds ``1 - same_tol`` counts as
            the same unit, never a negative, in the contrastive losses (default: exact copies only).
    """

    # the components as their kinds' protocols: every registered component fulfils its kind's
    # protocol (the contract tests build each built-in one and check it), the registry types them nn.Module
    splitter: Splitter
    compressor: Compressor
    denoiser: Denoiser
    objective: Objective
    stitcher: Stitcher | None
    prior: Prior | None
    byte_weights: Tensor  # level 0 only

    def __init__(self, cfg: LevelConfig, index: int, attention: nn.Module,
                 byte_loss: ByteLossConfig | None = None, *, same_tol: float = 1e-6, packing: Packing = "off",
                 packing_tail: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        if packing not in PACKING:
            raise ValueError(f"model.packing must be one of {', '.join(PACKING)} (got {packing!r})")
        self.packing: Packing = packing
        # packed existence BCE: a segment's last computed slot stands in for the slots after it
        self.packing_tail = packing_tail and packing != "off"
        self.index = index
        self.byte_loss = byte_loss or ByteLossConfig()
        self.same_tol = same_tol
        self.ctx = LevelContext(
            level=index,
            d_model=cfg.d_model,
            max_segment=cfg.max_segment,
            n_compress=cfg.n_compress,
            heads=cfg.heads,
            ffn_mult=cfg.ffn_mult,
            dropout=cfg.dropout,
            attention=attention,
        )
        for kind in ("splitter", "compressor", "denoiser", "objective"):
            if getattr(cfg, kind) is None:
                raise ValueError(f"model.levels.{index}.{kind} is not set and no default is registered")
        self.splitter = cast(Splitter, cfg.splitter.build(self.ctx))
        self.compressor = cast(Compressor, cfg.compressor.build(self.ctx))
        self.denoiser = cast(Denoiser, cfg.denoiser.build(self.ctx))
        self.objective = cast(Objective, cfg.objective.build(self.ctx))
        self.stitcher = cast(Stitcher, cfg.stitcher.build(self.ctx)) if cfg.stitcher is not None else None
        # the optional sequence prior over this level's latents (generation and infilling)
        self.prior = cast(Prior, cfg.prior.build(self.ctx)) if cfg.prior is not None else None
        if packing != "off":
            for kind in ("compressor", "denoiser", "objective"):
                module = getattr(self, kind)
                if not packs_slots(module) or packing == "varlen" and kind != "objective" and not packs_rows(module):
                    name = getattr(getattr(cfg, kind), "name", kind)
                    hint = ""
                    if kind == "denoiser" and name == "ddmm":
                        hint = (" (give it slots: causal)" if not packs_slots(module)
                                else " (an autoregressive decoder; use packing: buckets)")
                    raise ValueError(f"model.packing: {packing} runs segments at their own length, which level "
                                     f"{index}'s {kind} {name!r} cannot{hint}; or set model.packing: off")
        if index == 0:
            # per-byte weights of the token loss (``model.byte_loss.balance``); set by the trainer from the training
            # split's byte counts, ones otherwise. Not saved: only training reads them.
            self.register_buffer("byte_weights", torch.ones(256), persistent=False)
        if cfg.losses.mlm > 0:
            if not isinstance(self.compressor, SlotStatesCompressor):
                raise ValueError(f"model.levels.{index}.losses.mlm needs a compressor with per-slot states (e.g. cls)")
            self.mask_vector = nn.Parameter(torch.randn(cfg.d_model))
            self.mlm_head = nn.Linear(cfg.d_model, cfg.d_model)

    @property
    def latent_dim(self) -> int:
        """Width of one latent: ``n_compress × d_model`` (k·d)."""
        return self.cfg.n_compress * self.cfg.d_model

    def split(self, x: Tensor, valid: Tensor, *, sample: bool | None = None, tokens: Tensor | None = None,
              generator: torch.Generator | None = None) -> SplitOutput:
        """``x`` (b, n, d), ``valid`` (b, n) -> SplitOutput; ``sample`` None: sampled BOS in training mode."""
        return self.splitter(x, valid, sample=sample, tokens=tokens, generator=generator)

    def compress(self, x: Tensor, log_existence: Tensor, *, cut: Tensor | None = None) -> Tensor:
        """``x`` (s, m, d), ``log_existence`` (s, m) -> (s, k·d).

        With ``cut`` (s,) each row runs at its bucket's length: its slots from ``cut`` on are left out.
        """
        if cut is None:
            return self.compressor(x, log_existence)
        if self.packing == "varlen":
            n = int(cut.max())
            return cast(Callable[..., Tensor], self.compressor)(x[:, :n], log_existence[:, :n], lengths=cut)
        return run_bucketed(cut, lambda r, n: (self.compressor(x[r, :n], log_existence[r, :n]),))[0]

    def compress_states(self, x: Tensor, log_existence: Tensor, *, cut: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The compressor's latents (s, k·d) and slot states (s, m, d) (0 from ``cut`` on)."""
        comp = cast(SlotStatesCompressor, self.compressor)
        if cut is None:
            return comp.encode(x, log_existence)
        m = x.shape[1]
        if self.packing == "varlen":
            n = int(cut.max())
            z, h = cast(Callable[..., tuple[Tensor, Tensor]], comp.encode)(x[:, :n], log_existence[:, :n], lengths=cut)
            return z, pad_slots(h, m, 0.0)

        def run(r: Tensor, n: int) -> tuple[Tensor, Tensor]:
            z, h = comp.encode(x[r, :n], log_existence[r, :n])
            return z, pad_slots(h, m, 0.0)

        z, h = run_bucketed(cut, run)
        return z, h

    def denoise(self, z: Tensor, sigma: Tensor, cond: Tensor | None = None, *,
                cut: Tensor | None = None) -> DenoiseOutput:
        """``z`` (s, k·d), ``sigma`` (s,), optional self-conditioning ``cond`` (s, k·d) -> DenoiseOutput.

        With ``cut`` (s,) each row is decoded at its bucket's length; its slots from ``cut`` on are
        0, with existence 0 (−inf in log space) and BOS logits 0.
        """
        if cut is None:
            return self.denoiser(z, sigma) if cond is None else self.denoiser(z, sigma, cond)
        m = self.cfg.max_segment
        den = cast(Callable[..., DenoiseOutput], self.denoiser)
        if self.packing == "varlen":
            n = int(cut.max())
            out = den(z, sigma, slots=n, lengths=cut) if cond is None else den(z, sigma, cond, slots=n, lengths=cut)
            return DenoiseOutput(
                x_hat=pad_slots(out.x_hat, m, 0.0), bos_logits=pad_slots(out.bos_logits, m, 0.0),
                log_existence=pad_slots(out.log_existence, m, float("-inf")),
                rough_bos_logits=None if out.rough_bos_logits is None else pad_slots(out.rough_bos_logits, m, 0.0))

        has_rough: list[bool] = []

        def run(r: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            out = den(z[r], sigma[r], slots=n) if cond is None else den(z[r], sigma[r], cond[r], slots=n)
            has_rough.append(out.rough_bos_logits is not None)
            rough = out.rough_bos_logits if out.rough_bos_logits is not None else out.bos_logits
            return (pad_slots(out.x_hat, m, 0.0), pad_slots(out.bos_logits, m, 0.0),
                    pad_slots(out.log_existence, m, float("-inf")), pad_slots(rough, m, 0.0))

        x_hat, logits, log_e, rough = run_bucketed(cut, run)
        return DenoiseOutput(x_hat=x_hat, bos_logits=logits, log_existence=log_e,
                             rough_bos_logits=rough if all(has_rough) else None)

    @property
    def _hard_existence(self) -> bool:
        """Whether the split's existence is exactly 0 past each segment's own span (``straight_through``)."""
        return getattr(self.splitter, "existence", "soft") == "straight_through"

    def segment_cut(self, seg: Segments, *, inference: bool = False) -> Tensor | None:
        """Each segment's length bucket (s,), or None when the level computes every segment at m slots.

        Training needs each segment's own span and the first slot past it (whose existence the
        losses train); encoding (``inference``) reads a segment's own span alone, and only under
        ``straight_through`` existence, where the slots past the span have existence 0 exactly (so
        it is the same latent in training and at inference).
        """
        if self.packing == "off" or seg.num == 0:
            return None
        m = self.cfg.max_segment
        if inference:
            if not self._hard_existence:
                return None
            need = seg.span.clamp(1, m)
        else:
            need = needed_slots(seg.span, m)
        # varlen computes every segment at exactly its need in one call; buckets round it up
        return need if self.packing == "varlen" else bucket_cut(need, m)

    def encode(self, x: Tensor, valid: Tensor, *, sample: bool | None = None, tokens: Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[SplitOutput, Tensor]:
        """Split the level's sequence and compress every segment to its clean latent.

        Args:
            x: (b, n, d) the level's sequence, 0 on padding.
            valid: (b, n) bool.
            sample: sample the BOS decisions (True), threshold them at 0.5 (False), or follow the
                module's training mode (None).
            tokens: (b, n) byte values (level 0; the whitespace splitter reads them).
            generator: source of the BOS sampling.

        Returns:
            the split and the latents (s, k·d) on the sphere, one per segment in (document, start) order.
            Without gradients, more than :data:`SEGMENT_BATCH` segments are compressed in batches of it.
        """
        split = self.split(x, valid, sample=sample, tokens=tokens, generator=generator)
        seg = split.segments
        # with packing, each segment is compressed at its length bucket (the same latent: the slots
        # left out have existence 0 under straight_through; the training cut keeps soft tails up to it)
        cut = self.segment_cut(seg, inference=not self.training or self._hard_existence)
        if torch.is_grad_enabled() or seg.num <= SEGMENT_BATCH:
            return split, self.compress(seg.vectors, seg.log_existence, cut=cut)
        # inference on a long sequence: every segment is compressed on its own, so batches change nothing
        z = seg.vectors.new_empty(seg.num, self.latent_dim)
        for a in range(0, seg.num, SEGMENT_BATCH):
            part = slice(a, a + SEGMENT_BATCH)
            z[part] = self.compress(seg.vectors[part], seg.log_existence[part], cut=None if cut is None else cut[part])
        return split, z

    def decode(self, z: Tensor, *, sigma: float = 0.0, steps: int = 4,
               generator: torch.Generator | None = None) -> DenoiseOutput:
        """Decode latents to slots, optionally through a short loop of the level's own sampler.

        ``z`` is put on the sphere, noised to ``sigma`` along the objective's own path
        (``objective.noise``), run back to 0 by ``steps`` objective steps at linearly spaced noise
        levels (``objective.step``: decode, re-compress, move), and decoded at σ = 0. With
        ``sigma == 0`` or ``steps == 0`` it is one clean decode and no randomness is drawn.
        Gradients flow where they are enabled; inference callers run it under ``torch.no_grad()``.

        Args:
            z: (s, k·d) latents of this level.
            sigma: noise level in [0, 1] to start from.
            steps: sampler steps back to 0 (>= 0).
            generator: source of the noise.

        Returns:
            the denoiser output at σ = 0: slots x_hat (s, m, d) and their existence (s, m).

        Raises:
            ValueError: sigma outside [0, 1] or steps below 0.
        """
        if not 0.0 <= sigma <= 1.0:
            raise ValueError(f"sigma must lie in [0, 1] (got {sigma})")
        if steps < 0:
            raise ValueError(f"steps must be at least 0 (got {steps})")
        z = to_sphere(z)
        if sigma > 0 and steps > 0 and z.shape[0]:
            z = self.objective.noise(z, z.new_full((z.shape[0],), sigma), generator)
            sigmas = torch.linspace(sigma, 0.0, steps + 1).tolist()
            for a, b in zip(sigmas[:-1], sigmas[1:], strict=True):
                z, _ = self.objective.step(z, a, b, self.denoise, self.compress)
        return self.denoise(z, z.new_zeros(z.shape[0]))

    def mlm_loss(self, seg: Segments, x: Tensor, valid: Tensor, generator: torch.Generator | None = None,
                 rate: float = 0.15, cut: Tensor | None = None) -> Tensor:
        """Masked prediction (§5.2), a scalar loss: :func:`~zonkey.core.model.level_losses.mlm_loss` of this level."""
        return level_losses.mlm_loss(self, seg, x, valid, generator, rate, cut)

    def forward(self, x: Tensor, valid: Tensor, *, tokens: Tensor | None = None, table: Tensor | None = None,
                generator: torch.Generator | None = None, scales: dict[str, float] | None = None) -> LevelOutput:
        """Training pass of the level on its own: :meth:`encode` then :meth:`losses`.

        Args:
            x: (b, n, d) the level's sequence.
            valid: (b, n) bool.
            tokens: (b, n) byte values (level 0 only: targets of the token loss; baselines may read them).
            table: (256, d) tied byte embedding table on the sphere (level 0 only).
            generator: source of the split's and the objective's randomness.
            scales: curriculum multipliers of this level's terms (``{"diffusion": 0.5}``).

        Returns:
            the split, the clean latents and the level's loss terms.
        """
        split, z0 = self.encode(x, valid, tokens=tokens, generator=generator)
        return self.losses(x, valid, split, z0, tokens=tokens, table=table, generator=generator, scales=scales)

    def losses(self, x: Tensor, valid: Tensor, split: SplitOutput, z0: Tensor, *, tokens: Tensor | None = None,
               table: Tensor | None = None, generator: torch.Generator | None = None,
               scales: dict[str, float] | None = None) -> LevelOutput:
        """The level's loss terms on top of its encoding (:meth:`encode`).

        Arguments and result as :func:`~zonkey.core.model.level_losses.level_losses`, with this level.
        """
        return level_losses.level_losses(self, x, valid, split, z0, tokens=tokens, table=table, generator=generator,
                                         scales=scales)


class LevelStack(nn.ModuleList):
    """The model's levels, bottom first: an ``nn.ModuleList`` whose items are typed :class:`Level`."""

    @overload
    def __getitem__(self, idx: int) -> Level: ...

    @overload
    def __getitem__(self, idx: slice) -> LevelStack: ...

    def __getitem__(self, idx: int | slice) -> Level | LevelStack:
        """The level at ``idx``, or the levels of a slice as a stack."""
        return cast("Level | LevelStack", super().__getitem__(idx))

    def __iter__(self) -> Iterator[Level]:
        """The levels, bottom first."""
        return cast("Iterator[Level]", super().__iter__())
