"""The one error type of the data package."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Data could not be read or used. The message says what and where (file, line, row)."""
