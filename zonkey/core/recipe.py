"""YAML recipes: the validated description of a data source, a hierarchy of levels, training and
sampling.

A recipe is validated by pydantic before any tensor exists. Component nodes are
``{name: <registry name>, <that component's own fields>}`` and are validated against the
registered config class of that name (a discriminated union built from the registries, so
third-party components validate exactly like built-in ones). Every error names the file and the
full dotted path, e.g. ``recipes/x.yaml: model.levels.1.splitter.window: Input should be a valid
integer``.

Overrides use ``a.b.c=value`` (``model.levels.0.d_model=128``); the value is parsed as YAML and
typed by the schema (a value that fails validation as parsed is retried as the raw string, so
``data.source=1234`` still means the string ``"1234"`` where the field is a string). Pointing an
override at a component node with a plain name (``model.levels.0.splitter=fixed``) swaps the
component for that one with its default fields.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from zonkey.core.registry import KINDS, ensure_builtin_components, registry

SCHEMA_VERSION = 1
BALANCE_CAP = 30.0  # the largest byte weight `token_balance` gives (relative to a mean of 1)


class RecipeError(ValueError):
    """A recipe could not be read or does not validate. The message says where and what."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class DataConfig(_Strict):
    """Where the text comes from and how it is cut into batches."""

    source: str = Field("wiki", description="'wiki' (bundled Wikipedia sample), a local .txt/.jsonl/.parquet "
                        "file or folder, or 'hf:<dataset name>' (needs a network)")
    text_column: str = Field("text", description="column holding the text (jsonl/parquet/hub)")
    split: str = Field("train", description="split of a hub dataset")
    max_doc_bytes: int = Field(1024, ge=8, description="documents are chunked to at most this many bytes")
    batch_bytes: int = Field(4096, ge=8, description="byte budget of one batch")
    heldout_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="documents held out (by hash) for eval")
    max_docs: Optional[int] = Field(None, ge=1, description="use at most this many documents (after the split)")

    @model_validator(mode="after")
    def _budget(self) -> "DataConfig":
        if self.batch_bytes < self.max_doc_bytes:
            raise ValueError(f"batch_bytes ({self.batch_bytes}) must be >= max_doc_bytes ({self.max_doc_bytes})")
        return self


class LossWeights(_Strict):
    """Weight of every loss term of a level: the level loss is the weighted sum, never a mean."""

    token: float = Field(1.0, ge=0, description="level 0: byte cross-entropy with 2·atanh(cos) logits")
    recon_clean: float = Field(1.0, ge=0, description="contrastive reconstruction after light noise (level >= 1)")
    recon_dirty: float = Field(0.5, ge=0, description="reconstruction after heavy noise (both levels)")
    diffusion: float = Field(1.0, ge=0, description="the objective's own loss (DDMM mixed step, flow, plain)")
    bos: float = Field(1.0, ge=0, description="denoiser BOS/existence BCE against the splitter's existence")
    avg_bos: float = Field(1.0, ge=0, description="penalty on the average BOS probability above the target rate")
    long: float = Field(10.0, ge=0, description="long-segment probability penalty")
    short: float = Field(10.0, ge=0, description="short-segment probability penalty")
    collapse: float = Field(0.1, ge=0, description="cosine penalty between latents of different documents")
    mlm: float = Field(0.0, ge=0, description="masked prediction (off at level 0 by default)")
    decode: float = Field(0.0, ge=0, description="level >= 1: its decoded slots, read as latents of the level "
                          "below and decoded by that level's denoiser, must give back the level below's own targets "
                          "(bytes at level 0) and lengths; trains the round trip directly (not in the paper)")
    stitch_offset: float = Field(0.1, ge=0, description="stitcher offset regression")
    stitch_overlap: float = Field(0.1, ge=0, description="stitcher overlap reconstruction")


