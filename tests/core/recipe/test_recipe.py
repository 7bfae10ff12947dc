"""Recipe schema: validation errors with dotted paths, YAML reading, overrides, resolution."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import ValidationError

from zonkey.core.contracts.registry import KINDS, ComponentConfig, register, registry
from zonkey.core.recipe import (
    DEFAULT_COMPONENTS,
    ByteLossConfig,
    GradFromAbove,
    LevelConfig,
    ModelConfig,
    Recipe,
    RecipeError,
    ScheduleConfig,
    apply_override,
    bundled_recipes_dir,
    load_recipe,
    read_yaml,
    recipe_to_dict,
    recipe_to_yaml,
    resolve_recipe_path,
    validate_recipe,
)

BUILTIN_ATTENTION = ("flex", "hard", "reference", "sdpa")


def base(**sections: Any) -> dict[str, Any]:
    """A small valid recipe; keyword arguments replace whole top-level sections."""
    data: dict[str, Any] = {
        "name": "t",
        "model": {
            "attention": {"name": "sdpa"},
            "levels": [{"d_model": 64, "max_segment": 16, "n_compress": 4, "heads": 4}],
        },
    }
    data.update(sections)
    return data


def error_of(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(RecipeError) as info:
        validate_recipe(data, source="r.yaml", overrides=overrides)
    return str(info.value)


def write(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- validation ---------------------------------------------------------------------------------


def test_minimal_recipe_fills_defaults():
    recipe = validate_recipe({"model": {"levels": [{}]}})
    assert recipe.data.source == "wiki"
    assert recipe.model.attention.name == "sdpa"  # the default backend
    level = recipe.model.levels[0]
    assert (level.d_model, level.max_segment, level.n_compress, level.heads) == (64, 16, 4, 4)
    assert level.losses.token == 1.0
    assert recipe.schema_version == 3


def test_model_section_is_required():
    assert "r.yaml: model: Field required" in error_of({"name": "x"})


def test_levels_must_not_be_empty():
    msg = error_of({"model": {"levels": []}})
    assert "r.yaml: model.levels:" in msg


def test_wrong_type_names_the_full_dotted_path():
    data = base()
    data["model"]["levels"][0]["d_model"] = "wide"
    msg = error_of(data)
    assert msg.startswith("r.yaml: model.levels.0.d_model: ")
    assert "valid integer" in msg


def test_wrong_type_inside_a_component_has_no_union_tag_in_the_path():
    data = base()
    data["model"]["attention"] = {"name": "hard", "threshold": "high"}
    msg = error_of(data)
    assert "r.yaml: model.attention.threshold: " in msg
    assert "attention.hard" not in msg


def test_unknown_key_of_a_component_names_the_dotted_path():
    data = base()
    data["model"]["attention"]["threshold"] = 0.5  # a field of `hard`, not of `sdpa`
    msg = error_of(data)
    assert msg == "r.yaml: model.attention.threshold: unknown key (not a field of this section or component)"


@pytest.mark.parametrize(
    ("section", "path"),
    [("data", "data.colour"), ("train", "train.colour"), ("sample", "sample.colour")],
)
def test_unknown_key_in_a_section(section, path):
    msg = error_of(base(**{section: {"colour": "red"}}))
    assert f"r.yaml: {path}: unknown key" in msg


def test_unknown_key_in_a_level_and_at_top_level():
    data = base(colour="red")
    data["model"]["levels"][0]["widht"] = 3
    lines = error_of(data).splitlines()
    assert "r.yaml: colour: unknown key (not a field of this section or component)" in lines
    assert "r.yaml: model.levels.0.widht: unknown key (not a field of this section or component)" in lines


def test_every_error_is_reported_one_per_line():
    data = base(data={"max_doc_bytes": "big"})
    data["model"]["levels"][0]["heads"] = "many"
    lines = error_of(data).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("r.yaml: data.max_doc_bytes: ") for line in lines)
    assert any(line.startswith("r.yaml: model.levels.0.heads: ") for line in lines)


def test_unknown_component_lists_the_known_names():
    data = base()
    data["model"]["attention"] = {"name": "magic"}
    msg = error_of(data)
    assert msg.startswith("r.yaml: model.attention: unknown component 'magic'; known: ")
    for name in BUILTIN_ATTENTION:
        assert f"'{name}'" in msg


def test_component_without_name_is_explained():
    data = base()
    data["model"]["attention"] = {"threshold": 0.5}
    assert "r.yaml: model.attention: a component node needs a `name:` key" in error_of(data)


def test_a_field_error_inside_a_level_component_has_the_full_path():
    data = base()
    data["model"]["levels"][0]["splitter"] = {"name": "learned", "layers": "wide"}
    assert error_of(data).startswith("r.yaml: model.levels.0.splitter.layers: Input should be a valid integer")


def test_a_component_node_must_be_a_mapping():
    data = base()
    data["model"]["levels"][0]["stitcher"] = "hard"
    msg = error_of(data)
    assert msg == "r.yaml: model.levels.0.stitcher: a component node is a mapping with a `name:` key, e.g. {name: learned}"


def test_every_kind_defaults_to_its_default_component():
    recipe = validate_recipe({"model": {"levels": [{}]}})
    level = recipe.model.levels[0]
    assert set(DEFAULT_COMPONENTS) == set(KINDS)
    for kind, name in DEFAULT_COMPONENTS.items():
        node = recipe.model.attention if kind == "attention" else getattr(level, kind)
        assert node.name == name and isinstance(node, registry(kind).get(name)), kind


def test_a_config_object_may_stand_for_its_node_but_not_for_another_kind():
    hard = registry("attention").config("hard", threshold=0.25)
    recipe = Recipe.model_validate({"model": {"attention": hard, "levels": [{}]}})
    assert recipe.model.attention is hard
    stitcher = registry("stitcher").config("hard")
    with pytest.raises(RecipeError, match=r"model\.attention: expected attention component, got stitcher component"):
        validate_recipe({"model": {"attention": stitcher, "levels": [{}]}}, source="r.yaml")


def test_the_recipe_classes_are_static():
    assert Recipe.model_fields["model"].annotation is ModelConfig
    assert ModelConfig.model_fields["levels"].annotation == list[LevelConfig]
    assert ModelConfig.model_fields["byte_loss"].annotation is ByteLossConfig
    assert LevelConfig.model_fields["schedule"].annotation is ScheduleConfig
    assert LevelConfig.model_fields["grad_from_above"].annotation is GradFromAbove
    assert isinstance(Recipe.load(bundled_recipes_dir() / "tiny.yaml"), Recipe)


def test_a_component_registered_later_validates_in_the_recipe_it_names():
    @register("splitter", "zz_later")
    class LaterConfig(ComponentConfig):
        """A splitter registered after the recipe classes were built."""

        name: Literal["zz_later"] = "zz_later"
        width: int = 3

    try:
        data = base()
        data["model"]["levels"][0]["splitter"] = {"name": "zz_later", "width": 5}
        assert validate_recipe(data).model.levels[0].splitter == LaterConfig(width=5)
        data["model"]["levels"][0]["splitter"] = {"name": "zz_later", "width": "x"}
        assert error_of(data).startswith("r.yaml: model.levels.0.splitter.width: Input should be a valid integer")
    finally:
        registry("splitter").unregister("zz_later")
    assert "unknown component 'zz_later'" in error_of(data)


@pytest.fixture
def only_compressor():
    """A component of a kind the test otherwise leaves alone, unregistered afterwards."""

    @register("compressor", "zz_only")
    class OnlyConfig(ComponentConfig):
        """A test compressor."""

        name: Literal["zz_only"] = "zz_only"
        pool: str = "mean"

    yield OnlyConfig
    registry("compressor").unregister("zz_only")


def test_unknown_component_of_any_kind_lists_its_known_names(only_compressor):
    # holds with one registered entry too (the union stays discriminated by name)
    data = base()
    data["model"]["levels"][0]["compressor"] = {"name": "magic"}
    msg = error_of(data)
    assert "r.yaml: model.levels.0.compressor: unknown component 'magic'; known: " in msg
    assert "'zz_only'" in msg


def test_unknown_component_of_a_kind_with_a_single_entry(only_compressor, monkeypatch):
    reg = registry("compressor")
    monkeypatch.setattr(reg, "_entries", {"zz_only": reg.entry("zz_only")})  # restored afterwards
    data = base()
    data["model"]["levels"][0]["compressor"] = {"name": "magic"}
    assert "r.yaml: model.levels.0.compressor: unknown component 'magic'; known: 'zz_only'" in error_of(data)


def test_a_level_component_validates_against_its_config(only_compressor):
    data = base()
    data["model"]["levels"][0]["compressor"] = {"name": "zz_only", "pool": "max"}
    recipe = validate_recipe(data)
    assert isinstance(recipe.model.levels[0].compressor, only_compressor)
    assert recipe.model.levels[0].compressor.pool == "max"


def test_cross_level_width_check():
    data = base()
    data["model"]["levels"].append({"d_model": 100, "max_segment": 16, "n_compress": 4, "heads": 4})
    msg = error_of(data)
    assert "levels.1.d_model is 100" in msg
    assert "levels.0.n_compress × levels.0.d_model = 4 × 64 = 256" in msg

    data["model"]["levels"][1]["d_model"] = 256
    recipe = validate_recipe(data)
    assert [lvl.d_model for lvl in recipe.model.levels] == [64, 256]


def test_level_checks_heads_and_compression():
    data = base()
    data["model"]["levels"][0]["heads"] = 5
    assert "d_model (64) must be divisible by heads (5)" in error_of(data)
    data["model"]["levels"][0]["heads"] = 4
    data["model"]["levels"][0]["n_compress"] = 16
    assert "n_compress (16) must be < max_segment (16)" in error_of(data)


def test_data_budget_check():
    msg = error_of(base(data={"max_doc_bytes": 8192, "batch_bytes": 4096}))
    assert "r.yaml: data: " in msg and "batch_bytes (4096) must be >= max_doc_bytes (8192)" in msg


def test_bounds_are_enforced_with_the_path():
    assert "r.yaml: train.lr: " in error_of(base(train={"lr": 0}))
    assert "r.yaml: sample.epsilon: " in error_of(base(sample={"epsilon": 1.5}))


def test_resolved_recipe_round_trips_through_dict_and_yaml():
    recipe = validate_recipe(base(train={"steps": 7}))
    assert validate_recipe(recipe_to_dict(recipe)) == recipe
    assert validate_recipe(yaml.safe_load(recipe_to_yaml(recipe))) == recipe


def test_recipe_is_frozen():
    recipe = validate_recipe(base())
    with pytest.raises(ValidationError):
        recipe.train.steps = 3


# --- reading YAML -------------------------------------------------------------------------------


def test_load_recipe_from_file_prefixes_the_file(tmp_path):
    path = write(tmp_path, "model:\n  levels:\n    - d_model: wide\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: model.levels.0.d_model: ")


def test_load_recipe_names_a_nameless_recipe_after_its_file(tmp_path):
    path = write(tmp_path, "model:\n  levels: [{}]\n", name="my_run.yaml")
    assert load_recipe(path).name == "my_run"
    assert Recipe.load(path).name == "my_run"


def test_invalid_yaml_reports_line_and_column(tmp_path):
    path = write(tmp_path, "name: x\nmodel:\n  levels: [1, 2\n  attention: sdpa\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: line ")
    assert re.search(r"line \d+, column \d+: invalid YAML: ", msg)


def test_invalid_yaml_position_is_one_based(tmp_path):
    path = write(tmp_path, "name: x\nmodel: {levels: [}\n")  # the stray `}` is line 2, column 18
    with pytest.raises(RecipeError, match=r"line 2, column 18: invalid YAML"):
        read_yaml(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=re.escape(f"{path}: the recipe is empty")):
        load_recipe(path)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError, match=f"must be a mapping at the top level, got {kind}"):
        load_recipe(path)


def test_non_utf8_file(tmp_path):
    path = write(tmp_path, b"name: caf\xe9\nmodel: {levels: [{}]}\n")  # Latin-1, not UTF-8
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not UTF-8 text") and "byte 9" in msg


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path)  # a folder is not a recipe


# --- overrides ----------------------------------------------------------------------------------


def ov(*overrides: str, data: dict[str, Any] | None = None) -> Any:
    return validate_recipe(base() if data is None else data, overrides=overrides)


def test_override_int():
    recipe = ov("model.levels.0.d_model=128", "train.steps=12")
    assert recipe.model.levels[0].d_model == 128 and recipe.train.steps == 12
    assert isinstance(recipe.train.steps, int)


@pytest.mark.parametrize(("text", "value"), [("0.0005", 0.0005), ("3e-4", 3e-4), ("1", 1.0)])
def test_override_float(text, value):
    recipe = ov(f"train.lr={text}")
    assert isinstance(recipe.train.lr, float) and recipe.train.lr == pytest.approx(value)


@pytest.mark.parametrize(("text", "value"), [("false", False), ("true", True), ("no", False)])
def test_override_bool(text, value):
    recipe = ov(f"model.levels.0.compressor.skip={text}")
    assert recipe.model.levels[0].compressor.skip is value


@pytest.mark.parametrize(("text", "value"), [("1234", "1234"), ("true", "true"), ("3.5", "3.5"), ("my_corpus", "my_corpus"),
                                             ("null", "null")])
def test_override_string_field_keeps_the_text(text, value):
    assert ov(f"data.source={text}").data.source == value


def test_override_optional_int_accepts_null():
    assert ov("data.max_docs=50").data.max_docs == 50
    assert ov("data.max_docs=50", "data.max_docs=null").data.max_docs is None


def test_override_string_field_of_a_component(only_compressor):
    # the schema, not YAML, decides: `pool` is a string, so 42 stays the text "42"
    recipe = ov("model.levels.0.compressor=zz_only", "model.levels.0.compressor.pool=42")
    assert recipe.model.levels[0].compressor.pool == "42"


def test_override_list_value():
    assert ov("train.betas=[0.8, 0.9]").train.betas == (0.8, 0.9)


def test_override_list_index_paths():
    data = base()
    data["model"]["levels"].append({"d_model": 256, "max_segment": 8, "n_compress": 2, "heads": 4})
    recipe = ov("model.levels.1.max_segment=12", "model.levels.-1.heads=8", "model.levels.0.heads=8", data=data)
    assert recipe.model.levels[1].max_segment == 12
    assert recipe.model.levels[1].heads == 8 and recipe.model.levels[0].heads == 8
    assert recipe.model.levels[0].losses.token == 1.0


def test_override_nested_level_section():
    assert ov("model.levels.0.losses.mlm=0.25").model.levels[0].losses.mlm == 0.25


def test_override_creates_missing_sections():
    data = base()
    assert "train" not in data
    assert ov("train.steps=5", data=data).train.steps == 5
    assert "train" not in data  # the input is not modified


def test_override_swaps_a_component():
    recipe = ov("model.attention=hard")
    assert recipe.model.attention.name == "hard"
    assert recipe.model.attention.threshold == 0.5  # the new component's defaults

    recipe = ov("model.attention=hard", "model.attention.threshold=0.25")
    assert recipe.model.attention.threshold == 0.25


def test_override_swaps_a_component_that_was_defaulted():
    data = base()
    del data["model"]["attention"]
    assert ov("model.attention=reference", data=data).model.attention.name == "reference"


def test_override_swap_to_an_unknown_component_lists_known_names():
    msg = error_of(base(), overrides=("model.attention=magic",))
    assert "model.attention: unknown component 'magic'" in msg
    for name in BUILTIN_ATTENTION:
        assert name in msg


def test_override_with_a_wrong_type_names_the_path():
    msg = error_of(base(), overrides=("model.levels.0.d_model=wide",))
    assert "r.yaml: model.levels.0.d_model: " in msg and "valid integer" in msg


def test_override_unknown_key_names_the_path():
    assert "r.yaml: train.colour: unknown key" in error_of(base(), overrides=("train.colour=red",))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train.steps", "expected the form a.b.c=value"),
        ("=3", "empty key"),
        ("train..steps=3", "empty key"),
        ("model.levels.3.d_model=8", "no list element 3 (length 1)"),
        ("model.levels.first.d_model=8", "no list element first"),
        ("model.levels.7=8", "no list element 7"),
        ("model.levels.0.d_model.bits=8", "cannot set 'bits'"),
        ("model.levels.0.d_model.bits.more=8", "cannot descend into a int"),
    ],
)
def test_bad_override_forms(text, needle):
    with pytest.raises(RecipeError) as info:
        apply_override(base(), text)
    assert needle in str(info.value)
    assert str(info.value).startswith(f"override {text!r}")


def test_apply_override_returns_a_copy():
    data = base()
    out = apply_override(data, "model.levels.0.d_model=128")
    assert out["model"]["levels"][0]["d_model"] == 128
    assert data["model"]["levels"][0]["d_model"] == 64


def test_override_value_with_equals_sign():
    assert ov("data.source=a=b").data.source == "a=b"


# --- bundled recipes ----------------------------------------------------------------------------


def test_resolve_recipe_path(tmp_path):
    assert resolve_recipe_path("tiny") == bundled_recipes_dir() / "tiny.yaml"
    assert resolve_recipe_path("tiny.yaml") == bundled_recipes_dir() / "tiny.yaml"
    own = write(tmp_path, "model: {levels: [{}]}\n", name="tiny.yaml")
    assert resolve_recipe_path(own) == own  # an existing path wins over a bundled name
    assert resolve_recipe_path(tmp_path / "nope.yaml") == tmp_path / "nope.yaml"


def test_from_dict():
    recipe = Recipe.from_dict(base(), overrides=["train.seed=3"])
    assert recipe.train.seed == 3 and recipe.name == "t"


# --- curriculum --------------------------------------------------------------------------------

def _train_with(curriculum):
    from zonkey.core.recipe import TrainConfig

    return TrainConfig(curriculum=curriculum)


def test_curriculum_ramps_from_zero_to_one_by_default():
    cfg = _train_with([{"term": "l1", "start": 100, "end": 200}])
    assert [cfg.scales(s)["l1"] for s in (0, 99, 100, 150, 200, 5000)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]


def test_curriculum_low_and_high_reweight_a_term():
    cfg = _train_with([{"term": "l0.avg_bos", "start": 600, "end": 900, "low": 1.0, "high": 2.5}])
    got = [cfg.scales(s)["l0.avg_bos"] for s in (0, 600, 750, 900, 2000)]
    assert got == pytest.approx([1.0, 1.0, 1.75, 2.5, 2.5])


def test_curriculum_entries_of_one_term_multiply():
    cfg = _train_with([{"term": "l1", "start": 0, "end": 10}, {"term": "l1", "start": 0, "end": 0, "low": 3.0, "high": 0.5}])
    assert cfg.scales(5)["l1"] == pytest.approx(0.25)


def test_a_curriculum_entry_with_every_is_on_only_at_its_steps_and_held_out_passes_see_it_on():
    cfg = _train_with([{"term": "l1", "start": 100, "end": 200, "every": 2}])
    assert [cfg.scales(s)["l1"] for s in (99, 150, 151, 200, 201, 5000)] == [0.0, 0.5, 0.0, 1.0, 0.0, 1.0]
    assert [cfg.scales(s, gated=False)["l1"] for s in (151, 201)] == [0.51, 1.0]
    assert cfg.ramping(151) == {"l1": pytest.approx(0.51)}


@pytest.mark.parametrize("bad, where", [
    ({"term": "l1", "start": 0, "end": 5, "every": 0}, "every"),
    ({"term": "l1", "start": 10, "end": 5}, "end (5) must be >= start (10)"),
    ({"term": "l0.nonsense", "start": 0, "end": 5}, "unknown loss term 'nonsense'"),
    ({"term": "l0", "start": 0, "end": 5, "high": -1.0}, "high"),
])
def test_curriculum_rejects_bad_entries(bad, where):
    with pytest.raises(ValueError, match=re.escape(where)):
        _train_with([bad])


@pytest.mark.parametrize("override", ["model.levels.0.compressor.layers=100000", "model.levels.0.d_model=1000000",
                                      "model.levels.0.splitter.window=100000000"])
def test_component_and_level_sizes_have_an_upper_bound(override):
    with pytest.raises(RecipeError) as info:
        ov(override, data=base(model={"attention": {"name": "sdpa"}, "levels": [
            {"d_model": 64, "max_segment": 16, "n_compress": 4, "heads": 4,
             "splitter": {"name": "learned"}, "compressor": {"name": "cls"}}]}))
    assert "less than or equal" in str(info.value) and override.split("=")[0] in str(info.value)
