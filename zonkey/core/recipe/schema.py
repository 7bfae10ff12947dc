"""The recipe's model section and the whole recipe: static pydantic classes.

``Recipe`` -> ``ModelConfig`` (attention, the level-0 byte loss, the levels) -> ``LevelConfig``
(sizes, components, loss weights, and the per-level groups ``schedule`` and ``grad_from_above``).
Component nodes are validated against the registry when a recipe is validated
(:mod:`zonkey.core.recipe.components`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from zonkey.core.recipe.components import (
    AttentionNode,
    CompressorNode,
    DenoiserNode,
    ObjectiveNode,
    PriorNode,
    SplitterNode,
    StitcherNode,
    component_field,
)
from zonkey.core.recipe.loading import load_as, validate_as
from zonkey.core.recipe.migrate import SCHEMA_VERSION
from zonkey.core.recipe.overrides import apply_override_as
from zonkey.core.recipe.sections import DataConfig, LossWeights, SampleConfig, Strict, TrainConfig

#: The largest byte weight ``model.byte_loss.balance`` gives (relative to a mean of 1).
BALANCE_CAP = 30.0


class ByteLossConfig(Strict):
    """How level 0's byte loss weighs each byte.

    It sits beside the byte table, at the model level, because only level 0 has a byte loss
    (levels >= 1 reconstruct latents contrastively).
    """

    focal: float = Field(default=0.0, ge=0, le=5, description=(
        "γ of a focal byte loss, (1 − p)^γ · cross-entropy, in every byte loss of level 0 (clean, dirty, and "
        "the `decode` term of the level above); 0 is the paper's plain cross-entropy"))
    balance: float = Field(default=0.0, ge=0, le=1, description=(
        "α of a class-balanced byte loss: each byte's cross-entropy is weighted by its frequency in the "
        f"training split to the power −α (normalised to mean 1 over the training bytes, capped at {BALANCE_CAP:g}), "
        "so bytes too rare to be decoded at all (accents, rare capitals) are learned; 0 is the plain loss"))


class ScheduleConfig(Strict):
    """A level's own learning-rate schedule (the default follows the global one)."""

    lr_start: int = Field(default=0, ge=0, le=10**8, description=(
        "step at which this level's parameters start their own warm-up and cosine decay (over the steps left); "
        "before it their lr is 0. Set it to the step the level's curriculum ramp starts, so that a level "
        "brought in late does not train only on the tail of the global schedule"))
    lr_scale: float = Field(default=1.0, gt=0, le=1000, description="multiplies train.lr for this level's parameters")

    @property
    def is_own(self) -> bool:
        """Whether the level leaves the global schedule (its parameters then get their own groups)."""
        return bool(self.lr_start) or self.lr_scale != 1.0


class GradFromAbove(Strict):
    """How much of the level above's gradient reaches this level."""

    latents: float = Field(default=1.0, ge=0, le=1, description=(
        "scale of the level above's gradient into this level (through the latents it reads): 1 as in the "
        "paper (§5.1, §8), 0 trains the level above on this level's latents without changing them"))
    split: float = Field(default=1.0, ge=0, le=1, description=(
        "a further scale on the part of that gradient that reaches this level's split (its BOS probabilities, "
        "through the existence its latents are compressed under): 0 lets only this level's own losses place "
        "its boundaries while its compressor still learns from above (one more compressor pass when < 1)"))