def _component_type(kind: str) -> Any:
    """The pydantic type of a component node of ``kind``: a union over its registered configs."""
    classes = tuple(e.config_cls for e in registry(kind).entries())
    if not classes:
        return Optional[None]
    # discriminated even with one entry, so an unknown name reads "unknown component ...; known: ..."
    return Annotated[Union[classes], Field(discriminator="name")]


DEFAULT_COMPONENTS = {"attention": "sdpa", "splitter": "learned", "compressor": "cls", "denoiser": "ddmm",
                      "objective": "ddmm", "stitcher": "learned"}


def _default_component(kind: str, name: str) -> Any:
    reg = registry(kind)
    if name in reg:
        return Field(default_factory=lambda: reg.config(name))
    return Field(None)


class Ramp(_Strict):
    """One curriculum entry (§8): the weight multiplier of ``term`` is ``low`` (default 0) before
    ``start``, moves linearly to ``high`` (default 1) at ``end`` and stays there. ``term`` is a
    level (``l1``: that level's whole loss) or one loss term of a level (``l0.diffusion``, any
    field of ``losses``). ``low``/``high`` other than 0/1 re-weight a term that is on throughout,
    e.g. ``{term: l0.avg_bos, start: 600, end: 900, low: 1, high: 2.5}``."""

    term: str = Field(..., pattern=r"^l\d+(\.[a-z_]+)?$")
    start: int = Field(0, ge=0)
    end: int = Field(0, ge=0)
    low: float = Field(0.0, ge=0, description="multiplier before start")
    high: float = Field(1.0, ge=0, description="multiplier from end on")

    @model_validator(mode="after")
    def _order(self) -> "Ramp":
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must be >= start ({self.start})")
        if "." in self.term and self.term.split(".", 1)[1] not in LossWeights.model_fields:
            raise ValueError(f"unknown loss term {self.term.split('.', 1)[1]!r}; terms: {', '.join(LossWeights.model_fields)}")
        return self

    def factor(self, step: int) -> float:
        if step < self.start:
            return self.low
        if step >= self.end:
            return self.high
        return self.low + (self.high - self.low) * (step - self.start) / max(self.end - self.start, 1)


class TrainConfig(_Strict):
    """Optimisation and bookkeeping."""

    steps: int = Field(1000, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay ends at lr × this")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    seed: int = 0
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only at the end")
    save_every: int = Field(0, ge=0, description="0: save only at the end")
    max_nonfinite: int = Field(5, ge=1, description="stop after this many non-finite losses in a row")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:i]'")
    threads: int = Field(0, ge=0, description="torch CPU threads, 0 = torch's default")
    curriculum: list[Ramp] = Field(default_factory=list, description="per-level / per-term weight ramps (§8)")

    def scales(self, step: int) -> dict[str, float]:
        """Curriculum multipliers at ``step``: ``{"l1": 0.5, "l0.diffusion": 1.0, ...}``."""
        out: dict[str, float] = {}
        for r in self.curriculum:
            out[r.term] = out.get(r.term, 1.0) * r.factor(step)
        return out


class SampleConfig(_Strict):
    """Generation and infilling defaults."""

    steps: int = Field(30, ge=1, description="denoising steps at the top level")
    level_steps: int = Field(4, ge=1, description="denoising steps when decoding a lower level")
    sigma_max: float = Field(1.0, gt=0, le=1)
    sigma_min: float = Field(0.0, ge=0, lt=1)
    epsilon: float = Field(0.1, gt=0, lt=1, description="truncate where existence < epsilon")
    top_segments: int = Field(8, ge=1, description="top-level sequence length generated from noise")
    infill_gap: tuple[int, int] = Field((1, 4), description="range of gap lengths searched when infilling")
    level_sigma: float = Field(0.1, ge=0, lt=1, description="noise level each lower level's decoding starts from "
                               "(a short denoising loop of level_steps steps back to 0)")
    infill_gap_bytes: tuple[int, int] = Field((1, 12), description="range of gap lengths (bytes) searched when "
                                              "infilling at level 0 (infill_gap counts positions of levels >= 1)")
    infill_steps: int = Field(10, ge=1, description="denoising steps of an infill (all gap lengths in one batch)")
    use_ema: bool = True


