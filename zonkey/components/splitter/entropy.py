"""``entropy``: rule-based baseline (level 0 only), BLT's patching rule with a byte n-gram.

A BOS goes where the next-byte entropy of a small byte model exceeds a threshold θ: the bytes a
model cannot predict from the ones before them (mostly the first letters of words) start segments.
The byte model is an n-gram of the training split (:mod:`zonkey.components.splitter.byte_entropy`) and θ is set
by bisection on the training split so that the rule's mean segment length is ``target_segment``.
Nothing in it learns: ``zonkey train`` fits both before the first step (:meth:`EntropySplitter.fit`)
and they are saved with the run, the tables in the model's safetensors (integer buffers) and what
the fit measured in ``RUN/splitter-l0.json``.

Measured on the bundled Wikipedia sample (target 6 bytes, capacity 65,536, contexts seen twice or
more), held-out word-start F1 by order: 4: 0.901, 5: 0.853, 6: 0.801 (longer contexts reach into
the word and are sure of its first letter too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from zonkey.components.splitter.base import SplitterBase
from zonkey.components.splitter.byte_entropy import (
    ENTROPY_SCALE,
    PAD_KEY,
    bisect_threshold,
    fit_tables,
    mean_segment,
    position_entropy,
)
from zonkey.core.contracts.registry import ComponentConfig, register
from zonkey.core.contracts.shapes import LevelContext
from zonkey.core.nn.existence import P_EPS

#: bytes of training text the threshold's bisection reads at most (evenly spaced chunks)
BISECT_BYTES = 2 ** 20
UNFITTED = torch.iinfo(torch.int32).min


class NotFittedError(RuntimeError):
    """The entropy splitter was run before its byte model was fitted."""


class EntropySplitter(SplitterBase):
    """A BOS where the byte n-gram's next-byte entropy exceeds θ (level 0 only).

    Buffers (saved with the model): ``keys`` (order, capacity) int64 and ``entropy`` (order,
    capacity) int32, the n-gram's tables; ``threshold`` () int32, θ in 2^-16 bits.

    Raises:
        ValueError: built for a level above 0.
    """

    keys: Tensor
    entropy: Tensor
    threshold: Tensor

    def __init__(self, ctx: LevelContext, cfg: EntropySplitterConfig) -> None:
        if ctx.level != 0:
            raise ValueError("the entropy splitter reads bytes and only works at level 0")
        super().__init__(ctx, cfg.target_segment)
        self.cfg = cfg
        self.register_buffer("keys", torch.full((cfg.order, cfg.capacity), PAD_KEY, dtype=torch.int64))
        self.register_buffer("entropy", torch.zeros((cfg.order, cfg.capacity), dtype=torch.int32))
        self.register_buffer("threshold", torch.tensor(UNFITTED, dtype=torch.int32))

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run (or fitted tables were loaded)."""
        return int(self.threshold) != UNFITTED

    @property
    def threshold_bits(self) -> float:
        """θ in bits."""
        return int(self.threshold) / ENTROPY_SCALE

    def entropy_bits(self, tokens: Tensor) -> Tensor:
        """The next-byte entropy of every position, in bits.

        Args:
            tokens: (b, n) byte values, each row read from its own start.

        Returns:
            (b, n) float32 (meaningless on padding).
        """
        return position_entropy(tokens, self.keys, self.entropy).float() / ENTROPY_SCALE

    @torch.no_grad()
    def fit(self, chunks: Sequence[bytes]) -> dict[str, float | int | list[int] | list[float]]:
        """Count the byte n-gram on training ``chunks`` and set θ by bisection.

        Args:
            chunks: the training split as the trainer's batches hold it (each at most the recipe's
                ``max_doc_bytes``).

        Returns:
            What the fit measured: θ (bits), the mean segment length it gives on the training text,
            contexts kept per order, discounts, bytes counted and bytes bisected on.

        Raises:
            ValueError: no training text.
        """
        from zonkey.data.batches import make_batch

        cfg = self.cfg
        tables = fit_tables(chunks, order=cfg.order, capacity=cfg.capacity, min_count=cfg.min_count)
        self.keys.copy_(tables.keys)
        self.entropy.copy_(tables.entropy)
        real = [c for c in chunks if c]
        total = sum(len(c) for c in real)
        stride = max(1, -(-total // BISECT_BYTES))
        sample = list(real[::stride])
        width = max(len(c) for c in sample)
        batch = make_batch(sample, width, range(len(sample)), range(len(sample)))
        ent = position_entropy(batch.tokens, tables.keys, tables.entropy)
        if cfg.threshold is None:
            theta, length = bisect_threshold(ent, batch.valid, cfg.target_segment, self.m)
        else:
            theta = round(cfg.threshold * ENTROPY_SCALE)
            length = mean_segment(ent, batch.valid, theta, self.m)
        self.threshold.fill_(theta)
        return {"threshold_bits": theta / ENTROPY_SCALE, "mean_segment": length,
                "target_segment": cfg.target_segment, "order": cfg.order, "kept": tables.kept,
                "discounts": tables.discounts, "train_bytes": tables.train_bytes,
                "bisect_bytes": int(batch.valid.sum())}

    def bos_probabilities(self, x: Tensor, valid: Tensor, tokens: Tensor | None = None) -> Tensor:
        """BOS probabilities: 1 − ε where the entropy exceeds θ, ε elsewhere.

        Args:
            x: (b, n, d) the level's input vectors (not read).
            valid: (b, n) bool, False on padding.
            tokens: (b, n) byte values (required).

        Returns:
            (b, n) in (ε, 1 − ε), 0 on padding.

        Raises:
            ValueError: no tokens given.
            NotFittedError: the byte model has not been fitted.
        """
        if tokens is None:
            raise ValueError("the entropy splitter needs the byte tokens")
        if not self.fitted:
            raise NotFittedError("the entropy splitter has no byte model yet: `zonkey train` fits it on the "
                                 "training split (or call its fit(chunks))")
        high = position_entropy(tokens, self.keys, self.entropy) > self.threshold
        return torch.where(high, 1 - P_EPS, P_EPS).to(torch.float32).masked_fill(~valid, 0.0)


@register("splitter", "entropy")
class EntropySplitterConfig(ComponentConfig):
    """Baseline (level 0): a BOS where a byte n-gram's next-byte entropy exceeds θ (BLT's rule)."""

    name: Literal["entropy"] = "entropy"
    target_segment: float = Field(6.0, gt=1, le=4096, description="θ is bisected on the training split to this mean "
                                  "segment length (bytes)")
    order: int = Field(4, ge=1, le=7, description="n-gram order: the entropy reads up to order − 1 bytes before "
                       "each position")
    capacity: int = Field(65536, ge=1, le=2 ** 22, description="contexts kept per order at most (the most frequent); "
                          "the tables are saved with the model")
    min_count: int = Field(2, ge=1, le=10**9, description="contexts seen fewer times back off to a shorter one")
    threshold: float | None = Field(None, ge=0, le=8, description="θ in bits; null: bisected to target_segment")

    def build(self, ctx: LevelContext) -> EntropySplitter:
        """The module of this config for the level that ``ctx`` describes."""
        return EntropySplitter(ctx, self)
