"""Component nodes of a recipe: ``{name: <registry name>, <that component's own fields>}``.

The field types are static (:class:`~zonkey.core.contracts.registry.ComponentConfig`, the base of every
component config), and a before-validator dispatches on ``name`` to the config class registered
under that name *at validation time*. So a third-party component registered after this module was
imported validates exactly like a built-in one, and its field errors keep their full dotted path
(``model.levels.0.splitter.layers``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SerializeAsAny
from pydantic_core import PydanticCustomError

from zonkey.core.contracts.registry import ComponentConfig, registry

#: The component each kind gets when a recipe leaves it out (the one place these names are written).
DEFAULT_COMPONENTS: dict[str, str] = {
    "attention": "sdpa",
    "splitter": "learned",
    "compressor": "cls",
    "denoiser": "ddmm",
    "objective": "ddmm",
    "stitcher": "learned",
}
#: The name an error message shows as an example node (a kind may be optional, e.g. ``prior``).
EXAMPLES: dict[str, str] = {**DEFAULT_COMPONENTS, "prior": "sequence"}


def _dispatch(kind: str) -> Callable[[Any], Any]:
    """The before-validator of a ``kind`` node.

    A mapping becomes the config registered under its ``name``; a config instance of that kind
    passes as it is.
    """

    def validate(value: Any) -> Any:
        if isinstance(value, ComponentConfig):
            if value.kind != kind:
                raise PydanticCustomError("component_kind", "expected {kind} component, got {got} component",
                                          {"got": value.kind or type(value).__name__, "kind": kind})
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("component_node", "a component node is a mapping with a `name:` key, "
                                      "e.g. {name: {default}}", {"default": EXAMPLES.get(kind, "...")})
        name = value.get("name")
        if name is None:
            raise PydanticCustomError("component_name_missing", "a component node needs a `name:` key")
        reg = registry(kind)
        if not isinstance(name, str) or name not in reg:
            known = ", ".join(repr(n) for n in reg.names())
            raise PydanticCustomError("unknown_component", "unknown component {tag}; known: {known}",
                                      {"tag": repr(name), "known": known or "(none registered)"})
        return reg.get(name).model_validate(value)

    return validate


# The node types: a component config, dispatched on `name`; SerializeAsAny dumps the registered
# subclass's fields, not those of the (field-less) base.
AttentionNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("attention"))]
SplitterNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("splitter"))]
CompressorNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("compressor"))]
DenoiserNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("denoiser"))]
ObjectiveNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("objective"))]
StitcherNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("stitcher"))]
PriorNode = Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(_dispatch("prior"))]


def component_field(kind: str, description: str = "") -> Any:
    """The field of a ``kind`` node, defaulting to ``{name: DEFAULT_COMPONENTS[kind]}``.

    The default is validated like a written node, so a default that is not registered reads as an
    ``unknown component`` error at the node's path rather than failing later.
    """
    default = DEFAULT_COMPONENTS[kind]
    return Field(default_factory=lambda: {"name": default}, validate_default=True,
                 description=description or f"a registered {kind} (default {default!r})")