class LevelConfig(Strict):
    """One level of the hierarchy.

    Its sizes, its components, its loss weights, its own schedule and how much gradient it takes
    from the level above.
    """

    d_model: int = Field(default=64, ge=4, le=16384, description="width of the level")
    max_segment: int = Field(default=16, ge=2, le=4096, description="m: length of every (overlapping) segment")
    n_compress: int = Field(default=4, ge=1, le=256, description="k: compression vectors per segment")
    heads: int = Field(default=4, ge=1, le=256)
    ffn_mult: int = Field(default=4, ge=1, le=64)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    decode_fraction: float = Field(default=1.0, gt=0, le=1, description=(
        "level >= 1: the share of its decoded own-span slots that the `decode` term sends through the level "
        "below each step (a fresh random subset; a compute saver, the term's expectation is unchanged)"))
    schedule: ScheduleConfig = ScheduleConfig()
    grad_from_above: GradFromAbove = GradFromAbove()
    losses: LossWeights = LossWeights()
    splitter: SplitterNode = component_field("splitter")
    compressor: CompressorNode = component_field("compressor")
    denoiser: DenoiserNode = component_field("denoiser")
    objective: ObjectiveNode = component_field("objective")
    stitcher: StitcherNode | None = component_field(
        "stitcher", "a registered stitcher (default 'learned'); null: nothing is stitched, no stitcher loss")
    prior: PriorNode | None = Field(default=None, description=(
        "a registered prior over the sequence of this level's latents (e.g. {name: sequence}); samples and "
        "infills start from the highest level that has one. null: none"))
    packing: Literal["varlen", "buckets", "off"] | None = Field(default=None, description=(
        "this level's model.packing (null: the model's)"))
    packing_tail: Literal["dropped", "stand_in"] | None = Field(default=None, description=(
        "this level's model.packing_tail (null: the model's)"))

    @model_validator(mode="after")
    def _check(self) -> LevelConfig:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.n_compress >= self.max_segment:
            raise ValueError(f"n_compress ({self.n_compress}) must be < max_segment ({self.max_segment})")
        return self

    @property
    def latent_dim(self) -> int:
        """Width of one latent of this level, k · d (the next level's ``d_model``)."""
        return self.n_compress * self.d_model


class ModelConfig(Strict):
    """The model: the attention backend, level 0's byte loss and the stack of levels.

    Level l+1 reads level l's latents.
    """

    attention: AttentionNode = component_field("attention")
    byte_loss: ByteLossConfig = ByteLossConfig()
    levels: list[LevelConfig] = Field(min_length=1)
    packing: Literal["varlen", "buckets", "off"] = Field(
        default="off", description="training: run every segment at its own length (its span and the first slot "
        "past it) instead of at max_segment slots, either in one call whose linear layers see only those "
        "positions ('varlen') or grouped into a few length buckets ('buckets'); both need causal denoiser "
        "slots. 'off' computes every segment at max_segment slots (the reference). Inference: encode each "
        "segment at its own length under straight_through existence")

    def level_packing(self, index: int) -> Literal["varlen", "buckets", "off"]:
        """The packing of level ``index``: its own ``packing``, or the model's."""
        own = self.levels[index].packing
        return self.packing if own is None else own

    def level_packing_tail(self, index: int) -> Literal["dropped", "stand_in"]:
        """The packing tail of level ``index``: its own ``packing_tail``, or the model's."""
        own = self.levels[index].packing_tail
        return self.packing_tail if own is None else own

    packing_tail: Literal["dropped", "stand_in"] = Field(
        default="dropped", description="packed levels, the existence BCE of the slots past a segment's cut, which are "
        "not computed: left out ('dropped'), or stood in for by the segment's last computed slot, whose term then "
        "counts once for each of them ('stand_in'; existence only falls along a segment)")

    @model_validator(mode="after")
    def _packing(self) -> ModelConfig:
        for i, level in enumerate(self.levels):
            packing = self.level_packing(i)
            if packing != "off" and getattr(level.denoiser, "slots", None) == "bidirectional":
                where = "packing" if level.packing is None else f"levels.{i}.packing"
                raise ValueError(f"{where}: {packing} decodes each segment at its own length, which needs "
                                 f"levels.{i}.denoiser.slots: causal (got bidirectional); or set {where}: off")
        return self

    @model_validator(mode="after")
    def _widths(self) -> ModelConfig:
        for i in range(1, len(self.levels)):
            below, here = self.levels[i - 1], self.levels[i]
            if here.d_model != below.latent_dim:
                raise ValueError(
                    f"levels.{i}.d_model is {here.d_model} but level {i}'s sequence is level {i - 1}'s latents, "
                    f"of width levels.{i - 1}.n_compress × levels.{i - 1}.d_model = "
                    f"{below.n_compress} × {below.d_model} = {below.latent_dim}"
                )
        return self


