"""The run lock: one writer per run directory, released by the OS when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zonkey.core.checkpoint.runlock import LOCK_FILE, RunLock, RunLockedError
from zonkey.io import CheckpointError

HOLD = ("import sys, time; from zonkey.core.checkpoint.runlock import RunLock; "
        "lock = RunLock(sys.argv[1], 'holder').acquire(); print('held', flush=True); time.sleep(120)")


def _holder(run: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_lock_object_is_refused_and_named(tmp_path: Path) -> None:
    with RunLock(tmp_path / "run", "zonkey train"):
        with pytest.raises(RunLockedError, match=rf"PID {os.getpid()}, zonkey train is writing this run"):
            RunLock(tmp_path / "run").acquire()
    RunLock(tmp_path / "run").acquire().release()  # free again once released


def test_the_lock_of_a_killed_process_is_released_by_the_os(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(RunLockedError, match=rf"PID {proc.pid}, holder is writing this run"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    t0 = time.monotonic()
    with RunLock(run) as lock:  # no stale lock after kill -9
        assert lock.held
    assert time.monotonic() - t0 < 1.0


def test_a_link_as_the_lock_file_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    (run / LOCK_FILE).symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        RunLock(run).acquire()
    assert outside.read_bytes() == b"keep"


def test_a_file_where_the_run_folder_should_be_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        RunLock(tmp_path / "run").acquire()


def test_a_lock_alive_at_interpreter_exit_is_released_quietly(tmp_path) -> None:
    """A lock still held when Python exits (a trainer left in a module global) prints nothing: it is
    collected after the module's globals are gone."""
    code = ("import zonkey.core.checkpoint.runlock as m, sys\n"
            f"m._kept = m.RunLock({str(tmp_path)!r}, 'zonkey train').acquire()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stderr == ""
