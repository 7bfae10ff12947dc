"""The one error type of the data package (defined with the others in :mod:`zonkey.errors`)."""

from __future__ import annotations

from zonkey.errors import DataError

__all__ = ["DataError"]


