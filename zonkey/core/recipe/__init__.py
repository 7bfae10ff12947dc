"""YAML recipes: the validated description of data, a hierarchy of levels, training, sampling.

A recipe is validated by pydantic before any tensor exists; the classes are static
(:mod:`~zonkey.core.recipe.schema`, :mod:`~zonkey.core.recipe.sections`). Component nodes are
``{name: <registry name>, <that component's own fields>}`` and are validated against the config
class registered under that name when the recipe is validated, so third-party components validate
exactly like built-in ones (:mod:`~zonkey.core.recipe.components`). A recipe may extend another
(``base: tiny``, :mod:`~zonkey.core.recipe.inherit`); ``--set a.b.c=value`` overrides apply on top
(:mod:`~zonkey.core.recipe.overrides`); a run's saved ``recipe.json`` of an older schema is upgraded
through the migration table (:mod:`~zonkey.core.recipe.migrate`).
"""

from zonkey.core.recipe.components import DEFAULT_COMPONENTS
from zonkey.core.recipe.errors import RecipeError, format_validation_error
from zonkey.core.recipe.inherit import merge
from zonkey.core.recipe.loading import (
    METADATA_KEYS,
    bundled_recipes_dir,
    read_yaml,
    recipe_to_dict,
    recipe_to_yaml,
    resolve_recipe_path,
    upgrade,
)
from zonkey.core.recipe.migrate import MIGRATIONS, SCHEMA_VERSION, v1_to_v2, v2_to_v3
from zonkey.core.recipe.overrides import parse_override
from zonkey.core.recipe.schema import (
    BALANCE_CAP,
    ByteLossConfig,
    GradFromAbove,
    LevelConfig,
    ModelConfig,
    Recipe,
    ScheduleConfig,
    apply_override,
    load_recipe,
    validate_recipe,
)
from zonkey.core.recipe.sections import DataConfig, LossWeights, Ramp, SampleConfig, TrainConfig

__all__ = [
    "BALANCE_CAP",
    "DEFAULT_COMPONENTS",
    "METADATA_KEYS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ByteLossConfig",
    "DataConfig",
    "GradFromAbove",
    "LevelConfig",
    "LossWeights",
    "ModelConfig",
    "Ramp",
    "Recipe",
    "RecipeError",
    "SampleConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_override",
    "bundled_recipes_dir",
    "format_validation_error",
    "load_recipe",
    "merge",
    "parse_override",
    "read_yaml",
    "recipe_to_dict",
    "recipe_to_yaml",
    "resolve_recipe_path",
    "upgrade",
    "v1_to_v2",
    "v2_to_v3",
    "validate_recipe",
]
