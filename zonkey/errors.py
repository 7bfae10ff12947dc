"""The errors a user can cause: bad data, a bad recipe, a corrupt checkpoint, a failed run.

Every one of them is a :class:`ZonkeyError`, whose message says what and where on one line; the
command line prints it without a traceback. This module is a leaf: it imports nothing of zonkey
(nor torch), so anything may import it, ``zonkey --version`` included.
"""

from __future__ import annotations

__all__ = [
    "USER_ERRORS",
    "CheckpointError",
    "CheckpointWriteError",
    "DataError",
    "RecipeError",
    "TrainingError",
    "ZonkeyError",
]


class ZonkeyError(Exception):
    """An error a user can cause. The message says what and where, on one line."""


class DataError(ZonkeyError, ValueError):
    """Data could not be read or used. The message says what and where (file, line, row)."""


class RecipeError(ZonkeyError, ValueError):
    """A recipe could not be read or does not validate. The message says where and what."""


class CheckpointError(ZonkeyError, RuntimeError):
    """A checkpoint, run directory or one of their files cannot be written or read.

    The message names the path and fits on one line.
    """


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint could not be written (a full disk, a read-only folder): the previous one is intact.

    Both a :class:`CheckpointError` (the command line prints it as one line) and an ``OSError``
    (what the filesystem raised, kept as ``__cause__``; ``errno`` is copied from it).
    """

    def __init__(self, message: str, errno_: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


class TrainingError(ZonkeyError, RuntimeError):
    """Training cannot go on (e.g. too many non-finite losses in a row)."""


#: what the command line turns into a one-line message
USER_ERRORS: tuple[type[BaseException], ...] = (ZonkeyError,)
