"""The control API: the strict request parser, routing, and the server under garbage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from han_ota import control
from han_ota.client import Client, DaemonError, find_daemon
from han_ota.control import ControlServer, ControlSocketError, HttpError, parse_head, route
from gateway.config import Config

# --------------------------------------------------------------------------- parser


def test_parse_head_reads_method_path_query_and_headers() -> None:
    req = parse_head(b"GET /v1/log?device=00:11:22:33:44:55:66:77&since=5 HTTP/1.1\r\nHost: x\r\nX-A:  b \r\n\r\n")
    assert req.method == "GET" and req.path == "/v1/log"
    assert req.query == {"device": "00:11:22:33:44:55:66:77", "since": "5"}
    assert req.headers == {"host": "x", "x-a": "b"}
    assert req.content_length == 0


@pytest.mark.parametrize(
    ("head", "status", "words"),
    [
        (b"GARBAGE\r\n\r\n", 400, "request line"),
        (b"GET /v1/status\r\n\r\n", 400, "request line"),
        (b"GET  /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "request line"),
        (b"GET /v1/status HTTP/2.0\r\n\r\n", 400, "HTTP/1.1"),
        (b"GET /v1/status SPDY/1\r\n\r\n", 400, "request line"),
        (b"GET v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "absolute path"),
        (b"G@T /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "request line"),
        (b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n", 400, "illegal header line"),
        (b"GET /v1/status HTTP/1.1\r\n folded: x\r\nHost: localhost\r\n\r\n", 400, "continuation line"),
        (b"GET /v1/status HTTP/1.1\r\n\r\n", 400, "Host"),
        (b"GET /v1/status HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "Host"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "absolute path"),
        (b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nA: \x01\r\n\r\n", 400, "control characters"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "Content-Length"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "conflicting"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n", 413, "at most"),
        ("POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: \u00b97\r\n\r\n".encode("latin-1"), 400, "bad Content-Length"),
        (b"GET /v1/log?since=1&since=2 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "twice"),
        (b"GET /v1/%ff HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "UTF-8"),
        (b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n" + b"A: b\r\n" * (control.MAX_HEADERS + 1) + b"\r\n", 431, "header fields"),
        (b"GET /" + b"a" * control.MAX_HEAD_BYTES + b" HTTP/1.1\r\nHost: localhost\r\n\r\n", 431, "larger than"),
    ],
)
def test_parse_head_refuses_with_status_and_reason(head: bytes, status: int, words: str) -> None:
    with pytest.raises(HttpError) as err:
        parse_head(head)
    assert err.value.status == status
    assert words in err.value.message


def test_route_names_allowed_methods_and_known_routes() -> None:
    assert route("GET", "/v1/jobs/12") == ("job", {"job_id": "12"})
    assert route("POST", "/v1/jobs/12/cancel") == ("cancel", {"job_id": "12"})
    with pytest.raises(HttpError) as err:
        route("DELETE", "/v1/status")
    assert err.value.status == 405 and err.value.headers == {"Allow": "GET"}
    with pytest.raises(HttpError) as err:
        route("GET", "/v2/status")
    assert err.value.status == 404 and "GET /v1/status" in err.value.message


def test_the_rfc_9112_leniencies_of_h11_are_accepted() -> None:
    # HTTP/1.0 needs no Host; bare LF line ends and a folded header line are read as
    # RFC 9112 (2.2, 5.2) allows a recipient to.
    assert parse_head(b"GET /v1/status HTTP/1.0\r\n\r\n").path == "/v1/status"
    assert parse_head(b"GET /v1/status HTTP/1.1\nHost: x\n\n").headers == {"host": "x"}
    assert parse_head(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n").headers == {"host": "x", "x-a": "b c"}


def test_the_head_limit_is_exact_and_wins_over_other_faults() -> None:
    def head_of(size: int, host: bool = True) -> bytes:
        start = b"GET /v1/status HTTP/1.1\r\n" + (b"Host: x\r\n" if host else b"") + b"X-Pad: "
        return start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"

    assert parse_head(head_of(control.MAX_HEAD_BYTES)).path == "/v1/status"
    for data in (head_of(control.MAX_HEAD_BYTES + 1), head_of(control.MAX_HEAD_BYTES * 3, host=False)):
        with pytest.raises(HttpError) as err:
            control.Exchange().receive(data)  # the whole head in one read
        assert err.value.status == 431 and "larger than 16384 bytes" in err.value.message


def test_an_exchange_reads_one_request_however_the_bytes_arrive() -> None:
    data = post(b'{"image": "/fw.ota"}') + b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"  # a second one, pipelined
    exchange = control.Exchange()
    got = [exchange.receive(data[i : i + 1]) for i in range(len(data))]
    requests = [r for r in got if r is not None]
    assert len(requests) == 1 and requests[0].path == "/v1/push" and requests[0].body == b'{"image": "/fw.ota"}'
    assert got.index(requests[0]) == len(post(b'{"image": "/fw.ota"}')) - 1  # complete at its last byte, not before


def test_an_exchange_tells_a_probe_from_a_truncated_request() -> None:
    probe = control.Exchange()
    assert probe.receive(b"") is None and probe.closed
    for data, words in ((b"GET /v1/sta", "end of the request head"), (post(b"{}")[:-1], "the 2-byte body")):
        exchange = control.Exchange()
        assert exchange.receive(data) is None
        with pytest.raises(HttpError) as err:
            exchange.receive(b"")
        assert err.value.status == 400 and words in err.value.message and not exchange.closed


def test_an_answer_to_head_has_no_body() -> None:
    exchange = control.Exchange()
    assert exchange.receive(b"HEAD /v1/status HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    raw = exchange.respond(405, {"error": "HEAD is not allowed on /v1/status; use GET"}, {"Allow": "GET"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n") and b"Allow: GET" in head and body == b""


def test_render_is_a_complete_json_response() -> None:
    raw = control.render(404, {"error": "nope"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"error": "nope"}


# --------------------------------------------------------------------------- a server over a fake API


def post(body: bytes, path: str = "/v1/push") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.log_gate: asyncio.Event | None = None  # set: log waits for it (a slow handler)
        self.log_entered = asyncio.Event()
        self.device_count = 1

    async def status(self) -> tuple[int, Any]:
        self.calls.append(("status", None))
        return 200, {"daemon": {"version": "test"}, "jobs": [], "holds": [], "schedules": []}

    async def devices(self) -> tuple[int, Any]:
        return 200, {"devices": [{"ieee": "00:11:22:33:44:55:66:77"}] * self.device_count}

    async def push(self, image: str, device: str, activation: str | None, activate_now: bool, stall_timeout: float | None, allow_downgrade: bool = False) -> tuple[int, Any]:
        with contextlib.suppress(OSError):
            os.stat(image)  # as the daemon's open(): ValueError on a NUL or a lone surrogate
        self.calls.append(("push", (image, device, activation, activate_now, stall_timeout)))
        if device == "busy":
            raise HttpError(409, "device busy: cancel job 3 first")
        if device == "boom":
            raise RuntimeError("handler bug")
        return 202, {"job": {"job": "1", "device": device, "state": "pending"}}

    async def activate(self, command: str, device: str | None) -> tuple[int, Any]:
        return 200, {"accepted": False, "command": command, "device": device}

    async def job(self, job_id: str) -> tuple[int, Any]:
        if job_id != "1":
            raise HttpError(404, f"no job {job_id}")
        return 200, {"job": {"job": "1", "state": "held"}}

    async def cancel(self, job_id: str) -> tuple[int, Any]:
        return 200, {"job": {"job": job_id, "state": "cancelled"}}

    async def log(self, device: str | None, since: int | None, limit: int) -> tuple[int, Any]:
        self.calls.append(("log", (device, since, limit)))
        self.log_entered.set()
        if self.log_gate is not None:
            await self.log_gate.wait()
        return 200, {"records": [], "head": 0, "limit": limit}

    async def log_verify(self) -> tuple[int, Any]:
        return 200, {"ok": True, "records": 0}


@pytest.fixture
async def server(tmp_path: Path):
    api = FakeApi()
    srv = ControlServer(api, tmp_path / "run" / "control.sock", request_timeout_s=1.0)
    await srv.start()
    try:
        yield srv, api
    finally:
        await srv.close()


def raw_exchange(path: Path, data: bytes, *, half_close: bool = True, timeout: float = 5.0) -> bytes:
    """Send bytes, then read until the server closes. Resets count as a closed connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    out = b""
    try:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return out


