"""Attention backends: one registered entry per file (reference, sdpa, flex, hard, auto)."""

from zonkey.components.attention import auto, flex, hard, reference, sdpa  # noqa: F401
