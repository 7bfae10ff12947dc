"""The recipe migration table: how a recipe of an older ``schema_version`` becomes the current one.

:data:`MIGRATIONS` maps a version v to the function taking a v recipe mapping to v + 1. Both the
recipe loader and the checkpoint reader (a run's ``recipe.json``) go through it. The same table of
moved keys explains an old key met in a current recipe (:func:`moved_hint`).

Schema 2 (from 1) grouped the per-level scalars and moved level 0's byte-loss knobs to the model:

==================================  =========================================
schema_version 1 (per level)        schema_version 2
==================================  =========================================
``levels.0.token_focal``            ``model.byte_loss.focal``
``levels.0.token_balance``          ``model.byte_loss.balance``
``levels.L.lr_start``               ``levels.L.schedule.lr_start``
``levels.L.lr_scale``               ``levels.L.schedule.lr_scale``
``levels.L.grad_from_above``        ``levels.L.grad_from_above.latents``
``levels.L.split_grad_from_above``  ``levels.L.grad_from_above.split``
==================================  =========================================

Schema 3 (from 2) removed ``sample.use_ema``, which no code read (the commands that load a model
choose its weights: ``--ema/--no-ema``, :func:`zonkey.api.load`'s ``use_ema``), and the sequence
prior's options that measurements rejected (``mixture``, ``mixture_temp``, ``sphere_out``,
``memory``, ``scatter``; ``sample.guidance``, ``sample.project_below``, ``sample.mean_below``).
A run that used one of them at a value other than "off" cannot be loaded any more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

#: schema 1 level keys that moved into a group of the same level: old key -> (group, field)
LEVEL_MOVES: dict[str, tuple[str, str]] = {
    "lr_start": ("schedule", "lr_start"),
    "lr_scale": ("schedule", "lr_scale"),
    "split_grad_from_above": ("grad_from_above", "split"),
}
#: schema 1 level-0 keys that moved to ``model.byte_loss``: old key -> field
BYTE_LOSS_MOVES: dict[str, str] = {"token_focal": "focal", "token_balance": "balance"}


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: group each level's scalars and move level 0's byte-loss knobs to the model.

    Args:
        data: a schema-1 recipe mapping (not modified).

    Returns:
        The schema-2 mapping. Anything that was invalid in schema 1 (a byte-loss knob set on a level
        >= 1) is left where it was, so validation reports it.
    """
    out = copy.deepcopy(data)
    model = out.get("model")
    levels = model.get("levels") if isinstance(model, dict) else None
    if isinstance(levels, list):
        byte_loss: dict[str, Any] = {}
        for i, level in enumerate(levels):
            if isinstance(level, dict):
                byte_loss.update(_move_level_keys(level, i))
        if byte_loss:
            assert isinstance(model, dict)
            model["byte_loss"] = byte_loss
    out["schema_version"] = 2
    return out


def _move_level_keys(level: dict[str, Any], index: int) -> dict[str, Any]:
    """Regroup one schema-1 level in place; returns the byte-loss fields taken from it."""
    byte_loss = {}
    for old, new in BYTE_LOSS_MOVES.items():
        if old in level and (index == 0 or not level[old]):  # a zero on level >= 1 was a no-op
            value = level.pop(old)
            if index == 0:
                byte_loss[new] = value
    grad = level.pop("grad_from_above", None)
    groups: dict[str, dict[str, Any]] = {}
    if grad is not None:
        groups["grad_from_above"] = grad if isinstance(grad, dict) else {"latents": grad}
    for old, (group, field) in LEVEL_MOVES.items():
        if old in level:
            groups.setdefault(group, {})[field] = level.pop(old)
    level.update(groups)
    return byte_loss