class Recipe(Strict):
    """A whole recipe: data, model (a list of per-level blocks), train and sample sections.

    Read one with :meth:`load` (a YAML or JSON file, ``base:`` resolved, ``--set`` overrides
    applied) or :meth:`from_dict`; the result is frozen (``recipe.model.levels[0].d_model``).
    """

    name: str = "recipe"
    description: str = ""
    schema_version: Literal[3] = SCHEMA_VERSION
    data: DataConfig = DataConfig()
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()

    @model_validator(mode="after")
    def _curriculum_levels(self) -> Recipe:
        n = len(self.model.levels)
        for i, r in enumerate(self.train.curriculum):
            if r.level >= n:
                raise ValueError(f"train.curriculum.{i}.term {r.term!r} names level {r.level}, "
                                 f"but the model has {n} level(s)")
        return self

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
        """Read, resolve (``base:``), override and validate a recipe file.

        A recipe without ``name`` is named after its file (a base's name is not inherited).
        Components registered by installed plugin packages are loaded first.

        Args:
            path: a YAML recipe, a run's saved ``recipe.json``, or a bundled recipe's name (``tiny``).
            overrides: ``a.b.c=value`` strings, applied in order.

        Returns:
            The validated recipe.

        Raises:
            RecipeError: unreadable file, invalid YAML, a bad ``base:`` or override, or a
                validation error (each with the file and the dotted path).
        """
        return load_as(cls, path, overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>", overrides: Sequence[str] = (),
                  base_dir: str | Path | None = None) -> Recipe:
        """Validate a recipe mapping.

        The saved metadata is set aside, an older schema upgraded, ``base:`` resolved and the
        overrides applied, in that order.

        Args:
            data: the recipe as plain data; it is not modified.
            source: what error messages name as the origin.
            overrides: ``a.b.c=value`` strings, applied in order after ``base:``.
            base_dir: where a relative ``base:`` path starts (default: the working directory).

        Returns:
            The validated, frozen recipe.

        Raises:
            RecipeError: one line per problem, ``source: dotted.path: message``.
        """
        return validate_as(cls, data, source=source, overrides=overrides, base_dir=base_dir)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, resolve and validate a recipe file: :meth:`Recipe.load`.

    Args:
        path: a YAML recipe, or a run's saved ``recipe.json``.
        overrides: ``a.b.c=value`` strings, applied in order.

    Returns:
        The validated recipe.

    Raises:
        RecipeError: as :meth:`Recipe.load`.
    """
    return Recipe.load(path, overrides)


def validate_recipe(data: dict[str, Any], *, source: str = "<dict>", overrides: Sequence[str] = (),
                    base_dir: str | Path | None = None) -> Recipe:
    """Validate a recipe mapping: :meth:`Recipe.from_dict`.

    Args:
        data: the recipe as plain data (not modified).
        source: what error messages name as the origin.
        overrides: ``a.b.c=value`` strings, applied in order after ``base:``.
        base_dir: where a relative ``base:`` path starts (default: the working directory).

    Returns:
        The validated, frozen recipe.

    Raises:
        RecipeError: as :meth:`Recipe.from_dict`.
    """
    return Recipe.from_dict(data, source=source, overrides=overrides, base_dir=base_dir)


def apply_override(data: dict[str, Any], text: str, *, source: str = "<dict>") -> dict[str, Any]:
    """Apply one ``a.b.c=value`` override to a copy of a recipe mapping, the value typed by :class:`Recipe`.

    Args:
        data: the recipe mapping (not modified).
        text: ``a.b.c=value``.
        source: the recipe's origin (kept for callers' messages).

    Returns:
        The new mapping.

    Raises:
        RecipeError: a malformed override, or a path that does not exist in ``data``'s shape.
    """
    return apply_override_as(Recipe, data, text, source=source)
