"""The state directory: which one (one rule for every command), creating it, and one daemon per directory."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
from pathlib import Path

from gateway.config import Config

LOCK_NAME = "daemon.lock"


class StateDirError(RuntimeError):
    """The state directory cannot be used; the message names it and the fix."""


def user_state_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "han-ota"


def with_state_dir(config: Config, env: dict[str, str] | None = None) -> Config:
    """``$STATE_DIRECTORY`` under systemd, else the config's ``state_dir``, else the per-user one."""
    env = dict(os.environ) if env is None else env
    systemd = env.get("STATE_DIRECTORY")
    if systemd:
        # systemd lists one directory per StateDirectory= entry, colon-separated.
        return dataclasses.replace(config, state_dir=Path(systemd.split(":")[0]), state_dir_from="STATE_DIRECTORY")
    if config.state_dir_from == "config":
        return config
    return dataclasses.replace(config, state_dir=user_state_dir(env), state_dir_from="per-user")


def describe(config: Config) -> str:
    """The directory and where it came from, for messages."""
    where = {
        "config": f"state_dir in {config.source}",
        "STATE_DIRECTORY": "$STATE_DIRECTORY, set by systemd's StateDirectory=",
        "per-user": "the per-user default; set state_dir in the config to choose another",
    }.get(config.state_dir_from, "the built-in default")
    return f"{config.state_dir} ({where})"


def ensure_state_dir(config: Config) -> Path:
    """The state directory, created (mode 0700) when missing and its parent exists.

    The per-user default may create its parents too (~/.local/state may not exist yet).
    """
    path = config.state_dir
    if path.is_dir():
        return path
    if path.exists():
        raise StateDirError(f"state directory {describe(config)} is not a directory")
    parents = config.state_dir_from == "per-user"
    try:
        path.mkdir(mode=0o700, parents=parents)
    except FileNotFoundError:
        raise StateDirError(
            f"state directory {describe(config)} does not exist and neither does {path.parent}: create it "
            f"(install -d -m 0750 -o han-ota -g han-ota {path}) or run under systemd with StateDirectory=han-ota"
        ) from None
    except PermissionError:
        raise StateDirError(f"state directory {describe(config)} cannot be created: permission denied on {path.parent}; create it as its owner, or set state_dir to a directory you may write") from None
    except FileExistsError:  # made meanwhile by another command
        pass
    return path


class StateDirLock:
    """An exclusive lock on a state directory for one daemon's lifetime.

    Two daemons on one directory would both resume the same jobs and serve the same
    devices. ``flock`` dies with the process, so a kill -9 never leaves a stale lock.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirLock:
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            socket = holder[1] if len(holder) > 1 else "its control socket"
            raise StateDirError(
                f"state directory {state_dir} is in use by another han-ota daemon (pid {pid}, control socket {socket}): "
                f"stop it first (systemctl stop han-ota, or kill {pid}), or give this one its own state_dir"
            ) from None
        return cls(fd, path)

    def record(self, control_socket: Path) -> None:
        """Write who holds the lock, for the refusal a second daemon prints."""
        text = f"{os.getpid()} {control_socket}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text, 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1
