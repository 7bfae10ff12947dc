"""Compressors: segment -> k latent vectors on the sphere (§5)."""

from zonkey.components.compressor import cls, mean  # noqa: F401
