"""``base:`` inheritance: a recipe that extends another and overrides some of its keys.

``base: tiny`` names a bundled recipe, or a file given by a path relative to the recipe that says
it (``base: ../tiny.yaml``); a base may have its own base. The recipe's keys then override the
base's:

- a mapping merges into the base's mapping key by key, recursively;
- a component node with another ``name`` than the base's replaces it (a swap, with the new
  component's defaults), one with the same name or none merges into it;
- a list replaces the base's list; to change one element of a base list, give a mapping keyed by
  the element's index instead (``levels: {1: {d_model: 256}}`` changes level 1 only, ``-1`` is the
  last element);
- any other value, ``null`` included, replaces the base's.

``name`` is never inherited (a recipe without one is named after its file). A base that is (or
leads back to) the recipe itself is an error, as is a ``base:`` that names no file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from zonkey.core.recipe.errors import RecipeError

#: reads one recipe file into a mapping already at the current schema (passed in by the loader)
Reader = Callable[[Path], dict[str, Any]]


def expand_base(data: dict[str, Any], *, here: Path | None, source: str, read: Reader,
                find_bundled: Callable[[str], Path | None], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Resolve ``data``'s ``base:`` chain into one mapping.

    Args:
        data: a recipe mapping (not modified); without ``base`` it is returned as it is.
        here: the directory a relative ``base`` path starts from (the recipe's folder).
        source: the recipe's origin, for messages.
        read: reads a base file (and brings it to the current schema).
        find_bundled: the bundled recipe of a name, or None.
        seen: the resolved files already on this chain (the recipe's own file first).

    Returns:
        The merged mapping, without ``base``.

    Raises:
        RecipeError: a ``base`` that is not a string, names no file, or closes a cycle; a list
            index into a base list that does not exist.
    """
    if "base" not in data:
        return data
    own = dict(data)
    ref = own.pop("base")
    if not isinstance(ref, str) or not ref.strip():
        raise RecipeError(f"{source}: base: expected a bundled recipe name or a path, got {ref!r}")
    path = _find_base(ref, here, find_bundled)
    if path is None:
        raise RecipeError(f"{source}: base: {ref!r} is neither a file (relative to {here or Path.cwd()}) "
                          "nor a bundled recipe")
    key = path.resolve()
    if key in seen:
        chain = " -> ".join(str(p) for p in (*seen, key))
        raise RecipeError(f"{source}: base: a cycle of bases: {chain}")
    parent = read(path)
    parent = expand_base(parent, here=path.parent, source=str(path), read=read, find_bundled=find_bundled,
                         seen=(*seen, key))
    parent.pop("name", None)
    return merge(parent, own, where=source)


def _find_base(ref: str, here: Path | None, find_bundled: Callable[[str], Path | None]) -> Path | None:
    local = (here or Path.cwd()) / ref
    if local.is_file():
        return local
    return find_bundled(ref)


def _is_component_node(node: Any) -> bool:
    return isinstance(node, dict) and isinstance(node.get("name"), str)


def merge(base: dict[str, Any], over: dict[str, Any], *, where: str, path: str = "") -> dict[str, Any]:
    """``over``'s keys on top of ``base``'s (the rules of this module's docstring).

    Args:
        base: the base mapping (not modified).
        over: the overriding mapping (not modified).
        where: the overriding recipe's origin, for messages.
        path: the dotted path of these mappings in the recipe.

    Returns:
        A new mapping.

    Raises:
        RecipeError: an index into a base list that has no such element.
    """
    out = dict(base)
    for key, value in over.items():
        here = f"{path}.{key}" if path else str(key)
        below = out.get(key)
        if isinstance(value, dict) and isinstance(below, dict):
            swap = _is_component_node(below) and "name" in value and value["name"] != below["name"]
            out[key] = value if swap else merge(below, value, where=where, path=here)
        elif isinstance(value, dict) and isinstance(below, list):
            out[key] = _merge_list(below, value, where=where, path=here)
        else:
            out[key] = value
    return out


def _merge_list(base: list[Any], over: dict[Any, Any], *, where: str, path: str) -> list[Any]:
    out = list(base)
    for key, value in over.items():
        text = str(key)
        if isinstance(key, bool) or not text.lstrip("-").isdigit() or not -len(out) <= int(text) < len(out):
            raise RecipeError(f"{where}: {path}.{text}: the base's {path} has no element {text} (length {len(out)}); "
                              "a mapping over a list changes elements by index, a list replaces it")
        i = int(text)
        below = out[i]
        if isinstance(value, dict) and isinstance(below, dict):
            out[i] = merge(below, value, where=where, path=f"{path}.{text}")
        else:
            out[i] = value
    return out
