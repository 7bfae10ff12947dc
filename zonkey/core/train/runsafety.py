"""What keeps a run directory consistent while a trainer writes it.

* :func:`append_metrics`: a row appended to ``metrics.jsonl``, never through a link or into a FIFO;
* :func:`truncate_metrics`: on resume, the rows logged after the resumed checkpoint are dropped
  (atomically), so that a run killed between two saves and resumed logs every step once;
* :func:`prepare_fresh`: a fresh run refuses a folder that holds another run's files, or with
  ``restart`` deletes those files (only them: anything else in the folder stays);
* :class:`StopSignals`: SIGINT and SIGTERM ask the loop to stop at the next step boundary, where
  the trainer saves a checkpoint and returns; a second signal acts as it would without zonkey.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from zonkey.core.checkpoint.layout import CHECKPOINTS_DIR, EMA_FILE, LATEST_FILE, MODEL_FILE, RECIPE_FILE, TMP_PREFIX
from zonkey.errors import CheckpointError, TrainingError, ZonkeyError
from zonkey.fsguard import append_text, no_link, read_regular
from zonkey.inputs import parse_json
from zonkey.io import atomic_write_bytes

__all__ = [
    "METRICS_FILE",
    "StopSignals",
    "append_metrics",
    "interrupted_message",
    "prepare_fresh",
    "refuse_links",
    "run_files",
    "seed_host_generators",
    "signal_name",
    "truncate_metrics",
]

METRICS_FILE = "metrics.jsonl"
_FIT_REPORT = re.compile(r"^[a-z_]+-l\d+\.json$")


def append_metrics(run: Path, row: dict[str, Any]) -> None:
    """Append one JSON row to ``RUN/metrics.jsonl`` (a link or a special file there is refused).

    Raises:
        CheckpointError: the metrics file is a link, not a regular file, or cannot be written.
    """
    append_text(run / METRICS_FILE, json.dumps(row) + "\n", f"{run}: {METRICS_FILE}")


def truncate_metrics(run: Path, step: int) -> int:
    """Keep only the rows of ``RUN/metrics.jsonl`` up to ``step``; returns how many were dropped.

    The rows of steps after the checkpoint being resumed are logged again by the resumed run;
    a half-written last line (a kill during an append) is dropped too. The file is replaced
    atomically, so a kill during the truncation leaves the old or the new file.

    Raises:
        CheckpointError: the metrics file is a link or not a regular file.
    """
    path = run / METRICS_FILE
    no_link(path, f"{run}: {METRICS_FILE}")
    if not os.path.lexists(path):
        atomic_write_bytes(path, b"")
        return 0
    lines = read_regular(path, f"{run}: {METRICS_FILE}").decode("utf-8", "replace").splitlines(keepends=True)
    kept: list[str] = []
    for i, line in enumerate(lines, 1):
        if not line.endswith("\n"):
            continue  # torn by a kill mid-append
        try:
            row = parse_json(line, f"{path}:{i}")
        except ZonkeyError:
            continue
        s = row.get("step") if isinstance(row, dict) else None
        if isinstance(s, int) and not isinstance(s, bool) and s <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_bytes(path, "".join(kept).encode("utf-8"))
    return dropped


def run_files(run: Path) -> list[Path]:
    """The files and folders a diffusion run writes that exist in ``run`` (the rest is not the run's)."""
    names = [RECIPE_FILE, METRICS_FILE, LATEST_FILE, MODEL_FILE, EMA_FILE, CHECKPOINTS_DIR]
    found = [run / n for n in names if os.path.lexists(run / n)]
    if run.is_dir():  # interrupted writes, and the reports of the parts fitted to the text (KIND-lN.json)
        found += sorted(p for p in run.iterdir() if p.name.startswith(TMP_PREFIX) or _FIT_REPORT.match(p.name))
    return found


def prepare_fresh(run: Path, restart: bool) -> list[Path]:
    """Make ``run`` ready for a fresh run: refuse another run's files there, or delete them.

    Args:
        run: the run directory (need not exist).
        restart: delete the run's own files (:func:`run_files`) instead of refusing; links are
            removed as links, nothing outside the folder is touched.

    Returns:
        What was deleted.

    Raises:
        TrainingError: ``run`` holds a run's files and ``restart`` is off.
    """
    found = run_files(run)
    if not found:
        return []
    if not restart:
        saved = (run / LATEST_FILE).exists() or (run / MODEL_FILE).exists()
        what = "a run" if saved else "a run that saved no checkpoint"
        names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise TrainingError(f"{run} already holds {what} ({names}); pass --resume to continue it, --restart to "
                            "delete its files and start over, or choose another --out")
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    return found


class StopSignals:
    """While active, SIGINT and SIGTERM set :attr:`signum` instead of ending the process.

    The first signal only asks to stop (the loop checks :attr:`signum` at each step boundary); the
    previous handler is put back at once, so a second signal ends the process as usual. Handlers
    are installed only in the main thread (elsewhere Python refuses them and this does nothing).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self._restore()

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def __enter__(self) -> StopSignals:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._restore()


def seed_host_generators(seed: int) -> None:
    """Seed Python's ``random`` and numpy's global generator from the recipe's seed.

    Training draws nothing from them, but their states are saved in every checkpoint; unseeded,
    each process starts them from the OS's entropy and identical runs would save different files.
    """
    random.seed(seed)
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed % 2**32)


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def refuse_links(run: Path) -> None:
    """Refuse a run whose metrics file or checkpoints folder is a link, or whose metrics file is special.

    Checked when a trainer starts, before any slow work; every write checks again at its moment.

    Raises:
        CheckpointError: naming the file.
    """
    for name in (METRICS_FILE, CHECKPOINTS_DIR):
        no_link(run / name, f"{run}: {name}")
    try:
        mode = os.lstat(run / METRICS_FILE).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{run}: {METRICS_FILE}: {run / METRICS_FILE} is not a regular file; refused")


def interrupted_message(run: Path, step: int, signum: int) -> str:
    """What the log says after a signal stopped training and the checkpoint was saved."""
    return (f"{signal_name(signum)}: saved the checkpoint of step {step} in {run}; continue with --resume")

