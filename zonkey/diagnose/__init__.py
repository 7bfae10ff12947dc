"""Diagnostics of a trained run: measurements that explain a metric rather than report it.

Each diagnostic is a module with one entry function taking a loaded model and returning a plain
result (a dataclass with ``as_dict()`` for JSON and ``lines()`` for text). ``zonkey diagnose ...``
(``zonkey/cli/diagnose.py``) is a thin command per module:

- :mod:`zonkey.diagnose.byte_errors`: where level 0's t = 0 reconstruction errors are.
- :mod:`zonkey.diagnose.roundtrip_chunks`: the level-1 round trip at several document lengths.
- :mod:`zonkey.diagnose.probe_level1`: a fresh level 1 trained on a run's frozen level-0 latents.
- :mod:`zonkey.diagnose.denoise`: held-out latents noised to σ and denoised back; prior samples.
"""

from zonkey.errors import ZonkeyError


class DiagnosticError(ZonkeyError, ValueError):
    """A diagnostic cannot run on this model or with these arguments (the message says why)."""