def _level_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "d_model": (int, Field(64, ge=4, description="width of the level")),
        "max_segment": (int, Field(16, ge=2, description="m: length of every (overlapping) segment")),
        "n_compress": (int, Field(4, ge=1, description="k: compression vectors per segment")),
        "heads": (int, Field(4, ge=1)),
        "ffn_mult": (int, Field(4, ge=1)),
        "dropout": (float, Field(0.0, ge=0, lt=1)),
        "decode_fraction": (float, Field(1.0, gt=0, le=1, description=(
            "level >= 1: the share of its decoded own-span slots that the `decode` term sends through the level "
            "below each step (a fresh random subset; a compute saver, the term's expectation is unchanged)"))),
        "token_focal": (float, Field(0.0, ge=0, le=5, description=(
            "level 0: γ of a focal byte loss, (1 − p)^γ · cross-entropy, in every byte loss of the level (clean, "
            "dirty, and the `decode` term of the level above); 0 is the paper's plain cross-entropy"))),
        "token_balance": (float, Field(0.0, ge=0, le=1, description=(
            "level 0: α of a class-balanced byte loss: each byte's cross-entropy is weighted by its frequency in "
            "the training split to the power −α (normalised to mean 1 over the training bytes, capped at "
            f"{BALANCE_CAP:g}), so bytes too rare to be decoded at all (accents, rare capitals) are learned; "
            "0 is the plain loss"))),
        "lr_start": (int, Field(0, ge=0, description=(
            "step at which this level's parameters start their own warm-up and cosine decay (over the steps left); "
            "before it their lr is 0. Set it to the step the level's curriculum ramp starts, so that a level "
            "brought in late does not train only on the tail of the global schedule"))),
        "lr_scale": (float, Field(1.0, gt=0, description="multiplies train.lr for this level's parameters")),
        "grad_from_above": (float, Field(1.0, ge=0, le=1, description=(
            "scale of the level above's gradient into this level (through the latents it reads): 1 as in the "
            "paper (§5.1, §8), 0 trains the level above on this level's latents without changing them"))),
        "split_grad_from_above": (float, Field(1.0, ge=0, le=1, description=(
            "a further scale on the part of that gradient that reaches this level's split (its BOS probabilities, "
            "through the existence its latents are compressed under): 0 lets only this level's own losses place "
            "its boundaries while its compressor still learns from above (one more compressor pass when < 1)"))),
        "losses": (LossWeights, Field(default_factory=LossWeights)),
        "splitter": (_component_type("splitter"), _default_component("splitter", "learned")),
        "compressor": (_component_type("compressor"), _default_component("compressor", "cls")),
        "denoiser": (_component_type("denoiser"), _default_component("denoiser", "ddmm")),
        "objective": (_component_type("objective"), _default_component("objective", "ddmm")),
        # a level may have no stitcher (null): nothing is stitched and no stitcher loss is computed
        "stitcher": (Optional[_component_type("stitcher")], _default_component("stitcher", "learned")),
    }

    def _check(self: Any) -> Any:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.n_compress >= self.max_segment:
            raise ValueError(f"n_compress ({self.n_compress}) must be < max_segment ({self.max_segment})")
        return self

    return create_model(
        "LevelConfig",
        __config__=ConfigDict(extra="forbid", frozen=True, protected_namespaces=()),
        __doc__="One level of the hierarchy: its sizes, its components and its loss weights.",
        __validators__={"_check": model_validator(mode="after")(_check)},
        **fields,
    )


