"""Recipe errors: one line per problem, ``source: dotted.path: message`` (:class:`~zonkey.errors.RecipeError`)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from zonkey.core.recipe.migrate import moved_hint
from zonkey.errors import RecipeError
from zonkey.inputs import MAX_ERROR_LINES, cap_lines

__all__ = ["RecipeError", "error_path", "format_validation_error"]


def error_path(loc: tuple[Any, ...]) -> list[str]:
    """A pydantic error location as recipe path elements (validator names removed)."""
    return [str(e) for e in loc if not (isinstance(e, str) and e.startswith("function-"))]


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per error of ``exc``: ``source: dotted.path: message``.

    An unknown key that an older schema used names where that setting lives now. At most
    :data:`~zonkey.inputs.MAX_ERROR_LINES` errors are listed, then ``source: and N more``.
    """
    lines = []
    errors = exc.errors(include_url=False)
    for err in errors[:MAX_ERROR_LINES + 1]:
        path = error_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a field of this section or component)"
        hint = moved_hint(path, err["input"]) if err["type"] in ("extra_forbidden", "model_type") else None
        if hint:
            msg = f"{msg}; {hint}"
        where = ".".join(path) or "(top level)"
        lines.append(f"{source}: {where}: {msg}")
    lines += [""] * (len(errors) - len(lines))  # counted, not formatted
    return "\n".join(cap_lines(lines, prefix=f"{source}: "))
