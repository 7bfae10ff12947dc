"""An ablation grid: which recipe, which swaps, which seeds, and the run directory of every cell.

A swap is ``KEY=V1,V2,...``: the recipe value at the dotted ``KEY`` takes each value in turn (the
values are split at the commas outside braces and brackets, so ``{name: fixed, every: 5}`` is one
value). Several keys before the ``=``, comma-separated, take the same value together
(``model.levels.0.objective,model.levels.1.objective=ddmm,flow``). A value naming a component
swaps it for that component with its default fields, as ``--set`` does, except the component
the recipe already has there, which is kept as the recipe configures it. Several swaps make the
cartesian product of their values. A recipe may carry its grid under ``ablation:`` (set aside by
every other command)::

    ablation:
      swaps: {model.levels.0.splitter: [learned, fixed, entropy, whitespace]}
      seeds: 3
      baselines: [ar]        # also train and evaluate the autoregressive baseline
      eval: {max_batches: 8, samples: 100, infill: 100}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zonkey.core.contracts.registry import ALL_KINDS
from zonkey.core.evaluate.run import EvalSettings
from zonkey.core.recipe import Recipe, RecipeError, read_yaml, recipe_to_dict
from zonkey.core.recipe.overrides import parse_override
from zonkey.errors import ZonkeyError

SwapValue = str | int | float | bool | dict[str, Any] | None


class AblationSpec(BaseModel):
    """The ``ablation:`` block of a recipe (every field also a ``zonkey ablate`` option)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    swaps: dict[str, list[SwapValue]] = Field(default_factory=dict, description="dotted key(s) -> values")
    seeds: int = Field(default=3, ge=1, description="seeds per variant: the recipe's train.seed, +1, +2, ...")
    steps: int | None = Field(default=None, ge=1, description="train.steps of every run (null: the recipe's)")
    baselines: list[Literal["ar"]] = Field(default_factory=list, description="baselines trained beside the grid")
    eval: EvalSettings = EvalSettings(samples=100, infill=100)


class GridError(ZonkeyError, ValueError):
    """A swap or grid that cannot be read; the message names it."""


@dataclass
class Variant:
    """One cell of the grid: its name and the overrides that make it from the recipe."""

    name: str
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None  # "ar": the autoregressive baseline instead of the recipe's model

    @property
    def slug(self) -> str:
        """The variant's folder name."""
        return re.sub(r"[^A-Za-z0-9._=+-]+", "_", self.name).strip("_") or "base"


