"""Built-in components. Importing this package registers them (one entry per file)."""

from zonkey.components import attention, compressor, denoiser, objective, prior, splitter, stitcher  # noqa: F401