def _model_model(level_cls: type[BaseModel]) -> type[BaseModel]:
    def _check(self: Any) -> Any:
        for i in range(1, len(self.levels)):
            for opt in ("token_focal", "token_balance"):
                if getattr(self.levels[i], opt):
                    raise ValueError(f"levels.{i}.{opt} is {getattr(self.levels[i], opt)}, but only level 0 has a "
                                     "byte loss; levels >= 1 reconstruct latents contrastively (set it on levels.0)")
            below, here = self.levels[i - 1], self.levels[i]
            want = below.n_compress * below.d_model
            if here.d_model != want:
                raise ValueError(
                    f"levels.{i}.d_model is {here.d_model} but level {i}'s sequence is level {i - 1}'s latents, "
                    f"of width levels.{i - 1}.n_compress × levels.{i - 1}.d_model = "
                    f"{below.n_compress} × {below.d_model} = {want}"
                )
        return self

    return create_model(
        "ModelConfig",
        __config__=ConfigDict(extra="forbid", frozen=True, protected_namespaces=()),
        __validators__={"_check": model_validator(mode="after")(_check)},
        attention=(_component_type("attention"), _default_component("attention", "sdpa")),
        levels=(list[level_cls], Field(min_length=1)),  # type: ignore[valid-type]
    )


@lru_cache(maxsize=None)
def _recipe_model(_version: tuple[tuple[tuple[str, type], ...], ...]) -> type[BaseModel]:
    level_cls = _level_model()
    model_cls = _model_model(level_cls)
    def _check(self: Any) -> Any:
        n = len(self.model.levels)
        for i, r in enumerate(self.train.curriculum):
            lvl = int(r.term[1:].split(".", 1)[0])
            if lvl >= n:
                raise ValueError(f"train.curriculum.{i}.term {r.term!r} names level {lvl}, but the model has {n} level(s)")
        return self

    return create_model(
        "Recipe",
        __config__=ConfigDict(extra="forbid", frozen=True, protected_namespaces=()),
        __validators__={"_check": model_validator(mode="after")(_check)},
        __doc__="A whole recipe: data, model (a list of per-level blocks), train and sample sections.",
        name=(str, "recipe"),
        description=(str, ""),
        schema_version=(Literal[1], SCHEMA_VERSION),
        data=(DataConfig, Field(default_factory=DataConfig)),
        model=(model_cls, ...),
        train=(TrainConfig, Field(default_factory=TrainConfig)),
        sample=(SampleConfig, Field(default_factory=SampleConfig)),
    )


def recipe_model() -> type[BaseModel]:
    """The pydantic class of a recipe, built from the registries as they are now."""
    ensure_builtin_components()
    # keyed by the classes too: a name re-registered to another class must not reuse a stale schema
    version = tuple(tuple((e.name, e.config_cls) for e in registry(k).entries()) for k in KINDS)
    return _recipe_model(version)


class Recipe:
    """Namespace for reading recipes: ``Recipe.load(path)``, ``Recipe.from_dict(d)``.

    The returned object is a frozen pydantic model (``recipe.model.levels[0].d_model``).
    """

    @staticmethod
    def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
        return load_recipe(path, overrides)

    @staticmethod
    def from_dict(data: dict[str, Any], *, source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> Any:
        return validate_recipe(data, source=source, overrides=overrides)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with file/line/column in the error."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{p}: {where}invalid YAML: {problem}") from None
    if data is None:
        raise RecipeError(f"{p}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping at the top level, got {type(data).__name__}")
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Read, override and validate a YAML recipe.

    Raises:
        RecipeError: unreadable file, invalid YAML, a bad override, or a validation error (each
            error with the file and the dotted path).
    """
    data = read_yaml(path)
    if "name" not in data:
        data["name"] = Path(path).stem
    return validate_recipe(data, source=str(path), overrides=overrides)


def validate_recipe(data: dict[str, Any], *, source: str = "<dict>", overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Validate a recipe mapping (after applying overrides)."""
    cls = recipe_model()
    data = copy.deepcopy(data)
    for ov in overrides:
        data = apply_override(data, ov, source=source)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, data, source)) from None


def _is_component_node(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("name"), str)


