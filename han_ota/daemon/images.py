"""The daemon's own copies of pushed images, in ``<state_dir>/images/<sha256>.ota``.

A job keeps its copy's path, so it survives the original being moved or deleted
(and ProtectHome hiding it after a restart); copies no attached job uses are
collected once the jobs are resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

LOGGER = logging.getLogger("han_ota.daemon")

IMAGES_DIR = "images"


def keep_image(state_dir: Path, data: bytes, digest: str) -> Path:
    """A durable copy of ``data`` (whose sha256 is ``digest``); an intact one is reused."""
    directory = state_dir / IMAGES_DIR
    directory.mkdir(mode=0o750, exist_ok=True)
    target = directory / f"{digest}.ota"
    if target.exists():
        with contextlib.suppress(OSError):
            if hashlib.sha256(target.read_bytes()).hexdigest() == digest:
                return target
    # A name of its own per call: concurrent pushes of one image each write a whole
    # copy, and replacing the target by identical content is harmless.
    fd, name = tempfile.mkstemp(prefix=f".{digest}.", suffix=".tmp", dir=directory)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o640)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, target)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return target


def collect_images(state_dir: Path, in_use: Iterable[str | Path]) -> None:
    """Delete kept image copies (and left-over temporary files) no job in ``in_use`` names:
    they only ever accumulate."""
    directory = state_dir / IMAGES_DIR
    if not directory.is_dir():
        return
    wanted = {Path(p).name for p in in_use}
    for path in directory.iterdir():
        if path.name in wanted:
            continue
        if path.suffix == ".ota" or path.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                path.unlink()
                LOGGER.info("removed image copy %s: no job uses it any more", path.name)
