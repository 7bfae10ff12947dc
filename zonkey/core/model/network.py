"""The whole model: byte embedding (tied with the level-0 output head) and the stack of levels.

``build_model(recipe)`` is the only constructor; ``ZonkeyModel.from_run(run_dir)`` (behind
``zonkey.load``) calls it on the saved ``recipe.json`` and loads the weights strictly.

The encoder walk up the hierarchy is written once, in :meth:`ZonkeyModel.walk`: level 0 reads the
byte embeddings, every level splits its sequence and compresses each segment to a latent, and the
latents in BOS order are the next level's sequence. Training (:meth:`ZonkeyModel.forward`) adds
each level's losses on top of that walk; splitting, reconstruction, infilling and evaluation read
its passes (:meth:`ZonkeyModel.encode`). The user API on top of the model is :mod:`zonkey.api`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zonkey.core.checkpoint import load_weights, read_run_recipe
from zonkey.core.contracts.outputs import LevelOutput, LevelPass, ModelOutput, Segments
from zonkey.core.contracts.shapes import BYTE_VOCAB
from zonkey.core.model.hierarchy import latents_to_sequence
from zonkey.core.model.level import Level, LevelStack
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.recipe import Recipe, RecipeError, recipe_to_dict

__all__ = ["LevelOutput", "LevelPass", "ModelOutput", "ZonkeyModel", "build_model", "own_slot_rows", "scale_grad"]


#: segments compressed per forward pass when a bank is encoded
SEGMENT_BATCH = 2048


class ZonkeyModel(nn.Module):
    """Byte embedding + levels. Level 0 reads UTF-8 bytes; level l+1 reads level l's latents.

    Args:
        recipe: the validated recipe (its ``model`` section builds the levels).
    """

    def __init__(self, recipe: Recipe) -> None:
        super().__init__()
        self.recipe = recipe
        mcfg = recipe.model
        self.attention = mcfg.attention.build()
        self.embed = nn.Parameter(torch.randn(BYTE_VOCAB, mcfg.levels[0].d_model))
        self.levels = LevelStack(Level(lc, i, self.attention, mcfg.byte_loss, packing=mcfg.level_packing(i),
                                       packing_tail=mcfg.level_packing_tail(i) == "stand_in")
                                 for i, lc in enumerate(mcfg.levels))

    @classmethod
    def from_run(cls, run_dir: str | Path, *, use_ema: bool = True,
                 device: str | torch.device = "cpu", verify: bool = True) -> ZonkeyModel:
        """Rebuild a trained model from a run (or step) directory, in eval mode.

        Reads and validates ``recipe.json``, builds the model with :func:`build_model` and loads
        the newest checkpoint strictly. With ``use_ema`` the EMA weights replace the model weights
        they cover (buffers an EMA does not track come from the model weights). A prior's bank
        whose segments were kept is encoded again by the loaded encoder (the averaged weights'
        latents, not those of the training weights that last refreshed it).

        Args:
            run_dir: ``RUN`` or ``RUN/checkpoints/step-N``.
            use_ema: prefer the EMA weights when the checkpoint has them.
            device: where the model is moved.
            verify: check the checkpoint files against the SHA-256 in state.json.

        Returns:
            The model, in eval mode.

        Raises:
            CheckpointError: missing/invalid recipe.json, an invalid recipe, no checkpoint, corrupt
                files, or weights that don't match the model.
        """
        model = build_model(read_run_recipe(run_dir))
        load_weights(model, run_dir, use_ema=use_ema, verify=verify)
        model = model.to(device).eval()
        if isinstance(model, ZonkeyModel):  # (a recipe's builder may return another module)
            model.encode_banks()
        return model

    @torch.no_grad()
    def encode_segments(self, strings: Sequence[bytes]) -> Tensor:
        """Each segment's level-0 latent, compressed from its own bytes alone.

        Slots past the segment have existence 0 (log −inf), as ``straight_through`` existence gives
        every segment inside a text, so the result equals the latent the encoder gives the segment
        wherever it occurs.

        Args:
            strings: segments of 1 to ``max_segment`` bytes.

        Returns:
            (K, D) latents.

        Raises:
            ValueError: an empty segment or one longer than ``max_segment``.
        """
        level = self.levels[0]
        m = level.cfg.max_segment
        device = self.table.device
        out = torch.zeros(len(strings), level.latent_dim, device=device)
        for a in range(0, len(strings), SEGMENT_BATCH):
            chunk = strings[a:a + SEGMENT_BATCH]
            tokens = torch.zeros(len(chunk), m, dtype=torch.long)
            lengths = torch.zeros(len(chunk), dtype=torch.long)
            for i, s in enumerate(chunk):
                if not 1 <= len(s) <= m:
                    raise ValueError(f"a bank segment has {len(s)} bytes; it must have 1 to {m}")
                tokens[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
                lengths[i] = len(s)
            tokens, lengths = tokens.to(device), lengths.to(device)
            own = torch.arange(m, device=device)[None] < lengths[:, None]  # (k, m)
            x = self.embed_bytes(tokens, own)
            log_e = torch.zeros(own.shape, device=device).masked_fill(~own, float("-inf"))
            out[a:a + len(chunk)] = level.compress(x, log_e)
        return out

    @torch.no_grad()
    def encode_banks(self) -> int:
        """Encode the level-0 prior bank's kept segments again with the current encoder.

        A bank is a function of the encoder: after the weights change (a loaded weight average, a
        few training steps) its latents are recomputed from its segments' bytes. A bank set
        without its segments is left as it is.

        Returns:
            the banks encoded (0 or 1).
        """
        prior = self.levels[0].prior
        bank = prior.bank if prior is not None else None
        if bank is None or not bank.ready:
            return 0
        strings = bank.strings()
        if not strings:
            return 0
        bank.set_latents(self.encode_segments(strings))
        return 1

    def with_sample_settings(self, overrides: Sequence[str]) -> ZonkeyModel:
        """Change the recipe's generation defaults (``sample.*``) in place, e.g. for an evaluation.

        Args:
            overrides: ``sample.key=value`` strings, applied in order and validated as the recipe's
                ``sample`` section.

        Returns:
            the model itself.

        Raises:
            RecipeError: an override outside ``sample.``, or a value that does not validate.
        """
        if not overrides:
            return self
        for text in overrides:
            if not text.strip().startswith("sample."):
                raise RecipeError(f"override {text!r}: only sample.* settings can change after training "
                                  "(the rest of the recipe describes the trained weights)")
        self.recipe = Recipe.from_dict(recipe_to_dict(self.recipe), source="the run's recipe", overrides=overrides)
        return self

    @property
    def table(self) -> Tensor:
        """(256, d0) byte embedding table on the sphere (input embedding and tied output head)."""
        return to_sphere(self.embed)

    def embed_bytes(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """``tokens`` (b, n) -> (b, n, d0), zero on padding."""
        x = self.table[tokens]
        # in place without gradients: a long document's (b, n, d0) is not held twice
        return x.masked_fill(~valid[..., None], 0.0) if torch.is_grad_enabled() else x.masked_fill_(~valid[..., None], 0.0)

    def walk(self, tokens: Tensor, valid: Tensor, *, sample: bool | None = False,
             generator: torch.Generator | None = None, upto: int | None = None) -> Iterator[LevelPass]:
        """The encoder walk up the hierarchy, one :class:`LevelPass` per level 0 .. upto−1.

        Each level splits its sequence and compresses its segments; their latents, in BOS order
        per document, become the next level's sequence. That sequence (the pass's ``above``) is
        built when the walk is asked for the next pass, so whatever the consumer does with a pass
        (training adds the level's losses) happens before it, in the order the training pass has
        always drawn its randomness in. While gradients are enabled, the latents a level passes up
        carry the gradient scaling of its ``grad_from_above`` (``latents`` and ``split``).

        Args:
            tokens: (b, n) byte values.
            valid: (b, n) bool.
            sample: sample the BOS decisions (True), threshold them at 0.5 (False, inference), or
                follow the training mode (None, the training pass).
            generator: source of the BOS sampling.
            upto: number of levels to walk (default: all).

        Yields:
            the pass of every level, bottom up.
        """
        b = tokens.shape[0]
        x, v = self.embed_bytes(tokens, valid), valid
        for i, level in enumerate(self.levels[:upto]):
            split, z = level.encode(x, v, sample=sample, tokens=tokens if i == 0 else None, generator=generator)
            p = LevelPass(index=i, x=x, valid=v, split=split, latents=z)
            yield p
            lifted = torch.is_grad_enabled() and i + 1 < len(self.levels)
            up = _latents_for_above(level, p) if lifted else z
            p.above = latents_to_sequence(up, split.segments.doc, b)
            x, v = p.above.x, p.above.valid
            del p, split, z, up  # a pass the consumer dropped is freed before the next level runs

    def encode(self, tokens: Tensor, valid: Tensor, *, sample: bool | None = False,
               generator: torch.Generator | None = None, upto: int | None = None) -> list[LevelPass]:
        """Every pass of :meth:`walk` (deterministic splits by default), each with its ``above``.

        Args:
            tokens: (b, n) byte values.
            valid: (b, n) bool.
            sample: as :meth:`walk`.
            generator: as :meth:`walk`.
            upto: as :meth:`walk`.

        Returns:
            one pass per level 0 .. upto−1.
        """
        return list(self.walk(tokens, valid, sample=sample, generator=generator, upto=upto))

    def forward(self, tokens: Tensor, valid: Tensor, *, generator: torch.Generator | None = None,
                scales: dict[str, float] | None = None) -> ModelOutput:
        """Training pass over a batch of byte sequences: the encoder walk with each level's losses.

        Args:
            tokens: (b, n) byte values.
            valid: (b, n) bool.
            generator: source of the split's and the objectives' randomness (default: torch's global one).
            scales: curriculum multipliers (``{"l1": 0.3, "l0.diffusion": 1.0}``), see
                ``train.curriculum``. Levels that are switched off together with all levels above
                them are not run.

        Returns:
            the total loss, every level's terms and statistics (prefixed ``l{i}.``) and outputs.
        """
        scales = scales or {}
        table = self.table
        n_levels = len(self.levels)
        upto = next((i for i in range(n_levels) if all(scales.get(f"l{j}", 1.0) == 0.0 for j in range(i, n_levels))),
                    n_levels)
        total = table.new_zeros(())
        terms: dict[str, Tensor] = {}
        stats: dict[str, float] = {}
        outs: list[LevelOutput] = []
        passes: list[LevelPass] = []
        for p in self.walk(tokens, valid, sample=None, generator=generator, upto=upto):
            i, level = p.index, self.levels[p.index]
            if i > 0:
                stats[f"l{i}.seq_len"] = float(p.x.shape[1])
            pre = f"l{i}."
            term_scales = {k[len(pre):]: v for k, v in scales.items() if k.startswith(pre)}
            out = level.losses(p.x, p.valid, p.split, p.latents, tokens=tokens, table=table, generator=generator,
                               scales=term_scales)
            w_dec = level.cfg.losses.decode * term_scales.get("decode", 1.0)
            if i >= 1 and w_dec > 0:
                out.terms["decode"], acc = self._decode_term(out, outs[i - 1], level.cfg.decode_fraction, generator)
                out.stats["decode_acc"] = float(acc)
                out.loss = out.loss + w_dec * out.terms["decode"]
            w_prior = level.cfg.losses.prior * term_scales.get("prior", 1.0)
            if level.prior is not None and w_prior > 0:
                # the prior learns the sequence of this level's latents without reshaping them
                seq = latents_to_sequence(p.latents.detach(), p.split.segments.doc, tokens.shape[0])
                classes = self._bank_classes(level, p.split.segments, tokens, seq) if i == 0 else None
                out.terms["prior"], prior_stats = level.prior.loss(seq.x, seq.valid, generator, classes)
                out.stats.update(prior_stats)
                out.loss = out.loss + w_prior * out.terms["prior"]
            total = total + scales.get(f"l{i}", 1.0) * out.loss
            terms.update({f"l{i}.{k}": v for k, v in out.terms.items()})
            stats.update({f"l{i}.{k}": v for k, v in out.stats.items()})
            outs.append(out)
            passes.append(p)
        if 0 < upto < n_levels and passes[-1].above is not None:
            # the level above is switched off, but the walk built its sequence: report its length
            stats[f"l{upto}.seq_len"] = float(passes[-1].above.x.shape[1])
        return ModelOutput(loss=total, terms=terms, stats=stats, levels=outs)

    @staticmethod
    def _bank_classes(level: Level, seg: Segments, tokens: Tensor, seq: Any) -> Tensor | None:
        """(b, n) each level-0 position's bank entry, found by its segment's bytes (K: "other").

        Exact while the encoder moves between the bank's refreshes, where the nearest latent is
        not; None when the prior has no bank with its segments kept.
        """
        bank = level.prior.bank if level.prior is not None else None
        if bank is None or not bank.ready:
            return None
        m = level.cfg.max_segment
        rows = tokens[seg.doc[:, None], seg.positions].tolist()
        spans = seg.span.clamp(max=m).tolist()
        if not bank.has_segments():  # a bank set without its segments (older runs)
            return None
        idx = bank.lookup([bytes(r[:n]) for r, n in zip(rows, spans, strict=True)])
        out = torch.full(seq.valid.shape, bank.size, dtype=torch.long, device=tokens.device)
        return out.index_put((seg.doc, seq.position), idx.to(tokens.device))

    @staticmethod
    def _decode_term(upper: LevelOutput, below: LevelOutput, fraction: float = 1.0,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The ``decode`` term of level l >= 1: (loss, top-1 accuracy).

        Each own-span slot of its clean decoding is the latent of one level-(l−1) segment (its
        document position is that segment's rank in the document); level l−1 decodes it and scores
        it against that segment's own targets. With ``fraction`` < 1 a random subset of those slots
        (at least one) is decoded.
        """
        seg = upper.split.segments
        rows = own_slot_rows(seg, below.split.segments)
        assert upper.decoded is not None and below.decode_loss is not None
        z = upper.decoded[seg.own_span]
        if fraction < 1.0 and rows.shape[0] > 1:
            keep = max(1, round(fraction * rows.shape[0]))
            pick = torch.randperm(rows.shape[0], device=rows.device, generator=generator)[:keep]
            z, rows = z[pick], rows[pick]
        return below.decode_loss(to_sphere(z), rows)


def own_slot_rows(seg: Segments, seg_below: Segments) -> Tensor:
    """The level-(l−1) segment each own-span slot of level l's segments stands for.

    Slots are taken in ``own_span`` order. Level l's positions are ranks of level-(l−1) segments in
    their document, and both are sorted by (document, start), so the result is a permutation of
    ``arange(seg_below.num)`` (the identity when the own spans tile every document).

    Args:
        seg: level l's segments (s, m).
        seg_below: level l−1's segments (s',).

    Returns:
        (number of own-span slots,) long indices into level l−1's segments.
    """
    own = seg.own_span  # (s, m)
    counts = torch.bincount(seg_below.doc, minlength=seg.n_docs)
    offsets = torch.cumsum(counts, 0) - counts
    return offsets[seg.doc[:, None].expand_as(own)[own]] + seg.positions[own]


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: float) -> Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.alpha, None


def scale_grad(x: Tensor, alpha: float) -> Tensor:
    """``x`` unchanged in the forward pass, its gradient multiplied by ``alpha`` in the backward pass.

    ``x`` may hold -inf (e.g. log existence on padding).
    """
    if alpha == 1.0:
        return x
    if alpha == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, alpha)


def _latents_for_above(level: Level, out: LevelPass) -> Tensor:
    """Level ``level``'s clean latents as the level above reads them.

    The same values, with the gradient that comes back scaled by ``grad_from_above.latents`` (all
    of it) and ``grad_from_above.split`` (the part reaching the split, through a second compressor
    pass under scaled existence).
    """
    grad = level.cfg.grad_from_above
    if grad.latents == 0.0:
        return out.latents.detach()
    up = out.latents
    if grad.split != 1.0:
        seg = out.split.segments
        up = level.compress(seg.vectors, scale_grad(seg.log_existence, grad.split), cut=level.segment_cut(seg))
    return scale_grad(up, grad.latents)


def build_model(recipe: Recipe) -> ZonkeyModel:
    """Build the model a validated recipe describes (no weights loaded)."""
    return ZonkeyModel(recipe)
