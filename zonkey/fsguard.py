"""File operations that neither follow a planted link nor hang on a special file.

A run directory may have been prepared by someone else. What zonkey writes, appends, prunes or
renames in it must be a regular file or a folder inside it, checked at the moment of the
operation (``O_NOFOLLOW``, ``lstat``), not only when the run starts; and what it reads as data or
metrics must be a regular file (a FIFO would block the reader forever, a device would never end).
Opening with ``O_NONBLOCK`` makes the open of a FIFO return at once, so it can be refused.

Every refusal is one line naming the path. Torch-free, like :mod:`zonkey.inputs`.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from zonkey.errors import CheckpointError, ZonkeyError

__all__ = [
    "append_text",
    "mkdir_real",
    "no_link",
    "open_regular",
    "read_regular",
    "real_dir",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a file" if stat.S_ISREG(mode) else "not a regular file"


def no_link(path: Path, what: str = "", error: type[ZonkeyError] = CheckpointError) -> None:
    """Refuse ``path`` when it exists as a symbolic link (a missing path passes).

    Raises:
        ZonkeyError: ``error``, naming the path.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise error(f"{what or path}: {path} is a symbolic link; refused (zonkey never writes through a link)")


def real_dir(path: Path, what: str = "", error: type[ZonkeyError] = CheckpointError) -> Path:
    """``path`` if it is a folder and not a symbolic link.

    Raises:
        ZonkeyError: missing, a link or something else than a folder.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise error(f"{what or path}: {path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{what or path}: {path} is {_kind(st.st_mode)}, not a folder; refused")
    return path


def mkdir_real(path: Path, what: str = "", error: type[ZonkeyError] = CheckpointError) -> Path:
    """Create the folder ``path`` if needed (its parents too) and check that it is a real folder.

    Raises:
        ZonkeyError: ``path`` exists as a link or as something else than a folder.
    """
    no_link(path, what, error)
    if not os.path.lexists(path):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(f"{what or path}: cannot create the folder {path} ({exc.strerror})") from None
    return real_dir(path, what, error)


def open_regular(path: Path, what: str = "", *, follow: bool = False,
                 error: type[ZonkeyError] = CheckpointError) -> int:
    """A read-only descriptor of ``path``, refused unless it is a regular file.

    Args:
        path: the file.
        what: names the file's role, first in the message (default: the path).
        follow: whether a symbolic link as the last component is followed (data files may be
            links; files of a run directory may not).
        error: the error class raised.

    Returns:
        An open descriptor (blocking mode restored); the caller closes it.

    Raises:
        ZonkeyError: a missing or unreadable file, a link (unless ``follow``), a FIFO, a socket,
            a device or a folder.
    """
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{what or path}: {path} is a symbolic link; refused") from None
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket (or a FIFO without a writer on some systems)
            raise error(f"{what or path}: {path} is not a regular file; refused") from None
        if exc.errno == errno.ENOENT:
            raise error(f"{what or path}: {path}: no such file") from None
        raise error(f"{what or path}: cannot read {path} ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{what or path}: {path} is {_kind(st.st_mode)}, not a regular file; refused")
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def read_regular(path: Path, what: str = "", *, follow: bool = False,
                 error: type[ZonkeyError] = CheckpointError) -> bytes:
    """The whole content of a regular file (see :func:`open_regular` for what is refused)."""
    fd = open_regular(path, what, follow=follow, error=error)
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read()
    except OSError as exc:
        raise error(f"{what or path}: cannot read {path} ({exc.strerror})") from None


def append_text(path: Path, text: str, what: str = "", error: type[ZonkeyError] = CheckpointError) -> None:
    """Append ``text`` (UTF-8) to the regular file ``path``, creating it if needed, never through a link.

    Raises:
        ZonkeyError: ``path`` is a link, a FIFO or anything but a regular file, or the write failed.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{what or path}: {path} is a symbolic link; refused (zonkey never writes through a link)") \
                from None
        if exc.errno == errno.ENXIO:  # a FIFO that nobody reads
            raise error(f"{what or path}: {path} is a FIFO, not a regular file; refused") from None
        raise error(f"{what or path}: cannot append to {path} ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what or path}: {path} is {_kind(st.st_mode)}, not a regular file; refused")
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError as exc:
        raise error(f"{what or path}: cannot append to {path} ({exc.strerror})") from None
    finally:
        os.close(fd)
