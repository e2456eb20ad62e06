"""The daemon's client, used by every ``han-ota`` command, and the one rule for finding the config.

``resolve_config(path)``: an explicit ``--config`` is loaded (and must exist);
without one, ``/etc/han-ota/config.toml`` is loaded when it exists; otherwise the
built-in defaults apply with per-user places, so a developer can run ``han-ota run``
without root: state in ``~/.local/state/han-ota`` (``$XDG_STATE_HOME/han-ota``) and
the control socket at ``$XDG_RUNTIME_DIR/han-ota/control.sock`` (or
``/tmp/han-ota-$UID/control.sock`` when there is no runtime directory).

``find_daemon(config)`` returns a ``Client`` when something answers on the control
socket, None when nothing does. ``Client`` is synchronous (the CLI is), speaks
HTTP/1.1 over the Unix socket with the standard library's http.client, and raises
``DaemonError`` carrying the daemon's own error message.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from gateway.config import DEFAULT_CONFIG_PATH, Config, load_config
from han_ota.statedir import user_state_dir, with_state_dir

DEFAULT_TIMEOUT_S = 30.0
END_STATES = frozenset({"confirmed", "failed", "cancelled"})


# --------------------------------------------------------------------------- config


def user_control_socket(env: dict[str, str] | None = None, uid: int | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "han-ota" / "control.sock"
    return Path(f"/tmp/han-ota-{os.getuid() if uid is None else uid}") / "control.sock"


def builtin_config(env: dict[str, str] | None = None) -> Config:
    """The defaults used when no configuration file exists (``config.source`` is None)."""
    return with_state_dir(dataclasses.replace(Config(), control_socket=user_control_socket(env)), env)


def resolve_config(path: Path | None, *, default_path: Path = DEFAULT_CONFIG_PATH, env: dict[str, str] | None = None) -> Config:
    """The configuration every command uses; raises gateway.config.ConfigError."""
    if path is not None:
        # Absolute, so that paths in the file (relative to it) come out absolute too.
        return with_state_dir(load_config(Path(path).expanduser().absolute()), env)
    if default_path.exists():
        return with_state_dir(load_config(default_path), env)
    return builtin_config(env)


# --------------------------------------------------------------------------- errors


class DaemonError(RuntimeError):
    """The daemon refused a request or could not be reached; the message is its own."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- transport


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One method per control API route; each returns the decoded JSON body."""

    def __init__(self, socket_path: Path | None = None, *, tcp: tuple[str, int] | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if socket_path is None and tcp is None:
            raise ValueError("give a socket path or a TCP address")
        self.socket_path = socket_path
        self.tcp = tcp
        self.timeout = timeout

    def __repr__(self) -> str:
        where = self.socket_path if self.socket_path is not None else f"{self.tcp[0]}:{self.tcp[1]}"  # type: ignore[index]
        return f"<Client {where}>"

    # -------------------------------------------------------------- routes

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/status")

    def devices(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/devices")["devices"]

    def push(
        self,
        image: Path | str,
        device: str,
        *,
        activation: str | None = None,
        activate_now: bool = False,
        stall_timeout: float | None = None,
        allow_downgrade: bool = False,
        priority: int | str | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Start a job; returns the job object. The image path is sent absolute: the
        daemon reads it, so it must be readable by the service user."""
        body: dict[str, Any] = {
            "image": str(Path(image).expanduser().resolve()),
            "device": device,
            "activation": activation,
            "activate_now": activate_now,
            "stall_timeout": stall_timeout,
        }
        if allow_downgrade:  # only when asked: a daemon from before it refuses unknown keys
            body["allow_downgrade"] = True
        if priority is not None:  # likewise
            body["priority"] = priority
        if replace:
            body["replace"] = True
        return self._call("POST", "/v1/push", body)["job"]

    def activate(self, command: str, device: str | None = None) -> dict[str, Any]:
        return self._call("POST", "/v1/activate", {"command": command, "device": device})

    def gbcs_send(self, command: str, device: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Forward a verified GBCS command over the device's tunnel; the daemon answers
        once the device's response came (or ``timeout`` passed)."""
        return self._call("POST", "/v1/gbcs/send", {"command": command, "device": device, "timeout": timeout})

    def job(self, job_id: str | int) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{quote(str(job_id), safe='')}")["job"]

    def cancel(self, job_id: str | int) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{quote(str(job_id), safe='')}/cancel")["job"]

    def log(self, device: str | None = None, since: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """{"records": [...], "head": seq}; records with seq > since, at most limit."""
        query = {k: v for k, v in (("device", device), ("since", since), ("limit", limit)) if v is not None}
        return self._call("GET", "/v1/log" + (f"?{urlencode(query)}" if query else ""))

    def log_verify(self) -> dict[str, Any]:
        return self._call("GET", "/v1/log/verify")

    def messages(self, device: str | None = None, after: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """{"messages": [...]}: the GBCS messages kept with id > after, the newest limit (issue 13)."""
        query = {k: v for k, v in (("device", device), ("after", after), ("limit", limit)) if v is not None}
        return self._call("GET", "/v1/messages" + (f"?{urlencode(query)}" if query else ""))

    # -------------------------------------------------------------- helpers

    def wait_job(
        self,
        job_id: str | int,
        until: Iterable[str] = ("held",),
        *,
        timeout: float | None = None,
        poll_s: float = 0.25,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until its state is in ``until`` or an end state; returns it.
        Raises DaemonError on timeout."""
        wanted = set(until) | END_STATES
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in wanted:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise DaemonError(f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(poll_s)

    def ping(self) -> None:
        """Connect and close: raises OSError when nothing listens."""
        sock = self._raw_socket()
        sock.close()

    def _raw_socket(self) -> socket.socket:
        if self.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = str(self.socket_path)
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in self.tcp[0] else socket.AF_INET, socket.SOCK_STREAM)  # type: ignore[index]
            target = self.tcp
        sock.settimeout(min(self.timeout, 5.0))
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(self.socket_path, self.timeout)
        assert self.tcp is not None
        return http.client.HTTPConnection(self.tcp[0], self.tcp[1], timeout=self.timeout)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        conn = self._connection()
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json", "Connection": "close"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            headers["Content-Length"] = "0"
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except FileNotFoundError:
            raise DaemonError(f"no daemon is listening on {self.socket_path}; start it with `han-ota run` or `systemctl start han-ota`") from None
        except ConnectionRefusedError:
            raise DaemonError(f"the daemon at {self._where()} refused the connection; it is not running (a stale socket?)") from None
        except PermissionError:
            raise DaemonError(f"permission denied on {self._where()}: add your user to the han-ota group (usermod -aG han-ota $USER) and log in again") from None
        except (TimeoutError, socket.timeout):
            raise DaemonError(f"the daemon at {self._where()} did not answer {method} {path} within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"talking to the daemon at {self._where()} failed: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        try:
            data = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            raise DaemonError(f"the daemon answered {method} {path} with {response.status} and a body that is not JSON", response.status) from None
        if response.status >= 400:
            message = data.get("error") if isinstance(data, dict) else None
            raise DaemonError(message or f"{method} {path} failed with HTTP {response.status}", response.status)
        return data

    def _where(self) -> str:
        return str(self.socket_path) if self.socket_path is not None else f"{self.tcp[0]}:{self.tcp[1]}"  # type: ignore[index]


def find_daemon(config: Config, *, timeout: float = DEFAULT_TIMEOUT_S) -> Client | None:
    """A Client for the running daemon, or None when nothing listens.

    Tries the Unix socket, then ``control_tcp`` if configured. Raises DaemonError
    when a daemon is there but we may not talk to it (permissions), so that the
    caller does not silently fall back to working without it.
    """
    candidates = [Client(config.control_socket, timeout=timeout)]
    if config.control_tcp:
        from han_ota.control import parse_host_port

        candidates.append(Client(tcp=parse_host_port(config.control_tcp), timeout=timeout))
    for client in candidates:
        try:
            client.ping()
        except PermissionError:
            raise DaemonError(
                f"permission denied on {client._where()}: add your user to the han-ota group "
                "(usermod -aG han-ota $USER) and log in again"
            ) from None
        except OSError:  # no socket file, refused (stale), timed out: nothing answers there
            continue
        return client
    return None


def elsewhere(config: Config, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[tuple[Path, str | None]]:
    """Daemons answering on the default sockets other than ``config``'s: (socket, their config).

    A daemon started with another config listens elsewhere; "none is running" would
    send the user to start a second one on the same radio.
    """
    found: list[tuple[Path, str | None]] = []
    for path in dict.fromkeys((Config.control_socket, user_control_socket())):
        if path == config.control_socket:
            continue
        client = Client(path, timeout=timeout)
        try:
            client.ping()
            body = client.status()
        except (OSError, DaemonError):
            continue
        found.append((path, body.get("daemon", {}).get("config")))
    return found


__all__ = ["Client", "DaemonError", "builtin_config", "elsewhere", "find_daemon", "resolve_config", "user_control_socket", "user_state_dir"]
