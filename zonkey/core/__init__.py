"""The model and everything it needs, one job per package, lowest layer first.

- :mod:`~zonkey.core.contracts`: the registry, a Protocol per component kind, the dataclasses
  that cross component boundaries, the axis legend.
- :mod:`~zonkey.core.recipe`: the typed recipe, ``base:`` inheritance, overrides, migrations.
- :mod:`~zonkey.core.nn`: the shared math (existence, segments, the sphere, the noise schedule,
  probabilistic attention, the encoder block, stitching, the losses, boundaries).
- :mod:`~zonkey.core.checkpoint`: safetensors + JSON checkpoints, atomic saves, loading.
- :mod:`~zonkey.core.model`: a level, the network and its encoder walk, deterministic reads.
- :mod:`~zonkey.core.train`: the trainer, the optimiser, distributed data parallel.
- :mod:`~zonkey.core.generate`: the walk down to bytes, sampling, infilling, the prior's sampler.
- :mod:`~zonkey.core.evaluate`: held-out metrics, round trips, sample and infill metrics, the judge.

Nothing here imports the components (they arrive through the registry), the baselines, the
command line or the user API; ``tests/test_imports.py`` holds the table of allowed imports.
"""