#: schema 2 keys that schema 3 removed (read by no code): dotted path -> what to use instead
REMOVED_V3: dict[str, str] = {
    "sample.use_ema": "the weights are chosen where a model is loaded (--ema/--no-ema, zonkey.load(use_ema=...))",
    "sample.guidance": "context guidance of the MSE prior, measured and not adopted (prior.head: bank replaces it)",
    "sample.project_below": "estimates off the sphere were measured and not adopted (prior.head: bank replaces them)",
    "sample.mean_below": "the mixture head was measured and not adopted (prior.head: bank replaces it)",
}
#: sequence-prior options schema 3 removed, with the value that means "off" (a run that used
#: another value cannot be represented any more and is refused with this reason)
REMOVED_PRIOR_V3: dict[str, tuple[object, str]] = {
    "mixture": (0, "the mixture head was measured and not adopted (prior.head: bank replaces it)"),
    "mixture_temp": (None, "the mixture head was measured and not adopted (prior.head: bank replaces it)"),
    "sphere_out": (True, "estimates off the sphere were measured and not adopted (prior.head: bank replaces them)"),
    "memory": (0, "rows of earlier batches were measured and not adopted (and broke exact resume)"),
    "scatter": (0.0, "scattered gaps were measured and not adopted (prior.anchors replaces them)"),
}


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: drop the keys no code reads any more (:data:`REMOVED_V3`, :data:`REMOVED_PRIOR_V3`).

    Args:
        data: a schema-2 recipe mapping (not changed).

    Returns:
        the schema-3 mapping.

    Raises:
        ValueError: a sequence prior that used a removed option (say, ``mixture: 16``): its weights
            have no place in schema 3.
    """
    out = copy.deepcopy(data)
    for path in REMOVED_V3:
        section, key = path.split(".")
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    levels = out.get("model", {}).get("levels", []) if isinstance(out.get("model"), dict) else []
    for i, level in enumerate(levels if isinstance(levels, list) else []):
        prior = level.get("prior") if isinstance(level, dict) else None
        if not isinstance(prior, dict):
            continue
        for key, (off, why) in REMOVED_PRIOR_V3.items():
            if key in prior:
                value = prior.pop(key)
                if off is not None and value != off:
                    raise ValueError(f"model.levels.{i}.prior.{key} is {value!r}, which schema 3 removed: {why}")
    out["schema_version"] = 3
    return out


#: The recipe schema this zonkey writes; an older one is upgraded through :data:`MIGRATIONS`.
SCHEMA_VERSION = 3
#: version v -> the function taking a version-v recipe mapping to version v + 1
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: v1_to_v2, 2: v2_to_v3}


def moved_hint(path: list[str], value: Any = None) -> str | None:
    """Where a key of an older schema lives now, for an error at ``path`` (or None).

    Args:
        path: the error's location, e.g. ``["model", "levels", "1", "token_focal"]``.
        value: the offending input (a number where schema 2 wants a ``grad_from_above`` group).
    """
    if ".".join(path) in REMOVED_V3:
        return f"schema_version 3 removed it: {REMOVED_V3['.'.join(path)]}"
    if len(path) == 5 and path[:2] == ["model", "levels"] and path[3] == "prior" and path[4] in REMOVED_PRIOR_V3:
        return f"schema_version 3 removed it: {REMOVED_PRIOR_V3[path[4]][1]}"
    if ".".join(path) in REMOVED_V3:
        return f"schema_version 3 removed it: {REMOVED_V3['.'.join(path)]}"
    if len(path) == 5 and path[:2] == ["model", "levels"] and path[3] == "prior" and path[4] in REMOVED_PRIOR_V3:
        return f"schema_version 3 removed it: {REMOVED_PRIOR_V3[path[4]][1]}"
    if len(path) != 4 or path[:2] != ["model", "levels"]:
        return None
    i, key = path[2], path[3]
    if key in LEVEL_MOVES:
        group, field = LEVEL_MOVES[key]
        return f"schema_version 2 moved it to model.levels.{i}.{group}.{field}"
    if key in BYTE_LOSS_MOVES:
        return (f"schema_version 2 moved it to model.byte_loss.{BYTE_LOSS_MOVES[key]} "
                "(only level 0 has a byte loss)")
    if key == "grad_from_above" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"schema_version 2 groups it: model.levels.{i}.grad_from_above.latents"
    return None