def split_values(text: str) -> list[str]:
    """``a,{b: 1, c: 2},[3, 4]`` -> the three values (commas inside braces and brackets kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out.append(cur.strip())
    return out


def parse_swap(text: str) -> tuple[list[str], list[SwapValue]]:
    """``KEY[,KEY...]=V1,V2`` -> (keys, values), each value read as YAML.

    Raises:
        GridError: no ``=``, an empty key or value, or invalid YAML.
    """
    if "=" not in text:
        raise GridError(f"--swap {text!r}: expected KEY=VALUE1,VALUE2 (e.g. model.levels.0.splitter=learned,fixed)")
    left, right = text.split("=", 1)
    keys = [k.strip() for k in left.split(",")]
    for k in keys:
        if not k or any(not part for part in k.split(".")):
            raise GridError(f"--swap {text!r}: empty key or path element")
    raws = split_values(right)
    if not right.strip() or any(not r for r in raws):
        raise GridError(f"--swap {text!r}: an empty value")
    values: list[SwapValue] = []
    for r in raws:
        try:
            values.append(yaml.safe_load(r))
        except yaml.YAMLError:
            raise GridError(f"--swap {text!r}: {r!r} is not a valid YAML value") from None
    return keys, values


def _node(data: Any, key: str) -> Any:
    """The value at a dotted key of a resolved recipe mapping (None where there is none)."""
    node = data
    for part in key.split("."):
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _label(value: SwapValue) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


def _override(key: str, value: SwapValue, base: dict[str, Any]) -> str | None:
    """The ``--set`` string of one swapped value (None: the recipe's own component, kept)."""
    current = _node(base, key)
    is_kind = key.rsplit(".", 1)[-1] in ALL_KINDS
    if isinstance(value, str) and isinstance(current, dict) and current.get("name") == value and is_kind:
        return None
    raw = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={raw}"


def build_variants(swaps: dict[str, list[SwapValue]], base: dict[str, Any]) -> list[Variant]:
    """The cartesian product of the swaps as variants, named ``key=value+key=value``.

    Args:
        swaps: ``"k1,k2"`` (keys that move together) -> values.
        base: the resolved recipe as a mapping (to keep its own components).

    Returns:
        The variants (one, named ``base``, without swaps).
    """
    dims = [(k.split(","), vals) for k, vals in swaps.items()]
    lasts = [keys[0].rsplit(".", 1)[-1] for keys, _ in dims]
    short = [last if lasts.count(last) == 1 else keys[0] for (keys, _), last in zip(dims, lasts, strict=True)]
    out = []
    for combo in itertools.product(*(vals for _, vals in dims)):
        overrides = [o for (keys, _), v in zip(dims, combo, strict=True) for k in keys
                     if (o := _override(k, v, base)) is not None]
        name = "+".join(f"{s}={_label(v)}" for s, v in zip(short, combo, strict=True)) or "base"
        out.append(Variant(name, overrides))
    return out


@dataclass
class Grid:
    """A resolved ablation: the recipe file, the variants, the seeds and the folders."""

    recipe_path: Path
    recipe: Recipe
    spec: AblationSpec
    variants: list[Variant]
    out: Path
    extra: list[str] = field(default_factory=list)  # --set overrides applied to every run

    @property
    def seeds(self) -> list[int]:
        """The seeds of every variant."""
        return [self.recipe.train.seed + i for i in range(self.spec.seeds)]

    def run_dir(self, variant: Variant, seed: int) -> Path:
        """The run directory of one cell."""
        return self.out / variant.slug / f"seed-{seed}"

    def overrides(self, variant: Variant, seed: int) -> list[str]:
        """Every override of one cell's recipe: ``--set`` ones, the variant's, seed and steps."""
        steps = [f"train.steps={self.spec.steps}"] if self.spec.steps else []
        return [*self.extra, *variant.overrides, f"train.seed={seed}", *steps]

    def cell_recipe(self, variant: Variant, seed: int) -> Recipe:
        """The validated recipe of one cell.

        Raises:
            RecipeError: a swapped value the recipe does not accept (the message names it).
        """
        return Recipe.load(self.recipe_path, self.overrides(variant, seed))

    def fingerprint(self, variant: Variant, seed: int) -> str:
        """A hash of what one cell trains and how it is evaluated (a finished cell with another is redone)."""
        recipe = recipe_to_dict(self.cell_recipe(variant, seed))
        blob = json.dumps({"recipe": recipe, "baseline": variant.baseline, "eval": self.spec.eval.model_dump()},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_grid(recipe_path: Path, *, swaps: list[str] | None = None, seeds: int | None = None,
              steps: int | None = None, baselines: list[str] | None = None, eval_updates: dict[str, Any] | None = None,
              extra: list[str] | None = None, out: Path | None = None) -> Grid:
    """The grid of a recipe file: its ``ablation:`` block, with the command line's values on top.

    ``swaps`` given on the command line replace the recipe's swaps; the other options replace one
    field each.

    Raises:
        GridError: an invalid ``ablation:`` block, swap or baseline; no swap at all.
        RecipeError: an invalid recipe, or a variant's recipe that does not validate.
    """
    raw = read_yaml(recipe_path).get("ablation") or {}
    if not isinstance(raw, dict):
        raise GridError(f"{recipe_path}: ablation: expected a mapping (swaps, seeds, steps, baselines, eval)")
    try:
        spec = AblationSpec.model_validate(raw)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise GridError(f"{recipe_path}: ablation.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}") from None
    update: dict[str, Any] = {}
    if swaps:
        parsed = [parse_swap(s) for s in swaps]
        update["swaps"] = {",".join(keys): vals for keys, vals in parsed}
    if seeds is not None:
        update["seeds"] = seeds
    if steps is not None:
        update["steps"] = steps
    if baselines:
        bad = [b for b in baselines if b != "ar"]
        if bad:
            raise GridError(f"--baseline {bad[0]!r}: unknown baseline; known: ar")
        update["baselines"] = list(dict.fromkeys(baselines))
    if eval_updates:
        update["eval"] = spec.eval.model_copy(update=eval_updates)
    spec = spec.model_copy(update=update)
    if not spec.swaps:
        raise GridError(f"{recipe_path}: nothing to ablate: give --swap KEY=V1,V2 or an ablation.swaps block")
    for key in spec.swaps:
        for k in key.split(","):
            parse_override(f"{k}=x")  # a malformed key fails here, by name
    recipe = Recipe.load(recipe_path, list(extra or []))
    variants = build_variants(spec.swaps, recipe_to_dict(recipe))
    variants += [Variant(f"baseline={b}", baseline=b) for b in spec.baselines]
    if len({v.slug for v in variants}) != len(variants):
        raise GridError("two variants of the grid have the same name; give the swapped values distinct labels")
    grid = Grid(recipe_path, recipe, spec, variants, out or Path("runs") / f"ablate-{recipe.name}", list(extra or []))
    for v in variants:  # every cell validates before anything trains
        try:
            grid.cell_recipe(v, grid.seeds[0])
        except RecipeError as exc:
            raise RecipeError(f"variant {v.name}: {exc}") from None
    return grid
