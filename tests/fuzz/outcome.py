"""The one rule every fuzz case checks: a success, or exit code 1 or 2 with one error line.

A failure must print exactly one ``error:`` line on stderr, naming what went wrong and where;
never a traceback, and never an exception that escaped the command. Only a recipe with several
errors says more: one line per error, each naming the same file first (``FILE: dotted.path: ...``).
Anything else on stderr (training log lines, warnings) comes before the error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

from typer.testing import CliRunner

from zonkey.cli.app import app

OK = 0
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+|[╭╰│]", re.M)

runner = CliRunner()


def zonkey(args: Sequence[str], *, input: str | bytes | None = None, expect: int | set[int] | None = None,
           match: str | None = None):
    """Run ``zonkey ARGS`` in this process and check the outcome.

    Args:
        args: the command line after ``zonkey``.
        input: stdin.
        expect: the exit code (or codes) this case must end with; None: any of 0, 1, 2.
        match: a regex the error line must contain (what went wrong and where).

    Returns:
        The click result.
    """
    res = runner.invoke(app, [str(a) for a in args], input=input)
    where = f"zonkey {' '.join(map(str, args))[:200]}"
    escaped = res.exception is not None and not isinstance(res.exception, SystemExit)
    assert not escaped, f"{where}: {type(res.exception).__name__}: {res.exception} escaped the command"
    assert not TRACEBACK.search(res.stderr), f"{where}: a traceback on stderr:\n{res.stderr[-2000:]}"
    codes = {0, 1, 2} if expect is None else {expect} if isinstance(expect, int) else expect
    assert res.exit_code in codes, \
        f"{where}: exit code {res.exit_code}, expected {sorted(codes)}:\n{res.stderr[-2000:]}"
    if res.exit_code != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert len(errors) == 1, f"{where}: expected one error line:\n{res.stderr}"
        source = errors[0].removeprefix("error: ").split(": ", 1)[0]
        more = lines[lines.index(errors[0]) + 1:]
        assert all(ln.startswith(source + ": ") for ln in more), f"{where}: lines after the error:\n{res.stderr}"
        assert len(errors[0]) > len("error: ") + 10, f"{where}: an error that says nothing: {errors[0]!r}"
        if match is not None:
            block = "\n".join([errors[0], *more])
            assert re.search(match, block), f"{where}: {block!r} does not match {match!r}"
    return res


def error_line(res) -> str:
    """The ``error:`` line of a failed result."""
    return next(ln for ln in res.stderr.splitlines() if ln.startswith("error:"))


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path (what "nothing saved changed" compares).

    The run's lock file is left out: a writer that is refused may have written its PID there.
    """
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}
