"""One writer per run directory: an exclusive lock on ``RUN/.lock``.

``zonkey train``, ``zonkey baseline`` and ``zonkey ablate`` take the lock before they write into
a run; a second writer gets a one-line error that names the holder's PID. The lock is an
``flock`` on an open file, so the operating system releases it when the holder's process ends,
however it ends: a kill -9 never leaves a stale lock behind. The file itself stays (deleting it
would let two writers lock two different files); it holds the holder's PID and command, which
is only read to word the message. Readers (``eval``, ``sample``, ``plot`` ...) take no lock: they
read complete checkpoints only, which saves make visible by a rename.

Where ``fcntl`` does not exist (Windows) the lock is a no-op.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import TracebackType

from zonkey.fsguard import mkdir_real
from zonkey.io import CheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError"]

LOCK_FILE = ".lock"


class RunLockedError(CheckpointError):
    """Another process is writing the run directory."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").split()
    except OSError:
        return "another process"
    if text and text[0].isdigit():
        what = " ".join(text[1:3])
        return f"PID {text[0]}" + (f", {what}" if what else "")
    return "another process"


class RunLock:
    """The exclusive writer's lock of one run directory (a context manager; re-entrant per object).

    Args:
        run: the run directory (created if needed; a symbolic link as the run's lock file is refused).
        command: who writes (``zonkey train``), recorded for the message a second writer gets.
    """

    def __init__(self, run: str | Path, command: str = "zonkey") -> None:
        self.run = Path(run)
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or fail at once if another writer holds it.

        Raises:
            RunLockedError: another process (or another lock object) holds it; names its PID.
            CheckpointError: the run folder or the lock file cannot be made (a link, a file).
        """
        if self._fd is not None or fcntl is None:
            return self
        mkdir_real(self.run, str(self.run))
        path = self.run / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | \
            getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as exc:
            reason = "a symbolic link; refused" if exc.errno == errno.ELOOP else exc.strerror
            raise CheckpointError(f"{self.run}: cannot open the run's lock file {path} ({reason})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise CheckpointError(f"{self.run}: the run's lock file {path} is not a regular file; refused")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"{self.run}: {holder} is writing this run; wait for it to end or choose "
                                     "another --out") from None
            raise CheckpointError(f"{self.run}: cannot lock {path} ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        self._fd = fd
        return self

    # held by the class: at interpreter exit a lock still alive is collected after the module's
    # globals (``os`` among them) may already be gone
    _close = staticmethod(os.close)

    def release(self) -> None:
        """Give the lock up (the file stays). Closing the descriptor releases it."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()
