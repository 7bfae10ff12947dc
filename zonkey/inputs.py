r"""Checks of untrusted input shared by every reader: text, JSON and long lists of errors.

* :func:`check_text`: text from the command line, a file or a JSON string that holds a lone
  surrogate (a legal ``"\\ud800"`` JSON escape, or a non-UTF-8 byte of argv that Python decoded
  with ``surrogateescape``) is refused with one line instead of failing later in the UTF-8 encoder.
* :func:`parse_json`: the one JSON parser: a depth limit (:data:`MAX_JSON_DEPTH`), every string
  checked by :func:`check_text`, and one line naming the source on any failure.
* :func:`cap_lines`: at most :data:`MAX_ERROR_LINES` lines of a list of errors, then "and N more".

A leaf like :mod:`zonkey.errors`: it imports nothing of zonkey but that module, and not torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from zonkey.errors import ZonkeyError

__all__ = [
    "MAX_ERROR_LINES",
    "MAX_JSON_DEPTH",
    "InputError",
    "cap_lines",
    "check_json_value",
    "check_text",
    "parse_json",
]

#: the deepest nesting of arrays and objects a JSON document may have (recipes and checkpoint
#: metadata nest fewer than 12 levels)
MAX_JSON_DEPTH = 100
#: the most lines an error message lists before "and N more"
MAX_ERROR_LINES = 20

_SURROGATE = re.compile("[\ud800-\udfff]")
_OPEN = re.compile(rb"[\[{]")


class InputError(ZonkeyError, ValueError):
    """Text or JSON that cannot be used: a lone surrogate, invalid or too deeply nested JSON."""


def check_text(text: str, where: str) -> str:
    """``text`` unchanged, or an error if it holds a lone surrogate (text that is no Unicode).

    Args:
        text: the string to check.
        where: names its origin, first in the message (an argument, a file and line, a JSON key).

    Returns:
        ``text``.

    Raises:
        InputError: the first lone surrogate, with its code point and character offset.
    """
    m = _SURROGATE.search(text)
    if m is not None:
        kind = "a byte that is not UTF-8" if 0xDC80 <= ord(m.group()) <= 0xDCFF else "a lone surrogate"
        raise InputError(f"{where}: not valid text: {kind} (U+{ord(m.group()):04X}) at character {m.start()}")
    return text


def check_json_value(value: Any, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``value`` unchanged after checking its depth and every string in it (keys included).

    Iterative, so a value built in Python as deep as memory allows is checked without recursion.

    Raises:
        InputError: nesting deeper than ``max_depth``, or a string with a lone surrogate.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, where)
        elif isinstance(node, (dict, list)):
            if depth >= max_depth:
                raise InputError(f"{where}: JSON nested deeper than {max_depth} levels; refused")
            if isinstance(node, dict):
                for k, v in node.items():
                    if isinstance(k, str):
                        check_text(k, where)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in node)
    return value


def _too_deep(data: bytes, max_depth: int) -> bool:
    """Whether the brackets of ``data`` (strings included, an over-estimate) nest past ``max_depth``.

    Cheap and conservative: a document with fewer than ``max_depth`` opening brackets cannot be too
    deep, which is every ordinary file; only the others are scanned, outside strings.
    """
    if len(_OPEN.findall(data, 0, len(data))) <= max_depth:
        return False
    depth, in_str, esc = 0, False, False
    for c in data:
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return True
        elif c in (0x5D, 0x7D):
            depth -= 1
    return False


def parse_json(data: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse one JSON document with a depth limit; every failure is one line naming ``where``.

    NaN and infinities are accepted (metrics may hold a non-finite loss).

    Args:
        data: the document, text or UTF-8 bytes.
        where: names the source, first in the message (``RUN/state.json``, ``metrics.jsonl line 3``).
        max_depth: the deepest nesting allowed.

    Returns:
        The parsed value.

    Raises:
        InputError: bytes that are not UTF-8, invalid JSON (line and column), nesting past
            ``max_depth``, or a lone surrogate in a string.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if _too_deep(raw, max_depth):
        raise InputError(f"{where}: JSON nested deeper than {max_depth} levels; refused")
    try:
        text = data if isinstance(data, str) else raw.decode("utf-8")
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply; refused") from None
    return check_json_value(value, where, max_depth)


def cap_lines(lines: Sequence[str], limit: int = MAX_ERROR_LINES, prefix: str = "") -> list[str]:
    """The first ``limit`` lines, then one ``"{prefix}and N more"`` line when there are more.

    Args:
        lines: the error lines.
        limit: how many to keep.
        prefix: put before the last line (the file the errors concern, so that every line names it).
    """
    if len(lines) <= limit:
        return list(lines)
    return [*lines[:limit], f"{prefix}and {len(lines) - limit:,} more"]
