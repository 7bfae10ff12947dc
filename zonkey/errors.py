"""Errors a user can cause (bad data, a corrupt checkpoint, a failed run).

The CLI prints their message without a traceback. Imported lazily so that ``zonkey --version``
does not load torch.
"""

from __future__ import annotations


def _user_errors() -> tuple[type[BaseException], ...]:
    from zonkey.core.checkpoint import CheckpointError
    from zonkey.core.train import TrainingError
    from zonkey.data import DataError

    return (CheckpointError, DataError, TrainingError)


def __getattr__(name: str):
    if name == "USER_ERRORS":
        return _user_errors()
    raise AttributeError(name)
