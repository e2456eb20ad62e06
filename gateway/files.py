"""Opening files a user names (images, commands) without ever blocking on the open.

A FIFO opened for reading blocks until a writer appears, and a tty or other device
may block or read forever; in the daemon that wedges a worker thread per request.
So only regular files are read: checked before the open, opened non-blocking (a
FIFO then opens at once), and checked again on the open descriptor, since the path
may have been swapped between the two.
"""

from __future__ import annotations

import fcntl
import os
import stat
from typing import BinaryIO

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """The path names something other than a regular file; the message names it."""

    def __init__(self, path: str, mode: int) -> None:
        kind = next((name for test, name in _KINDS if test(mode)), "not a plain file")
        super().__init__(f"{path} is not a regular file ({kind}); give the path of a file")
        self.path = path
        self.kind = kind


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open `path` for reading in binary mode, refusing anything but a regular file.

    Raises NotRegularFile, or the OSError of stat/open (missing, unreadable), which
    names the path.
    """
    name = os.fspath(path)
    before = os.stat(name)
    if not stat.S_ISREG(before.st_mode):
        raise NotRegularFile(name, before.st_mode)
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise NotRegularFile(name, opened.st_mode)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FileRefused(ValueError):
    """A file a user named cannot be used as what they said it is; the message says why."""


def read_small(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The whole of a small regular file (a command file), or FileRefused naming the path."""
    try:
        with open_regular(path) as f:
            data = f.read(limit + 1)
    except NotRegularFile as exc:
        raise FileRefused(f"{what} {exc}") from None
    except OSError as exc:
        raise FileRefused(f"cannot read {what} {os.fspath(path)}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FileRefused(f"{what} {os.fspath(path)} is over {limit} bytes")
    return data


__all__ = ["FileRefused", "NotRegularFile", "open_regular", "read_small"]
