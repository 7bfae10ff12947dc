"""``--set`` overrides: ``a.b.c=value`` applied to a recipe mapping before validation.

The value is parsed as YAML and typed by the schema: a value that fails validation as parsed is
retried as the raw string, so ``data.source=1234`` still means the string ``"1234"`` where the field
is a string. A list element is addressed by its index (``model.levels.0.d_model=128``, ``-1`` for
the last). Pointing an override at a component node with a plain name
(``model.levels.0.splitter=fixed``) swaps the component for that one with its default fields.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from zonkey.core.contracts.registry import ALL_KINDS
from zonkey.core.recipe.components import DEFAULT_COMPONENTS
from zonkey.core.recipe.errors import RecipeError, error_path


def parse_override(text: str) -> tuple[list[str], str]:
    """Split ``a.b.c=value`` into its path and raw value.

    Raises:
        RecipeError: no ``=``, or an empty path element.
    """
    if "=" not in text:
        raise RecipeError(f"override {text!r}: expected the form a.b.c=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r}: empty key or path element")
    return key.split("."), raw


def _is_component_node(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("name"), str)


def _list_index(node: list[Any], elem: str, text: str, where: str) -> int:
    if not elem.lstrip("-").isdigit() or not -len(node) <= int(elem) < len(node):
        raise RecipeError(f"override {text!r}: {where}no list element {elem} (length {len(node)})")
    return int(elem)


def apply_override_as(schema: type[BaseModel], data: dict[str, Any], text: str, *,
                      source: str = "<dict>") -> dict[str, Any]:
    """Apply one override to a copy of a recipe mapping.

    Args:
        schema: the recipe class that types the value (:class:`~zonkey.core.recipe.schema.Recipe`).
        data: the recipe mapping (not modified).
        text: ``a.b.c=value``.
        source: the recipe's origin (kept for callers' messages).

    Returns:
        The new mapping.

    Raises:
        RecipeError: a malformed override, or a path that does not exist in ``data``'s shape.
    """
    path, raw = parse_override(text)
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    out = copy.deepcopy(data)
    node: Any = out
    for i, elem in enumerate(path[:-1]):
        where = ".".join(path[: i + 1])
        if isinstance(node, list):
            node = node[_list_index(node, elem, text, f"{where}: ")]
        elif isinstance(node, dict):
            if elem not in node or node[elem] is None:
                # a component left at its default: start from that default's name
                node[elem] = {"name": DEFAULT_COMPONENTS[elem]} if elem in DEFAULT_COMPONENTS else {}
            node = node[elem]
        else:
            raise RecipeError(f"override {text!r}: {where}: cannot descend into a {type(node).__name__}")
    last = path[-1]
    key: Any
    if isinstance(node, list):
        key = _list_index(node, last, text, "")
    elif isinstance(node, dict):
        key = last
    else:
        raise RecipeError(f"override {text!r}: cannot set {last!r} on a {type(node).__name__}")
    current = node[key] if isinstance(node, list) or key in node else None
    if isinstance(value, str) and (_is_component_node(current) or last in ALL_KINDS):
        value = {"name": value}  # swap a component for another with its defaults
    node[key] = value
    if not isinstance(value, (str, dict, list)) and raw.strip():
        # typed by the schema: keep the parsed value if it validates there, else the raw string
        try:
            schema.model_validate(out)
        except ValidationError as exc:
            if any(error_path(e["loc"])[: len(path)] == path for e in exc.errors()):
                node[key] = raw.strip()
    return out
