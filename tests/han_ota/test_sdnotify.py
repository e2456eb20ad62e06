"""han_ota.sdnotify against real AF_UNIX datagram sockets, as systemd would listen."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from han_ota.sdnotify import Notifier, notify, notify_socket_address, watchdog_interval


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = tmp_path / "notify"
    sock.bind(str(address))
    sock.settimeout(2)
    yield sock, {"NOTIFY_SOCKET": str(address)}
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, dict[str, str]]]:
    name = f"han-ota-test-{os.getpid()}-{os.urandom(4).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    yield sock, {"NOTIFY_SOCKET": "@" + name}
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_reach_a_path_socket(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = path_socket
    with Notifier(env) as n:
        assert n.enabled
        assert n.ready(status="serving 2 jobs")
        assert received(sock) == ["READY=1", "STATUS=serving 2 jobs"]
        assert n.status("transferring\nblock 12") and received(sock) == ["STATUS=transferring block 12"]
        assert n.watchdog() and received(sock) == ["WATCHDOG=1"]
        assert n.stopping() and received(sock) == ["STOPPING=1"]
        assert n.extend_timeout(1.5) and received(sock) == ["EXTEND_TIMEOUT_USEC=1500000"]
        assert n.reloading()
        first, stamp = received(sock)
        assert first == "RELOADING=1" and stamp.startswith("MONOTONIC_USEC=") and int(stamp.split("=")[1]) > 0


def test_messages_reach_an_abstract_socket(abstract_socket: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = abstract_socket
    assert notify_socket_address(env) == "\0" + env["NOTIFY_SOCKET"][1:]
    assert notify("READY=1", "STATUS=up", env=env)
    assert received(sock) == ["READY=1", "STATUS=up"]


def test_unset_socket_is_a_no_op() -> None:
    with Notifier({}) as n:
        assert not n.enabled
        assert n.ready() is False and n.watchdog() is False
    assert notify("READY=1", env={"NOTIFY_SOCKET": ""}) is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}) as n:
        assert n.watchdog() is False
    assert "sd_notify" in caplog.text and "gone" in caplog.text


def test_malformed_assignments_are_refused(path_socket: tuple[socket.socket, dict[str, str]]) -> None:
    _, env = path_socket
    with Notifier(env) as n, pytest.raises(ValueError, match="KEY=value"):
        n.notify("READY=1\nWATCHDOG=1")


def test_unsupported_socket_kinds_are_ignored() -> None:
    assert notify_socket_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # inherited from a parent
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_interval_defaults_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 0.5


def test_a_full_receiver_costs_a_lost_datagram_not_a_blocked_loop(tmp_path: Path) -> None:
    # A receiver that never reads: its queue fills, and every later send must fail
    # at once (EAGAIN) instead of blocking the daemon's event loop.
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    try:
        notifier = Notifier(env={"NOTIFY_SOCKET": str(path)})
        results = [notifier.notify("WATCHDOG=1") for _ in range(5000)]
        assert results[0] is True
        assert False in results, "the receiver's queue never filled; the test proves nothing"
        notifier.close()
    finally:
        receiver.close()
