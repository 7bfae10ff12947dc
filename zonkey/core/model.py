"""The whole model: byte embedding (tied with the level-0 output head) and the stack of levels.

``build_model(recipe)`` is the only constructor; ``ZonkeyModel.from_run(run_dir)`` (behind
``zonkey.load``) calls it on the saved ``recipe.json`` and loads the weights strictly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from zonkey.core.checkpoint import load_weights, read_run_recipe
from zonkey.core.hierarchy import latents_to_sequence
from zonkey.core.level import Level, LevelOutput
from zonkey.core.recipe import Recipe
from zonkey.core.shapes import BYTE_VOCAB
from zonkey.core.sphere import to_sphere


@dataclass
class ModelOutput:
    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)  # "l0.token" -> unweighted value
    stats: dict[str, float] = field(default_factory=dict)
    levels: list[LevelOutput] = field(default_factory=list)


class ZonkeyModel(nn.Module):
    """Byte embedding + levels. Level 0 reads UTF-8 bytes; level l+1 reads level l's latents.

    Levels >= 1 train with their splitter, compressor, objective and contrastive reconstruction;
    the stitcher and MLM are not built yet (their loss weights are ignored).
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        mcfg = recipe.model
        self.attention = mcfg.attention.build()
        self.embed = nn.Parameter(torch.randn(BYTE_VOCAB, mcfg.levels[0].d_model))
        self.levels = nn.ModuleList(Level(lc, i, self.attention, mcfg.byte_loss) for i, lc in enumerate(mcfg.levels))

    @classmethod
    def from_run(cls, run_dir: str | Path, *, use_ema: bool = True,
                 device: str | torch.device = "cpu") -> ZonkeyModel:
        """Rebuild a trained model from a run (or step) directory, in eval mode.

        Reads and validates ``recipe.json``, builds the model with :func:`build_model` and loads
        the newest checkpoint strictly. With ``use_ema`` the EMA weights replace the model weights
        they cover (buffers an EMA does not track come from the model weights).

        Args:
            run_dir: ``RUN`` or ``RUN/checkpoints/step-N``.
            use_ema: prefer the EMA weights when the checkpoint has them.
            device: where the model is moved.

        Returns:
            The model, in eval mode.

        Raises:
            CheckpointError: missing/invalid recipe.json, an invalid recipe, no checkpoint, corrupt
                files, or weights that don't match the model.
        """
        model = build_model(read_run_recipe(run_dir))
        load_weights(model, run_dir, use_ema=use_ema)
        return model.to(device).eval()

    @property
    def table(self) -> Tensor:
        """(256, d0) byte embedding table on the sphere (input embedding and tied output head)."""
        return to_sphere(self.embed)

    def embed_bytes(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """tokens (b, n) -> (b, n, d0), zero on padding."""
        return self.table[tokens].masked_fill(~valid[..., None], 0.0)

    def forward(self, tokens: Tensor, valid: Tensor, *, generator: Optional[torch.Generator] = None,
                scales: Optional[dict[str, float]] = None) -> ModelOutput:
        """Training pass over a batch of byte sequences (b, n).

        Args:
            scales: curriculum multipliers (``{"l1": 0.3, "l0.diffusion": 1.0}``), see ``train.curriculum``.
        """
        scales = scales or {}
        table = self.table
        x = table[tokens].masked_fill(~valid[..., None], 0.0)
        total = x.new_zeros(())
        terms: dict[str, Tensor] = {}
        stats: dict[str, float] = {}
        outs = []
        n_levels = len(self.levels)
        for i, level in enumerate(self.levels):
            if all(scales.get(f"l{j}", 1.0) == 0.0 for j in range(i, n_levels)):
                break  # this level and all above are switched off by the curriculum: skip their compute
            pre = f"l{i}."
            term_scales = {k[len(pre):]: v for k, v in scales.items() if k.startswith(pre)}
            out = level(x, valid, tokens=tokens, table=table, generator=generator, scales=term_scales)
            wl = scales.get(f"l{i}", 1.0)
            w_dec = level.cfg.losses.decode * term_scales.get("decode", 1.0)
            if i >= 1 and w_dec > 0:
                out.terms["decode"], acc = self._decode_term(out, outs[i - 1], level.cfg.decode_fraction, generator)
                out.stats["decode_acc"] = float(acc)
                out.loss = out.loss + w_dec * out.terms["decode"]
            total = total + wl * out.loss
            terms.update({f"l{i}.{k}": v for k, v in out.terms.items()})
            stats.update({f"l{i}.{k}": v for k, v in out.stats.items()})
            outs.append(out)
            if i + 1 < len(self.levels):
                # level i+1 reads level i's clean latents in BOS order (gradients flow down, scaled)
                seq = latents_to_sequence(_latents_for_above(level, out), out.split.segments.doc, tokens.shape[0])
                x, valid = seq.x, seq.valid
                stats[f"l{i + 1}.seq_len"] = float(x.shape[1])
        return ModelOutput(loss=total, terms=terms, stats=stats, levels=outs)


    @staticmethod
    def _decode_term(upper: LevelOutput, below: LevelOutput, fraction: float = 1.0,
                     generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """The ``decode`` term of level l >= 1: each own-span slot of its clean decoding is the
        latent of one level-(l−1) segment (its document position is that segment's rank in the
        document); level l−1 decodes it and scores it against that segment's own targets. With
        ``fraction`` < 1 a random subset of those slots (at least one) is decoded."""
        seg = upper.split.segments
        rows = own_slot_rows(seg, below.split.segments)
        z = upper.decoded[seg.own_span]
        if fraction < 1.0 and rows.shape[0] > 1:
            keep = max(1, round(fraction * rows.shape[0]))
            pick = torch.randperm(rows.shape[0], device=rows.device, generator=generator)[:keep]
            z, rows = z[pick], rows[pick]
        return below.decode_loss(to_sphere(z), rows)

    # -- public inference API (ARCHITECTURE.md §4) ----------------------------------------------
    def split(self, texts: Sequence[str] | str) -> list[dict[str, Any]]:
        """Deterministic level-0 segmentation of each text: ``{text, segments, p_bos, starts}``."""
        from zonkey.core.inference import split_texts

        texts = [texts] if isinstance(texts, str) else list(texts)
        return [t.as_dict() for t in split_texts(self, texts)]

    def reconstruct(self, texts: Sequence[str] | str, *, sigma: float = 0.0, steps: int = 4, seed: int = 0) -> list[str]:
        """text -> level-0 latents (optionally noised to ``sigma`` and denoised back) -> text."""
        from zonkey.core.inference import reconstruct_texts

        texts = [texts] if isinstance(texts, str) else list(texts)
        return reconstruct_texts(self, texts, sigma=sigma, steps=steps, seed=seed)


    def sample(self, n: int = 4, *, steps: Optional[int] = None, seed: int = 0, level: Optional[int] = None,
               return_details: bool = False) -> Any:
        """Generate ``n`` texts from noise (§9.1); ``return_details`` gives the SampleResult."""
        from zonkey.core.sample import sample as _sample

        res = _sample(self, n, steps=steps, seed=seed, level=level)
        return res if return_details else res.texts

    def infill(self, prefix: str, suffix: str, *, level: Optional[int] = None, gap: Optional[tuple[int, int] | int] = None,
               steps: Optional[int] = None, seed: int = 0, return_details: bool = False) -> Any:
        """Fill the gap between ``prefix`` and ``suffix`` (§9.2; either may be empty) and return
        prefix + gap + suffix; ``return_details`` gives ``{text, gap, score, gap_len, level,
        candidates}`` (see ``zonkey.core.infill``)."""
        from zonkey.core.infill import infill as _infill

        res = _infill(self, prefix, suffix, level=level, gap=gap, steps=steps, seed=seed)
        return res.as_dict() if return_details else res.text


def own_slot_rows(seg: Any, seg_below: Any) -> Tensor:
    """For every own-span slot of level l's segments (in ``own_span`` order), the index of the
    level-(l−1) segment it stands for. Level l's positions are ranks of level-(l−1) segments in
    their document, and both are sorted by (document, start), so the result is a permutation of
    ``arange(seg_below.num)`` (the identity when the own spans tile every document)."""
    own = seg.own_span  # (s, m)
    counts = torch.bincount(seg_below.doc, minlength=seg.n_docs)
    offsets = torch.cumsum(counts, 0) - counts
    return offsets[seg.doc[:, None].expand_as(own)[own]] + seg.positions[own]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: float) -> Tensor:  # noqa: D102
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return grad * ctx.alpha, None


def scale_grad(x: Tensor, alpha: float) -> Tensor:
    """x in the forward pass (it may hold -inf, e.g. log existence on padding); its gradient
    multiplied by ``alpha`` in the backward pass."""
    if alpha == 1.0:
        return x
    if alpha == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, alpha)


def _latents_for_above(level: Level, out: LevelOutput) -> Tensor:
    """Level ``level``'s clean latents as the level above reads them: the same values, with the
    gradient that comes back scaled by ``grad_from_above.latents`` (all of it) and
    ``grad_from_above.split`` (the part reaching the split, through a second compressor pass under
    scaled existence)."""
    grad = level.cfg.grad_from_above
    if grad.latents == 0.0:
        return out.latents.detach()
    up = out.latents
    if grad.split != 1.0:
        seg = out.split.segments
        up = level.compress(seg.vectors, scale_grad(seg.log_existence, grad.split))
    return scale_grad(up, grad.latents)


def build_model(recipe: Recipe) -> ZonkeyModel:
    """Build the model a validated recipe describes (no weights loaded)."""
    return ZonkeyModel(recipe)