async def test_socket_is_0660_and_its_directory_is_created(server: tuple[ControlServer, FakeApi]) -> None:
    srv, _ = server
    mode = os.stat(srv.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    assert srv.socket_path.parent.is_dir()


async def test_client_calls_every_route(server: tuple[ControlServer, FakeApi]) -> None:
    srv, api = server
    client = Client(srv.socket_path, timeout=5)
    assert (await asyncio.to_thread(client.status))["daemon"]["version"] == "test"
    assert (await asyncio.to_thread(client.devices))[0]["ieee"] == "00:11:22:33:44:55:66:77"
    job = await asyncio.to_thread(lambda: client.push("fw.ota", "00:11:22:33:44:55:66:77", stall_timeout=30))
    assert job["state"] == "pending"
    image, _device, activation, now, stall = api.calls[-1][1]
    assert Path(image).is_absolute() and activation is None and now is False and stall == 30.0
    assert (await asyncio.to_thread(client.job, 1))["state"] == "held"
    assert (await asyncio.to_thread(client.cancel, 1))["state"] == "cancelled"
    assert (await asyncio.to_thread(lambda: client.log(device="0011223344556677", since=3, limit=10)))["limit"] == 10
    assert api.calls[-1] == ("log", ("0011223344556677", 3, 10))
    assert (await asyncio.to_thread(client.log_verify))["ok"] is True
    assert (await asyncio.to_thread(client.activate, "DD00"))["command"] == "DD00"


async def test_client_raises_the_daemons_message(server: tuple[ControlServer, FakeApi]) -> None:
    srv, _ = server
    client = Client(srv.socket_path, timeout=5)
    with pytest.raises(DaemonError, match="device busy: cancel job 3 first") as err:
        await asyncio.to_thread(client.push, "/x", "busy")
    assert err.value.status == 409
    with pytest.raises(DaemonError, match="no job 7"):
        await asyncio.to_thread(client.job, 7)
    # A handler's bug is a 500 that names it, and the server keeps serving.
    with pytest.raises(DaemonError, match="internal error.*RuntimeError: handler bug") as err:
        await asyncio.to_thread(client.push, "/x", "boom")
    assert err.value.status == 500
    assert (await asyncio.to_thread(client.status))["jobs"] == []


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\n{bad}", 400, "not valid JSON"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n[]", 400, "JSON object"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n{}", 415, "application/json"),
        (b'POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}', 400, "'image' is required"),
        (post(b'{"image": "/a", "device": "b", "x": 1}'), 400, "unknown field"),
        (post(b'{"image": "/a", "device": "b", "activate_now": 1}'), 400, "true or false"),
        (post(b'{"image": "/a", "device": "b", "activation": "DD", "activate_now": true}'), 400, "not both"),
        (post(b'{"image": "/a", "device": "b", "stall_timeout": -5}'), 400, "positive number"),
        (post(b'{"command": 5}', "/v1/activate"), 400, "non-empty string"),
        (post(b'{"x": 1}', "/v1/jobs/1/cancel"), 400, "unknown field"),
        (b"GET /v1/nothing HTTP/1.1\r\nHost: localhost\r\n\r\n", 404, "no route"),
        (b"PUT /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n", 405, "not allowed"),
        (b"GET /v1/status?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "unknown query parameter"),
        (b"GET /v1/log?since=abc HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "non-negative integer"),
        (b"GET /v1/log?limit=0 HTTP/1.1\r\nHost: localhost\r\n\r\n", 400, "between"),
        (b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}", 400, "takes no body"),
        (b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n{}", 400, "closed before"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed request head"),  # a TLS hello
    ],
)
async def test_bad_requests_get_a_json_4xx(server: tuple[ControlServer, FakeApi], request_bytes: bytes, status: int, words: str) -> None:
    srv, _ = server
    reply = await asyncio.to_thread(raw_exchange, srv.socket_path, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), reply
    assert words in json.loads(body)["error"]


DEEP = b'{"image": ' + b"[" * 5000 + b"]" * 5000 + b', "device": "0011223344556677"}'


@pytest.mark.parametrize(
    ("request_bytes", "words"),
    [
        (post(DEEP), "nested deeper than 32"),
        (post(b'{"command": ' + b"{\"a\":" * 40 + b"1" + b"}" * 40 + b"}", "/v1/activate"), "nested deeper than 32"),
        (post(b'{"image": "/fw\\u0000.ota", "device": "0011223344556677"}'), "'image' contains a NUL"),
        (post(b'{"image": "/fw\\ud800.ota", "device": "0011223344556677"}'), "'image' contains a lone surrogate (\\ud800)"),
        (post(b'{"image": "/fw.ota", "device": "00\\u0000"}'), "'device' contains a NUL"),
        (post(b'{"image": "/fw.ota", "device": "a", "activation": "\\udfff"}'), "'activation' contains a lone surrogate"),
        (post(b'{"command": "DD\\u0000"}', "/v1/activate"), "'command' contains a NUL"),
        (post(b'{"command": "DD", "device": "\\ud83d"}', "/v1/activate"), "'device' contains a lone surrogate"),
        (post(b'{"\\ud800": 1}', "/v1/activate"), "a field name contains a lone surrogate"),
        (post(b'{"command": ["\\u0000"]}', "/v1/activate"), "'command[0]' contains a NUL"),
        (post(b"{\"x\\u0000\": 1}", "/v1/jobs/1/cancel"), "a field name contains a NUL"),
        (b"GET /v1/log?device=%00 HTTP/1.1\r\nHost: localhost\r\n\r\n", "query parameter 'device' contains a NUL"),
        (b"GET /v1/jobs/%00 HTTP/1.1\r\nHost: localhost\r\n\r\n", "path contains a NUL"),
    ],
    ids=["push-deep", "activate-deep", "push-image-nul", "push-image-surrogate", "push-device-nul", "push-activation-surrogate",
         "activate-command-nul", "activate-device-surrogate", "activate-key-surrogate", "activate-nested-nul", "cancel-key-nul",
         "log-query-nul", "path-nul"],
)
async def test_hostile_strings_and_nesting_get_400_naming_the_field(server: tuple[ControlServer, FakeApi], request_bytes: bytes, words: str, caplog: pytest.LogCaptureFixture) -> None:
    srv, api = server
    reply = await asyncio.to_thread(raw_exchange, srv.socket_path, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", reply
    assert words in json.loads(body)["error"]
    assert not [c for c in api.calls if c[0] == "push"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert control.json_too_deep(b"[" * 33 + b"]" * 33, 32)
    assert not control.json_too_deep(b"[" * 32 + b"]" * 32, 32)
    assert not control.json_too_deep(b'{"a": "[[[[[[\\"[[[[", "b": "\\\\"}', 2)
    assert control.json_too_deep(b'{"a": "\\\\", "b": [[[1]]]}', 2)


async def test_oversized_head_is_refused_or_closed(server: tuple[ControlServer, FakeApi]) -> None:
    srv, api = server
    data = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n" + b"X-Pad: " + b"a" * (control.MAX_HEAD_BYTES * 2) + b"\r\n\r\n"
    reply = await asyncio.to_thread(raw_exchange, srv.socket_path, data)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 431 ")
    assert ("status", None) not in api.calls


async def test_a_silent_client_times_out_with_408(server: tuple[ControlServer, FakeApi]) -> None:
    srv, _ = server
    reply = await asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/sta", half_close=False)
    assert reply.startswith(b"HTTP/1.1 408 ")


async def test_random_garbage_never_kills_the_server(server: tuple[ControlServer, FakeApi]) -> None:
    srv, _ = server
    rng = random.Random(20240617)
    valid = post(b'{"image":"/fw.ota","device":"0011223344556677"}')
    payloads = [b"", b"\r\n\r\n", b"\x00" * 10, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" * 3]
    for _ in range(150):
        shape = rng.randrange(4)
        if shape == 0:
            payloads.append(rng.randbytes(rng.randrange(1, 3000)))
        elif shape == 1:
            payloads.append(valid[: rng.randrange(len(valid))])
        elif shape == 2:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            payloads.append(bytes(mutated))
        else:
            payloads.append(rng.randbytes(rng.randrange(1, 200)) + b"\r\n\r\n" + rng.randbytes(rng.randrange(0, 200)))

    async def one(data: bytes) -> bytes:
        return await asyncio.to_thread(raw_exchange, srv.socket_path, data)

    replies = []
    for i in range(0, len(payloads), 16):  # some at once, as a fuzzer would
        replies += await asyncio.gather(*(one(p) for p in payloads[i : i + 16]))
    for data, reply in zip(payloads, replies):
        if reply:
            status = int(reply.split(b" ", 2)[1])
            assert 200 <= status < 300 or 400 <= status < 500, (data, reply)
            assert json.loads(reply.partition(b"\r\n\r\n")[2]) is not None
    client = Client(srv.socket_path, timeout=5)
    assert (await asyncio.to_thread(client.status))["daemon"]["version"] == "test"


def fuzz_requests(rng: random.Random, count: int) -> list[tuple[bytes, bool]]:
    """(bytes, half_close) for malformed and random requests of every kind."""
    texts = ["", "/fw.ota", "0011223344556677", "DD00", "\u0000", "\ud800", "\udfff", "\\", '"', "é", "\U0001f600", "a" * 300, "[", "{"]

    def text() -> str:
        return "".join(rng.choice(texts) for _ in range(rng.randrange(4)))

    def value(depth: int) -> Any:
        kind = rng.randrange(8 if depth < 40 else 5)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.choice([0, -1, 1e308, 2**70, 3.5])
        if kind == 2:
            return rng.choice([True, False, None])
        if kind in (3, 4):
            return text()
        if kind in (5, 6):
            return {rng.choice(["image", "device", "activation", "activate_now", "stall_timeout", "command", text()]): value(depth + 1) for _ in range(rng.randrange(4))}
        return [value(depth + 1) for _ in range(rng.randrange(3))]

    targets = ["/v1/push", "/v1/activate", "/v1/jobs/1/cancel", "/v1/status", "/v1/log", "/v1/jobs/1", "/v1/log/verify", "/v1/%00", "/v1/x"]
    out: list[tuple[bytes, bool]] = []
    for _ in range(count):
        shape = rng.randrange(8)
        method = rng.choice(["GET", "POST", "PUT", "G\x00T", "get"])
        target = rng.choice(targets)
        if shape == 0:  # garbage request line
            out.append((rng.randbytes(rng.randrange(1, 80)) + b"\r\n\r\n", True))
        elif shape == 1:  # bad headers
            header = rng.choice([b"No colon", b" folded: x", b"A: \x01", b"Transfer-Encoding: chunked", b": empty", b"X-\xff: y", b"Host: a\r\nHost: b"])
            out.append((f"{method} {target} HTTP/1.1\r\nHost: localhost\r\n".encode("latin-1") + header + b"\r\n\r\n", True))
        elif shape == 2:  # bad Content-Length
            cl = rng.choice([b"-1", b"1e3", b"0x10", b"99999999999999", b"", b"\xb97", b"5, 6", b"1\r\nContent-Length: 2"])
            out.append((b"POST /v1/push HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + cl + b"\r\n\r\n{}", True))
        elif shape == 3:  # truncated body, or a body that never comes (408)
            body = json.dumps({"image": "/fw.ota", "device": "0011223344556677"}).encode()
            out.append((post(body, target)[: -rng.randrange(1, len(body))], rng.random() < 0.8))
        elif shape == 4:  # huge head
            out.append((f"GET {target} HTTP/1.1\r\nHost: localhost\r\n".encode() + b"X-Pad: " + b"a" * rng.randrange(10_000, 40_000) + b"\r\n\r\n", True))
        elif shape == 5:  # random query
            query = "&".join(f"{rng.choice(['device', 'since', 'limit', 'x', '%00', '%ff'])}={rng.choice(['1', '-1', '%00', '%ed%a0%80', 'a', '99999999999999999999', ''])}" for _ in range(rng.randrange(1, 4)))
            out.append((f"GET {rng.choice(['/v1/log', '/v1/status'])}?{query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(), True))
        else:  # random JSON, sometimes deeply nested
            body_value = value(0) if rng.random() < 0.7 else {"image": json.loads("[" * 50 + "]" * 50)} if rng.random() < 0.5 else value(0)
            body = json.dumps(body_value).encode()
            if rng.random() < 0.2:
                body = b'{"command": ' + b"[" * rng.randrange(30, 3000) + b"]" * rng.randrange(0, 3000) + b"}"
            out.append((post(body, rng.choice(["/v1/push", "/v1/activate", "/v1/jobs/1/cancel"])), True))
    return out


async def test_fuzzed_requests_get_4xx_and_the_server_keeps_answering(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    srv = ControlServer(FakeApi(), tmp_path / "c.sock", request_timeout_s=1.0)
    await srv.start()
    try:
        requests = fuzz_requests(random.Random(16_3_5), 400)

        async def one(data: bytes, half_close: bool) -> bytes:
            return await asyncio.to_thread(raw_exchange, srv.socket_path, data, half_close=half_close, timeout=30)

        replies: list[bytes] = []
        for i in range(0, len(requests), 20):
            replies += await asyncio.gather(*(one(d, h) for d, h in requests[i : i + 20]))
        seen = set()
        for (data, _), reply in zip(requests, replies):
            if not reply:
                continue  # a closed connection is a fair answer to garbage
            status = status_of(reply)
            seen.add(status)
            error = json.loads(reply.partition(b"\r\n\r\n")[2])
            assert status < 500 or (status == 503 and "retry shortly" in error["error"]), (data[:200], reply)
        assert {400, 408, 431} <= seen, seen
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
        assert (await asyncio.to_thread(Client(srv.socket_path, timeout=30).status))["daemon"]["version"] == "test"
    finally:
        await srv.close()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


async def test_too_many_connections_get_503(tmp_path: Path) -> None:
    srv = ControlServer(FakeApi(), tmp_path / "c.sock", max_connections=2)
    await srv.start()
    idle = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(srv.socket_path))
            idle.append(s)
        async with asyncio.timeout(30):
            while srv._active < 2:  # both accepted (the server has no event for it)
                await asyncio.sleep(0.01)
        reply = await asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 ") and b"retry shortly" in reply, reply
    finally:
        for s in idle:
            s.close()
        await srv.close()


async def test_a_slow_request_without_a_slow_slot_is_cut_off_at_once(tmp_path: Path) -> None:
    srv = ControlServer(FakeApi(), tmp_path / "c.sock", request_timeout_s=30.0, quick_s=0.05, max_slow=1)
    await srv.start()
    idle = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(str(srv.socket_path))
            s.sendall(b"GET /v1/sta")
            idle.append(s)
        recvs = [asyncio.create_task(asyncio.to_thread(s.recv, 65536)) for s in idle]
        # One takes the slow slot (and may take its 30 s); the other is told at once, long before 30 s.
        done, pending = await asyncio.wait(recvs, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1
        cut = done.pop().result()
        assert status_of(cut) == 408 and b"send the whole request at once" in cut, cut
        reply = await asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status_of(reply) == 200, reply
        idle[recvs.index(pending.pop())].shutdown(socket.SHUT_WR)  # the slow one gives up: 400, not a 30 s wait
        async with asyncio.timeout(30):
            await asyncio.gather(*recvs)
    finally:
        for s in idle:
            s.close()
        await srv.close()


async def test_a_client_that_does_not_read_its_answer_costs_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    api = FakeApi()
    api.device_count = 200_000  # megabytes: more than the socket buffers hold
    srv = ControlServer(api, tmp_path / "c.sock", write_timeout_s=0.1)
    await srv.start()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(srv.socket_path))
        s.sendall(b"GET /v1/devices HTTP/1.1\r\nHost: localhost\r\n\r\n")
        async with asyncio.timeout(30):
            while srv.requests_served < 1 or srv._tasks:  # answered (in part) and the connection done with
                await asyncio.sleep(0.01)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
        api.device_count = 1
        assert (await asyncio.to_thread(Client(srv.socket_path, timeout=30).status))["daemon"]["version"] == "test"
    finally:
        s.close()
        await srv.close()


async def test_busy_handlers_get_503_but_status_is_still_answered(tmp_path: Path) -> None:
    api = FakeApi()
    api.log_gate = asyncio.Event()
    srv = ControlServer(api, tmp_path / "c.sock", max_busy=2)
    await srv.start()
    try:
        blocked = [asyncio.create_task(asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/log HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30))]
        async with asyncio.timeout(30):
            await api.log_entered.wait()
            api.log_entered.clear()
            blocked.append(asyncio.create_task(asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/log HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=30)))
            await api.log_entered.wait()
        # Two slow handlers are all max_busy allows: another log waits its turn, status does not.
        reply = await asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/log HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status_of(reply) == 503 and b"retry shortly" in reply, reply
        reply = await asyncio.to_thread(raw_exchange, srv.socket_path, b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status_of(reply) == 200, reply
        api.log_gate.set()
        async with asyncio.timeout(30):
            assert [status_of(r) for r in await asyncio.gather(*blocked)] == [200, 200]
    finally:
        await srv.close()


async def test_slow_clients_get_408_and_status_is_still_answered(tmp_path: Path) -> None:
    """Twelve clients dribbling a request a byte at a time, reconnecting whenever cut
    off, against 8 slow slots: status is answered (never 503), the dribblers get 408."""
    srv = ControlServer(FakeApi(), tmp_path / "c.sock", request_timeout_s=0.5, quick_s=0.1, max_slow=8)
    await srv.start()
    stop = asyncio.Event()
    started = [asyncio.Event() for _ in range(12)]
    replies: list[bytes] = []
    dribble = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 10_000

    async def slow_client(ready: asyncio.Event) -> None:
        while not stop.is_set():
            reader, writer = await asyncio.open_unix_connection(str(srv.socket_path))
            got = b""
            try:
                for i in range(len(dribble)):
                    writer.write(dribble[i : i + 1])
                    ready.set()
                    with contextlib.suppress(TimeoutError):
                        # the pace of a slow client, not a wait for the server
                        got = await asyncio.wait_for(reader.read(65536), 0.02)
                        break
                got += await reader.read()
            except (ConnectionError, BrokenPipeError):
                pass
            finally:
                writer.close()
            replies.append(got)

    clients = [asyncio.create_task(slow_client(e)) for e in started]
    try:
        async with asyncio.timeout(60):
            for e in started:
                await e.wait()
            client = Client(srv.socket_path, timeout=30)
            for _ in range(5):
                assert (await asyncio.to_thread(client.status))["daemon"]["version"] == "test"
            while len([r for r in replies if r]) < 24:  # every dribbler cut off, some twice
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*clients, return_exceptions=True)
        await srv.close()
    answered = [r for r in replies if r]
    assert answered and {status_of(r) for r in answered} == {408}, {r[:40] for r in answered}


# --------------------------------------------------------------------------- socket ownership


async def test_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: what a SIGKILL leaves
    first = ControlServer(FakeApi(), path)
    await first.start()
    try:
        second = ControlServer(FakeApi(), path)
        with pytest.raises(ControlSocketError, match="another han-ota daemon is already listening"):
            await second.start()
        assert (await asyncio.to_thread(Client(path).status))["daemon"]["version"] == "test"
    finally:
        await first.close()
    assert not path.exists()


async def test_a_regular_file_in_the_way_is_never_removed(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await ControlServer(FakeApi(), path).start()
    assert path.read_text() == "precious"


async def test_tcp_listener_only_when_configured(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = ControlServer(FakeApi(), tmp_path / "c.sock", tcp=f"127.0.0.1:{port}")
    await srv.start()
    try:
        assert len(srv._servers) == 2
        client = Client(tcp=("127.0.0.1", port), timeout=5)
        assert (await asyncio.to_thread(client.status))["daemon"]["version"] == "test"
    finally:
        await srv.close()
    plain = ControlServer(FakeApi(), tmp_path / "d.sock")
    await plain.start()
    try:
        assert len(plain._servers) == 1
    finally:
        await plain.close()


def test_parse_host_port() -> None:
    assert control.parse_host_port("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert control.parse_host_port("[::1]:80") == ("::1", 80)
    with pytest.raises(ControlSocketError, match="HOST:PORT"):
        control.parse_host_port("localhost")


async def test_find_daemon_none_when_nothing_listens(tmp_path: Path) -> None:
    cfg = Config(control_socket=tmp_path / "nothing.sock")
    assert await asyncio.to_thread(find_daemon, cfg) is None
    srv = ControlServer(FakeApi(), tmp_path / "c.sock")
    await srv.start()
    try:
        found = await asyncio.to_thread(find_daemon, Config(control_socket=srv.socket_path))
        assert found is not None and found.socket_path == srv.socket_path
    finally:
        await srv.close()
    # The server closed and removed its socket: nothing answers again.
    assert await asyncio.to_thread(find_daemon, Config(control_socket=srv.socket_path)) is None
