"""Probe level 1 in isolation: train a fresh level 1 on the frozen level-0 latents of a trained run.

The fresh level is built from the run's own level-1 block (with optional overrides) and trained
alone; its contrastive reconstruction loss and top-1 retrieval accuracy show how learnable level 0's
latents are. A control replaces them with vectors drawn from 500 random unit vectors (how fast
level 1 learns when its inputs are well spread).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from zonkey.core.model.hierarchy import latents_to_sequence
from zonkey.core.model.inference import split_batch
from zonkey.core.model.level import Level
from zonkey.core.nn.sphere import to_sphere
from zonkey.core.recipe import apply_override, recipe_to_dict, validate_recipe
from zonkey.data import load_corpus
from zonkey.diagnose import DiagnosticError

#: random unit vectors the ``random`` control draws level 1's inputs from
RANDOM_VOCAB = 500


@dataclass
class ProbeRow:
    """The fresh level 1 at one training step (measured on that step's batch, before its update)."""

    step: int
    recon_clean: float  # contrastive reconstruction loss
    top1: float  # top-1 retrieval accuracy of the level-0 latents on the own spans
    mean_segment: float  # level-0 units per level-1 segment

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    def line(self) -> str:
        """One text row, under :data:`HEADER`."""
        return f"{self.step:4d}  {self.recon_clean:11.3f}  {self.top1:.4f}  {self.mean_segment:.2f}"


#: the header of the text rows
HEADER = "step  recon_clean  top1  mean_segment"


def probe_block(model: Any, overrides: Sequence[str] = (), only: Sequence[str] | None = None) -> Any:
    """The run's level-1 recipe block with ``overrides`` applied and validated.

    Args:
        model: a trained ``ZonkeyModel`` with at least two levels.
        overrides: ``FIELD=VALUE`` items on the level-1 block (``n_compress=4``, ``splitter.layers=2``;
            YAML values), validated with the whole recipe.
        only: loss terms to keep; every other term of the block gets weight 0 (``None``: keep all).

    Returns:
        The level-1 block of the validated recipe.

    Raises:
        DiagnosticError: the model has one level, or ``only`` names a term the block does not have.
        RecipeError: an override is malformed or does not validate.
    """
    if len(model.recipe.model.levels) < 2:
        raise DiagnosticError("the recipe has one level; the probe needs a level-1 block")
    data = recipe_to_dict(model.recipe)
    for item in overrides:
        data = apply_override(data, f"model.levels.1.{item}", source="--set")
    if only is not None:
        terms = data["model"]["levels"][1]["losses"]
        unknown = sorted(set(only) - set(terms))
        if unknown:
            raise DiagnosticError(f"unknown loss terms to keep: {', '.join(unknown)} (the level-1 block has {', '.join(sorted(terms))})")
        for k in terms:
            if k not in only:
                terms[k] = 0.0
    return validate_recipe(data, source="the probed recipe").model.levels[1]


def probe_level1(model: Any, block: Any, *, steps: int = 400, lr: float = 2e-3, random: bool = False,
                 same_cos: float | None = None, seed: int = 0, every: int = 50) -> Iterator[ProbeRow]:
    """Train a fresh level 1 from ``block`` on the run's frozen level-0 latents (its training split).

    Args:
        model: a trained ``ZonkeyModel`` with at least two levels; only read.
        block: the level-1 recipe block to build (see :func:`probe_block`).
        steps: optimizer steps; rows at steps 0, ``every``, ... up to ``steps``.
        lr: AdamW's learning rate.
        random: replace each level-0 latent (s, k·d) by one of :data:`RANDOM_VOCAB` random unit vectors.
        same_cos: treat every candidate with cosine > ``same_cos`` to the target as the same unit, never a
            negative (``None``: only exact copies).
        seed: seeds torch's global generator (initialisation, the random control).
        every: steps between rows (>= 1).

    Returns:
        An iterator of rows, each yielded as soon as it is measured.

    Raises:
        DiagnosticError: ``every`` < 1, ``steps`` < 0 or ``same_cos`` outside (-1, 1].
    """
    if every < 1 or steps < 0:
        raise DiagnosticError(f"steps must be >= 0 and every >= 1, got steps {steps}, every {every}")
    if same_cos is not None and not -1.0 < same_cos <= 1.0:
        raise DiagnosticError(f"same_cos must be in (-1, 1], got {same_cos}")
    torch.manual_seed(seed)
    tol = 1e-6 if same_cos is None else 1.0 - same_cos
    level = Level(block, 1, model.attention, same_tol=tol)
    return _train(model, level, steps, lr, random, every)


def _train(model: Any, level: Level, steps: int, lr: float, random: bool, every: int) -> Iterator[ProbeRow]:
    batches = load_corpus(model.recipe.data).batches("train", seed=0, batch_bytes=model.recipe.data.batch_bytes)
    opt = torch.optim.AdamW(level.parameters(), lr)
    vocab = to_sphere(torch.randn(RANDOM_VOCAB, level.cfg.d_model))
    for step in range(steps + 1):
        b = batches.batch(step)
        with torch.no_grad():
            seg = split_batch(model, b).segments
            z = model.levels[0].compress(seg.vectors, seg.log_existence)  # (s, k·d)
            if random:
                z = vocab[torch.randint(0, len(vocab), (z.shape[0],))]
            seq = latents_to_sequence(z, seg.doc, b.tokens.shape[0])
        level.train()
        out = level(seq.x, seq.valid)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if step % every == 0:
            yield ProbeRow(step, float(out.terms["recon_clean"].detach()), out.stats["train_recon_acc"],
                           out.stats["mean_segment"])