def _recipe_loc(loc: tuple[Any, ...], data: Any) -> list[str]:
    """A pydantic error location as recipe path elements: union tags and validator names removed."""
    path: list[str] = []
    node = data
    for elem in loc:
        # pydantic puts the union tag (the component's name) into the location: drop it
        if _is_component_node(node) and elem == node["name"] and elem not in node:
            continue
        if isinstance(elem, str) and elem.startswith("function-after["):
            continue
        path.append(str(elem))
        if isinstance(node, dict):
            node = node.get(elem)
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            node = node[elem]
        else:
            node = None
    return path


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    """One line per error: ``source: dotted.path: message``, tags of component unions removed."""
    lines = []
    for err in exc.errors(include_url=False):
        path = _recipe_loc(err["loc"], data)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section or component)"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown component {ctx.get('tag')!r}; known: {ctx.get('expected_tags')}"
        elif err["type"] == "union_tag_not_found":
            msg = "a component node needs a `name:` key"
        where = ".".join(path) or "(top level)"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[list[str], str]:
    if "=" not in text:
        raise RecipeError(f"override {text!r}: expected the form a.b.c=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r}: empty key or path element")
    return key.split("."), raw


def apply_override(data: dict[str, Any], text: str, *, source: str = "<dict>") -> dict[str, Any]:
    """Return a copy of ``data`` with one ``a.b.c=value`` override applied (typed by the schema)."""
    path, raw = _parse_override(text)
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    out = copy.deepcopy(data)
    node: Any = out
    for i, elem in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            if not elem.lstrip("-").isdigit() or not -len(node) <= int(elem) < len(node):
                raise RecipeError(f"override {text!r}: {where}: no list element {elem} (length {len(node)})")
            node = node[int(elem)]
        elif isinstance(node, dict):
            if elem not in node or node[elem] is None:
                # a component left at its default: start from that default's name
                node[elem] = {"name": DEFAULT_COMPONENTS[elem]} if elem in DEFAULT_COMPONENTS else {}
            node = node[elem]
        else:
            raise RecipeError(f"override {text!r}: {where}: cannot descend into a {type(node).__name__}")
    last = path[-1]
    if isinstance(node, list):
        if not last.lstrip("-").isdigit() or not -len(node) <= int(last) < len(node):
            raise RecipeError(f"override {text!r}: no list element {last} (length {len(node)})")
        key: Any = int(last)
    elif isinstance(node, dict):
        key = last
    else:
        raise RecipeError(f"override {text!r}: cannot set {last!r} on a {type(node).__name__}")
    current = node[key] if (isinstance(node, dict) and key in node) or isinstance(node, list) else None
    if isinstance(value, str) and (_is_component_node(current) or last in KINDS):
        value = {"name": value}  # swap a component for another with its defaults
    node[key] = value
    if not isinstance(value, str) and raw.strip() and not isinstance(value, (dict, list)):
        # typed by the schema: keep the parsed value if it validates there, else the raw string
        try:
            validate_recipe_quiet(out)
        except ValidationError as exc:
            if any(_recipe_loc(e["loc"], out)[: len(path)] == path for e in exc.errors()):
                node[key] = raw.strip()
    return out


def validate_recipe_quiet(data: dict[str, Any]) -> Any:
    return recipe_model().model_validate(data)


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """The resolved recipe as plain JSON-able data (every default filled in)."""
    return json.loads(recipe.model_dump_json())


def recipe_to_yaml(recipe: Any) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)


def bundled_recipes_dir() -> Path:
    """The ``recipes/`` folder shipped next to the package."""
    return Path(__file__).resolve().parents[2] / "recipes"


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path as given, or the bundled recipe of that name (``tiny`` -> ``recipes/tiny.yaml``)."""
    p = Path(name_or_path)
    if p.exists():
        return p
    root = bundled_recipes_dir()
    for cand in (root / f"{name_or_path}.yaml", root / str(name_or_path)):
        if cand.is_file():
            return cand
    return p
