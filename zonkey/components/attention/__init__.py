"""Attention backends: one registered entry per file (reference, sdpa, flex, hard)."""

from zonkey.components.attention import flex, hard, reference, sdpa  # noqa: F401
