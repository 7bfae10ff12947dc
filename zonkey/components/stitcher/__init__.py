"""Stitchers: overlapping decoded segments -> one document sequence (§7)."""

from zonkey.components.stitcher import hard, learned  # noqa: F401
