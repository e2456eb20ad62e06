"""A tiny sd_notify(3) client: tell systemd we are ready, alive, reloading or stopping.

No dependency: one AF_UNIX datagram per notification to ``$NOTIFY_SOCKET`` (a path,
or ``@name`` for an abstract socket). Outside systemd (the variable unset) every
call is a no-op that returns False, so the daemon code never has to ask.

Under ``Type=notify`` with ``WatchdogSec=``, systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``); ``watchdog_interval()`` says how often to send ``WATCHDOG=1``
-- half the timeout, as sd_watchdog_enabled(3) recommends.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

logger = logging.getLogger("han_ota.sdnotify")


def notify_socket_address(env: Mapping[str, str] | None = None) -> str | None:
    """The address to send to: a filesystem path, or a ``\\0``-prefixed abstract name; None if unset."""
    value = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # systemd >= 254 may also hand out vsock:CID:PORT (VMs); a service on a Pi never gets one.
    logger.warning("NOTIFY_SOCKET=%r is neither a path nor an @abstract name; not notifying systemd", value)
    return None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None if no watchdog is ours.

    None when ``$WATCHDOG_USEC`` is unset, zero or malformed, or when
    ``$WATCHDOG_PID`` names another process (the variables were inherited).
    """
    env = os.environ if env is None else env
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            logger.warning("WATCHDOG_PID=%r is not a number; ignoring the watchdog", pid_text)
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        logger.warning("WATCHDOG_USEC=%r is not a number; ignoring the watchdog", usec_text)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class Notifier:
    """Sends sd_notify datagrams; each method returns True if one was sent.

    A send that fails (systemd gone, socket full) is logged and returns False
    rather than raising: a missed notification must not take the daemon down.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.address = notify_socket_address(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram (systemd applies them together)."""
        if self.address is None:
            return False
        for line in assignments:
            if "=" not in line or "\n" in line:
                raise ValueError(f"sd_notify takes single-line KEY=value assignments, got {line!r}")
        payload = "\n".join(assignments).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    # Non-blocking: a full receive queue must cost one lost datagram, not
                    # a frozen event loop (the daemon calls this from the loop).
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
                self._sock.sendto(payload, self.address)
                return True
            except OSError as e:
                logger.warning("sd_notify to %r failed: %s", self.address.replace("\0", "@"), e)
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([_status(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([_status(status)] if status is not None else []))

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) tell this reload from a stale one.
        stamp = f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        return self.notify("RELOADING=1", stamp, *([_status(status)] if status is not None else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time during a slow start or stop (EXTEND_TIMEOUT_USEC)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def errno(self, code: int) -> bool:
        return self.notify(f"ERRNO={int(code)}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """One-shot ``sd_notify``: ``notify("READY=1", "STATUS=listening")``."""
    with Notifier(env) as notifier:
        return notifier.notify(*assignments)


def _status(text: str) -> str:
    # STATUS is one line in `systemctl status`; a newline would start a new assignment.
    return "STATUS=" + " ".join(str(text).split())
