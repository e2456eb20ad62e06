"""The daemon's control API: HTTP/1.1 + JSON over a Unix socket (and optionally TCP).

Two halves:

* sans-I/O: an ``Exchange`` takes the bytes of one connection and gives a ``Request``
  or raises ``HttpError`` naming what is wrong, then the bytes of the answer. HTTP/1.1
  itself is h11's (a sans-I/O library); the exchange adds our limits and policy.
  ``route`` maps method and path to a handler name and path arguments. No sockets,
  no asyncio, so every refusal is testable with plain bytes.
* ``ControlServer``: the asyncio listener. One request per connection
  (``Connection: close``): the clients are the ``han-ota`` commands, which make one
  call each, and it keeps the server free of pipelining and keep-alive state.

The server never trusts the peer: the head is capped at ``MAX_HEAD_BYTES`` (431),
the body at ``MAX_BODY_BYTES`` (413) and must come with Content-Length (411),
the whole request (head and body) must arrive within ``REQUEST_TIMEOUT_S`` (408),
at most ``MAX_CONNECTIONS`` are open at once (503), and a handler's exception becomes a 500
with its message -- garbage on the socket costs a 4xx or a closed connection, never
the daemon and never a job.

Slow clients cannot lock the API out: a request not complete within ``QUICK_S``
(ours arrive in one write) needs one of ``MAX_SLOW`` slots to go on arriving, else it
gets 408 there and then, so dribbling clients hold few connections for long; and at
most ``MAX_BUSY`` handlers other than the cheap reads (``CHEAP_HANDLERS``: status and
the like) run at once (503 beyond), so status is answered while the rest is busy.

Routes and their bodies are documented in docs/control-api.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

import h11

from gateway.ota.priority import PriorityError, parse_priority

LOGGER = logging.getLogger("han_ota.control")

API_PREFIX = "/v1"
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 64
MAX_BODY_BYTES = 256 * 1024  # a push or a CS06 command is a few hundred bytes
MAX_JSON_DEPTH = 32  # our bodies are flat; json.loads would recurse (RecursionError) on deep nesting
REQUEST_TIMEOUT_S = 5.0  # head + body, one deadline: a byte-a-second sender cannot keep resetting it
QUICK_S = 0.5  # a request still incomplete after this is slow and needs a MAX_SLOW slot
MAX_SLOW = 16
MAX_CONNECTIONS = 128  # open at once, whatever they do (503 beyond): bounds fds and buffers, not who is served
MAX_BUSY = 16  # handlers outside CHEAP_HANDLERS at once (503 beyond)
WRITE_TIMEOUT_S = 10.0
LINGER_S = 0.5
SOCKET_MODE = 0o660  # owner and group (han-ota): `han-ota` commands run by group members
SOCKET_DIR_MODE = 0o750

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts '¹' and friends
_HEADER_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_JSON_SPECIAL = re.compile(rb'[\[\]{}"\\]')
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}


class HttpError(Exception):
    """A request refused with ``status``; the message goes to the client as {"error": ...}."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# Handlers raise ApiError for refusals the client caused (bad device, busy, ...).
ApiError = HttpError


# --------------------------------------------------------------------------- sans-I/O


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    content_length: int = 0
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        """The body as a JSON object ({} when empty); every string in it is checked by ``check_text``."""
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, f"Content-Type {ctype!r} is not supported; send application/json")
        if json_too_deep(self.body, MAX_JSON_DEPTH):
            raise HttpError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object")
        try:
            value = json.loads(self.body.decode("utf-8"))
        except RecursionError:  # json_too_deep should have caught it; never a 500
            raise HttpError(400, f"the body is nested deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object") from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise HttpError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise HttpError(400, f"the body must be a JSON object, not {type(value).__name__}")
        _check_strings(value, "")
        return value


def json_too_deep(data: bytes, limit: int) -> bool:
    """Whether JSON text nests arrays/objects more than ``limit`` deep, without recursing.

    Linear: only brackets, quotes and backslashes are visited; brackets inside
    strings do not count."""
    depth = 0
    in_string = False
    escaped_at = -1
    for m in _JSON_SPECIAL.finditer(data):
        pos = m.start()
        if pos == escaped_at:
            continue
        c = data[pos]
        if in_string:
            if c == 0x5C:  # backslash: the next byte is escaped
                escaped_at = pos + 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif c in (0x5D, 0x7D):
            depth -= 1
    return False


def check_text(value: str, name: str) -> None:
    """Refuse a NUL or a lone surrogate (JSON's "\\u0000", "\\ud800"): neither is a valid
    path, address or hex command, and os / sqlite / logging raise on them far from here."""
    if "\x00" in value:
        raise HttpError(400, f"{name} contains a NUL character (\\u0000); remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HttpError(400, f"{name} contains a lone surrogate ({ascii(value[exc.start])[1:-1]}), which is not Unicode text; send valid UTF-8") from None


def _check_strings(value: Any, where: str) -> None:
    if isinstance(value, str):
        check_text(value, repr(where))
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a field name in {where!r}" if where else "a field name")
            _check_strings(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_strings(item, f"{where}[{i}]")


class Exchange:
    """One request and its answer on one connection: bytes in, a ``Request`` out, and
    the answer's bytes back, over an h11 server connection (sans-I/O).

    h11 does the HTTP/1.1 framing (request line, header syntax, Content-Length, the
    Host rule, end of file mid-message); on top of it this class holds the daemon's
    own limits and policy: the head's size and field count, HTTP/1.0 and 1.1 only, an
    absolute path, no control characters in header values, Content-Length bodies only,
    percent-decoding of the path and the query. Every refusal is an ``HttpError``.

    One request per connection (see ``ControlServer``): the answer says ``Connection: close``
    and whatever follows the first request (pipelined requests) is never read.
    """

    def __init__(self, *, max_head: int = MAX_HEAD_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max_head = max_head
        self._max_body = max_body
        self._fed = 0  # bytes given to h11
        self._method: bytes | None = None  # h11 has the head (our checks may still refuse it)
        self._body = bytearray()
        self.head: Request | None = None  # the head, once it has passed our checks
        self.closed = False  # the peer closed without sending a byte (find_daemon's probe)

    def receive(self, data: bytes) -> Request | None:
        """Feed what the socket gave (``b""`` at end of file): the complete request once
        head and body are in, else None (more is needed, or ``closed``); HttpError when
        the request is refused."""
        if not data:
            request = self._feed(b"")
            if request is None and not self.closed:  # nothing more can come, whatever h11 waits for
                raise HttpError(400, "the connection closed before the end of the request")
            return request
        while data:
            if self._method is None:
                # h11 checks its buffer's size only while a head is incomplete, so a
                # large head in one read would be parsed: it never sees more than one
                # byte past the limit before the head has ended (431, whatever else is wrong).
                room = max(self._max_head + 1 - self._fed, 1)
                chunk, data = data[:room], data[room:]
            else:
                chunk, data = data, b""
            request = self._feed(chunk)
            if request is not None or self.closed:
                return request
        return None

    def _feed(self, chunk: bytes) -> Request | None:
        self._fed += len(chunk)
        self._conn.receive_data(chunk)
        try:
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return None
                if isinstance(event, h11.Request):
                    self._method = event.method
                    self.head = self._check_head(event)
                elif isinstance(event, h11.Data):
                    self._body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert self.head is not None  # h11 sends Request before EndOfMessage
                    return replace(self.head, body=bytes(self._body))
                elif isinstance(event, h11.ConnectionClosed):
                    self.closed = True
                    return None
        except h11.RemoteProtocolError as exc:
            raise self._refusal(exc, at_eof=not chunk) from None

    def _refusal(self, exc: h11.RemoteProtocolError, *, at_eof: bool) -> HttpError:
        if exc.error_status_hint == 431:  # h11's only 431: the head outgrew max_incomplete_event_size
            return HttpError(431, f"request head is larger than {self._max_head} bytes")
        if at_eof:
            if self.head is None:
                return HttpError(400, "the connection closed before the end of the request head")
            return HttpError(400, f"the connection closed before the {self.head.content_length}-byte body")
        if exc.error_status_hint == 501:  # h11's only 501: a transfer coding other than chunked
            return HttpError(411, "Transfer-Encoding is not supported; send the body with Content-Length")
        text = str(exc)
        if len(text) > 120:
            text = text[:117] + "..."
        return HttpError(400, f"malformed request head ({text}); expected 'METHOD /path HTTP/1.1', header lines and a blank line")

    def _check_head(self, event: h11.Request) -> Request:
        head_bytes = self._fed - len(self._conn.trailing_data[0])
        if head_bytes > self._max_head:
            raise HttpError(431, f"request head is larger than {self._max_head} bytes")
        if event.http_version not in (b"1.1", b"1.0"):
            # 400 rather than 505: a garbage request earns a 4xx, whatever part of it is garbage.
            raise HttpError(400, f"HTTP/{event.http_version.decode('ascii')} is not supported; use HTTP/1.1")
        if not event.target.startswith(b"/"):  # h11 also passes absolute-form, authority-form and '*'
            raise HttpError(400, "the request target must be an absolute path such as /v1/status")
        if len(event.headers) > MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} header fields")
        headers: dict[str, str] = {}
        for name_b, value_b in event.headers:
            key = name_b.decode("ascii")  # h11 gives token names, lower-cased
            if not _HEADER_VALUE.fullmatch(value_b):  # h11 lets most control characters through
                raise HttpError(400, f"control characters in header {key!r}")
            text = value_b.decode("latin-1")
            if key in headers:
                # h11 refuses a second Host and folds repeated Content-Lengths into one itself.
                if key == "content-type":
                    if headers[key] != text:
                        raise HttpError(400, f"conflicting {key} headers")
                    continue
                headers[key] = headers[key] + ", " + text
            else:
                headers[key] = text
        if "transfer-encoding" in headers:
            raise HttpError(411, "Transfer-Encoding is not supported; send the body with Content-Length")
        length = int(headers.get("content-length", "0"))  # h11 has checked it is decimal digits
        if length > self._max_body:
            raise HttpError(413, f"the body is {length} bytes; at most {self._max_body} are accepted")
        target = event.target.decode("ascii")  # h11: visible ASCII only
        raw_path, _, raw_query = target.partition("?")
        try:
            path = unquote(raw_path, errors="strict") if "%" in raw_path else raw_path
        except UnicodeDecodeError:
            raise HttpError(400, "the path is not valid percent-encoded UTF-8") from None
        try:
            pairs = parse_qsl(raw_query, keep_blank_values=True, strict_parsing=bool(raw_query), max_num_fields=20, errors="strict")
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"malformed query string: {exc}") from None
        if "\x00" in path:
            raise HttpError(400, "the path contains a NUL character (%00); remove it")
        query: dict[str, str] = {}
        for qname, qvalue in pairs:
            check_text(qname, "a query parameter name")
            check_text(qvalue, f"query parameter {qname!r}")
            if qname in query:
                raise HttpError(400, f"query parameter {qname!r} given twice")
            query[qname] = qvalue
        return Request(event.method.decode("ascii"), target, path, query, headers, length)

    def respond(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> bytes:
        """The complete answer: a JSON body and ``Connection: close``."""
        payload = (json.dumps(body, separators=(",", ":"), default=str) + "\n").encode("utf-8")
        fields = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
            *(headers or {}).items(),
        ]
        out = self._conn.send(h11.Response(status_code=status, reason=_REASONS.get(status, "Unknown"), headers=fields))
        if self._method != b"HEAD":  # h11 frames an answer to HEAD without a body, as RFC 9110 says
            out += self._conn.send(h11.Data(data=payload))
        return out + self._conn.send(h11.EndOfMessage())


def parse_head(head: bytes) -> Request:
    """The request in ``head`` as far as its head: a body, if the head announces one,
    is not waited for (``content_length`` says how long it is)."""
    exchange = Exchange()
    request = exchange.receive(head)
    if request is not None:
        return request
    if exchange.head is not None:
        return exchange.head
    raise HttpError(400, "the request head is incomplete; it ends with a blank line")


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: str
    template: str


def _route(method: str, path: str, handler: str) -> Route:
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_.:-]{1,64})", path) + "$"
    return Route(method, re.compile(regex), handler, path)


ROUTES: tuple[Route, ...] = (
    _route("GET", "/v1/status", "status"),
    _route("GET", "/v1/devices", "devices"),
    _route("POST", "/v1/push", "push"),
    _route("POST", "/v1/activate", "activate"),
    _route("POST", "/v1/gbcs/send", "gbcs_send"),
    _route("GET", "/v1/jobs/{job_id}", "job"),
    _route("POST", "/v1/jobs/{job_id}/cancel", "cancel"),
    _route("GET", "/v1/log", "log"),
    _route("GET", "/v1/log/verify", "log_verify"),
)

# GBCS messages (issue 13): GET /v1/messages?device=IEEE&after=ID&limit=N, the newest
# `limit` kept after message `after`, oldest first (docs/control-api.md).
ROUTES = ROUTES + (_route("GET", "/v1/messages", "messages"),)
MESSAGES_QUERY = frozenset({"device", "after", "limit"})
MESSAGES_LIMIT_DEFAULT = 1000
MESSAGES_LIMIT_MAX = 10000

# Handlers that answer from memory at once: not counted against MAX_BUSY.
CHEAP_HANDLERS = frozenset({"status", "devices", "job"})

# Query parameters each route accepts (anything else is refused, naming these).
QUERY_PARAMS: dict[str, frozenset[str]] = {"log": frozenset({"device", "since", "limit"}), "messages": MESSAGES_QUERY}


def route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """(handler name, path arguments), or HttpError 404 / 405 (with Allow)."""
    allowed = []
    for r in ROUTES:
        m = r.pattern.match(path)
        if m is None:
            continue
        if r.method == method:
            return r.handler, m.groupdict()
        allowed.append(r.method)
    if allowed:
        allow = ", ".join(sorted(set(allowed)))
        raise HttpError(405, f"{method} is not allowed on {path}; use {allow}", headers={"Allow": allow})
    known = ", ".join(f"{r.method} {r.template}" for r in ROUTES)
    raise HttpError(404, f"no route {path}; known routes: {known}")


def is_cheap(request: Request) -> bool:
    """Whether the request is a cheap read (or refused without calling the API at all)."""
    try:
        handler, _ = route(request.method, request.path)
    except HttpError:
        return True
    return handler in CHEAP_HANDLERS


def render(status: int, body: Any, headers: Mapping[str, str] | None = None) -> bytes:
    """A complete HTTP/1.1 response with a JSON body and Connection: close, as an
    exchange that has read no request answers (the server's 503 at accept is one)."""
    return Exchange().respond(status, body, headers)


# --------------------------------------------------------------------------- body checks


def require_str(body: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if optional:
            return None
        raise HttpError(400, f"{key!r} is required (a string)")
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"{key!r} must be a non-empty string, not {value!r}")
    return value


def require_bool(body: Mapping[str, Any], key: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise HttpError(400, f"{key!r} must be true or false, not {value!r}")
    return value


def require_seconds(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e7:
        raise HttpError(400, f"{key!r} must be a positive number of seconds or null, not {value!r}")
    return float(value)


def no_unknown_keys(body: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


# --------------------------------------------------------------------------- the API


class ControlApi(Protocol):
    """What the server calls; the daemon's handlers implement it
    (``han_ota.daemon.handlers.ControlHandlers``). Each returns (status, JSON body)
    and raises HttpError for refusals."""

    async def status(self) -> tuple[int, Any]: ...
    async def devices(self) -> tuple[int, Any]: ...
    async def push(self, image: str, device: str, activation: str | None, activate_now: bool, stall_timeout: float | None, allow_downgrade: bool = False, priority: int | None = None, replace: bool = False) -> tuple[int, Any]: ...
    async def activate(self, command: str, device: str | None) -> tuple[int, Any]: ...
    async def gbcs_send(self, command: str, device: str | None, timeout: float | None) -> tuple[int, Any]: ...
    async def job(self, job_id: str) -> tuple[int, Any]: ...
    async def cancel(self, job_id: str) -> tuple[int, Any]: ...
    async def log(self, device: str | None, since: int | None, limit: int) -> tuple[int, Any]: ...
    async def log_verify(self) -> tuple[int, Any]: ...
    async def messages(self, device: str | None, after: int | None, limit: int) -> tuple[int, Any]: ...


LOG_LIMIT_DEFAULT = 1000
LOG_LIMIT_MAX = 10000


async def dispatch(api: ControlApi, request: Request) -> tuple[int, Any]:
    """Check the request against its route and call the API."""
    handler, args = route(request.method, request.path)
    allowed_query = QUERY_PARAMS.get(handler, frozenset())
    unknown = sorted(set(request.query) - allowed_query)
    if unknown:
        allowed = ", ".join(sorted(allowed_query)) or "none"
        raise HttpError(400, f"unknown query parameter(s) {', '.join(unknown)}; allowed here: {allowed}")
    if request.method == "GET" and request.body:
        raise HttpError(400, "a GET request takes no body")
    if handler == "status":
        return await api.status()
    if handler == "devices":
        return await api.devices()
    if handler == "job":
        return await api.job(args["job_id"])
    if handler == "cancel":
        body = request.json()
        no_unknown_keys(body, set())
        return await api.cancel(args["job_id"])
    if handler == "log_verify":
        return await api.log_verify()
    if handler == "log":
        since = _query_int(request.query, "since", 0, None)
        limit = _query_int(request.query, "limit", 1, LOG_LIMIT_MAX)
        device = request.query.get("device") or None
        return await api.log(device, since, LOG_LIMIT_DEFAULT if limit is None else limit)
    if handler == "messages":
        limit = _query_int(request.query, "limit", 1, MESSAGES_LIMIT_MAX)
        after = _query_int(request.query, "after", 0, None)
        return await api.messages(request.query.get("device") or None, after, MESSAGES_LIMIT_DEFAULT if limit is None else limit)
    body = request.json()
    if handler == "push":
        no_unknown_keys(body, {"image", "device", "activation", "activate_now", "stall_timeout", "allow_downgrade", "priority", "replace"})
        image = require_str(body, "image")
        device = require_str(body, "device")
        activation = require_str(body, "activation", optional=True)
        activate_now = require_bool(body, "activate_now")
        if activation is not None and activate_now:
            raise HttpError(400, "give either 'activation' (a signed CS06 command) or 'activate_now', not both")
        assert image is not None and device is not None
        # Passed only when given, as the other optional keys are to older ControlApi implementations.
        extra: dict[str, Any] = {}
        if body.get("priority") is not None:
            try:
                extra["priority"] = parse_priority(body["priority"], "'priority'")
            except PriorityError as exc:
                raise HttpError(400, str(exc)) from None
        if require_bool(body, "replace"):
            extra["replace"] = True
        return await api.push(image, device, activation, activate_now, require_seconds(body, "stall_timeout"), require_bool(body, "allow_downgrade"), **extra)
    if handler == "activate":
        no_unknown_keys(body, {"command", "device"})
        command = require_str(body, "command")
        assert command is not None
        return await api.activate(command, require_str(body, "device", optional=True))
    if handler == "gbcs_send":
        no_unknown_keys(body, {"command", "device", "timeout"})
        command = require_str(body, "command")
        assert command is not None
        return await api.gbcs_send(command, require_str(body, "device", optional=True), require_seconds(body, "timeout"))
    raise HttpError(404, f"no handler for {request.path}")  # pragma: no cover - ROUTES and this agree


def _query_int(query: Mapping[str, str], key: str, lo: int, hi: int | None) -> int | None:
    raw = query.get(key)
    if raw is None or raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or len(raw) > 19:
        raise HttpError(400, f"query parameter {key}={raw!r} must be a non-negative integer")
    value = int(raw)
    if value < lo or (hi is not None and value > hi):
        raise HttpError(400, f"query parameter {key}={value} must be between {lo} and {hi if hi is not None else 'any'}")
    return value


# --------------------------------------------------------------------------- the server


class ControlSocketError(RuntimeError):
    """The control socket cannot be set up; the message names the path and the fix."""


@dataclass
class ControlServer:
    api: ControlApi
    socket_path: Path
    tcp: str | None = None
    request_timeout_s: float = REQUEST_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS
    quick_s: float = QUICK_S
    max_slow: int = MAX_SLOW
    max_busy: int = MAX_BUSY
    write_timeout_s: float = WRITE_TIMEOUT_S
    _servers: list[asyncio.AbstractServer] = field(default_factory=list)
    _active: int = 0
    _slow: int = 0  # requests arriving for longer than quick_s
    _busy: int = 0  # requests in a handler outside CHEAP_HANDLERS
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _accepting: bool = True
    requests_served: int = 0
    requests_refused: int = 0
    _inode: int | None = None

    async def start(self) -> None:
        """Listen on the Unix socket (and the TCP address, if configured)."""
        _prepare_socket_path(self.socket_path)
        old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider access
        try:
            server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        except OSError as exc:
            raise ControlSocketError(f"cannot listen on control socket {self.socket_path}: {exc.strerror}; check the directory's owner and mode") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, SOCKET_MODE)
        self._inode = os.lstat(self.socket_path).st_ino
        self._servers.append(server)
        if self.tcp:
            host, port = parse_host_port(self.tcp)
            try:
                if not ipaddress.ip_address(host).is_loopback:
                    LOGGER.warning("control_tcp %s is not a loopback address: anyone who can reach it controls the gateway", self.tcp)
            except ValueError:
                LOGGER.warning("control_tcp host %r is a name, not a loopback address; make sure it resolves to 127.0.0.1", host)
            try:
                self._servers.append(await asyncio.start_server(self._serve, host, port))
            except OSError as exc:
                await self.close()
                raise ControlSocketError(f"cannot listen on control_tcp {self.tcp}: {exc.strerror}") from None
        LOGGER.info("control API listening on %s%s", self.socket_path, f" and tcp {self.tcp}" if self.tcp else "")

    def stop_accepting(self) -> None:
        """Refuse new connections (graceful stop); requests in progress finish."""
        self._accepting = False
        for server in self._servers:
            server.close()

    async def close(self) -> None:
        self.stop_accepting()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        # Only our own socket: a server that never bound (another daemon owns the
        # path) or whose file was replaced must leave the path alone.
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.socket_path)
            if self._inode is not None and stat.S_ISSOCK(st.st_mode) and st.st_ino == self._inode:
                os.unlink(self.socket_path)
        self._inode = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._active += 1
        exchange = Exchange()
        try:
            if not self._accepting:
                await self._reply(writer, exchange, 503, {"error": "the daemon is stopping"})
            elif self._active > self.max_connections:
                await self._reply(writer, exchange, 503, {"error": f"more than {self.max_connections} connections at once; retry shortly"})
            else:
                await self._one_request(reader, writer, exchange)
        except ConnectionError:
            pass
        except Exception:  # the last line of defence: log, never crash the daemon
            LOGGER.exception("control connection failed")
        finally:
            self._active -= 1
            await self._linger(reader)
            with contextlib.suppress(Exception):
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _linger(self, reader: asyncio.StreamReader) -> None:
        """Read (and drop) what the peer still sends, briefly, before closing: closing
        with unread bytes makes the kernel send RST, and the peer would lose our answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        dropped = 0
        with contextlib.suppress(Exception):
            while dropped < MAX_BODY_BYTES and (left := deadline - loop.time()) > 0:
                chunk = await asyncio.wait_for(reader.read(65536), left)
                if not chunk:
                    break
                dropped += len(chunk)

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exchange: Exchange) -> None:
        try:
            request = await self._read_request(reader, exchange)
            if request is None:
                return  # a connect-and-close probe (find_daemon): nothing to answer
            cheap = is_cheap(request)
            if not cheap:
                if self._busy >= self.max_busy:
                    raise HttpError(503, f"{self._busy} requests are in progress; retry shortly (status still answers)")
                self._busy += 1
            try:
                try:
                    status, body_out = await dispatch(self.api, request)
                except HttpError:
                    raise
                except Exception as exc:
                    LOGGER.exception("control API %s %s failed", request.method, request.path)
                    raise HttpError(500, f"internal error in {request.method} {request.path}: {type(exc).__name__}: {exc}") from None
                self.requests_served += 1
                await self._reply(writer, exchange, status, body_out)
            finally:
                if not cheap:
                    self._busy -= 1
        except HttpError as exc:
            self.requests_refused += 1
            LOGGER.info("control API refused a request: %d %s", exc.status, exc.message)
            await self._reply(writer, exchange, exc.status, {"error": exc.message}, exc.headers)

    async def _read_request(self, reader: asyncio.StreamReader, exchange: Exchange) -> Request | None:
        """Head and body under one deadline; still arriving after ``quick_s``, the request
        takes a slow slot or is cut off (408) if there is none."""
        loop = asyncio.get_running_loop()
        slow = cut = False

        def went_slow() -> None:
            nonlocal slow, cut
            if self._slow < self.max_slow:
                slow = True
                self._slow += 1
            else:
                cut = True
                deadline.reschedule(loop.time())

        timer: asyncio.TimerHandle | None = None
        try:
            async with asyncio.timeout(self.request_timeout_s) as deadline:
                timer = loop.call_later(self.quick_s, went_slow)
                while True:
                    request = exchange.receive(await reader.read(65536))
                    if request is not None or exchange.closed:
                        return request  # None: a connect-and-close probe
        except TimeoutError:
            if cut:
                raise HttpError(
                    408,
                    f"the request was not complete within {self.quick_s:g} s and {self.max_slow} slow requests are "
                    "already arriving; send the whole request at once",
                ) from None
            raise HttpError(408, f"the request (head and body) did not arrive within {self.request_timeout_s:g} s") from None
        finally:
            if timer is not None:
                timer.cancel()
            if slow:
                self._slow -= 1

    async def _reply(self, writer: asyncio.StreamWriter, exchange: Exchange, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        writer.write(exchange.respond(status, body, headers))
        with contextlib.suppress(ConnectionError, TimeoutError):  # a peer that does not read loses its answer, nothing else
            await asyncio.wait_for(writer.drain(), self.write_timeout_s)
            if writer.can_write_eof():
                writer.write_eof()


def parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ControlSocketError(f"control_tcp = {text!r}: expected HOST:PORT such as 127.0.0.1:8765")
    return host, int(port)


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's directory if we may; remove a stale socket, never a live one."""
    parent = path.parent
    if not parent.is_dir():
        try:
            parent.mkdir(mode=SOCKET_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(
                f"control socket directory {parent} does not exist and cannot be created ({exc.strerror}); create it "
                "(mkdir -p, owned by the service user) or run under systemd with RuntimeDirectory=han-ota"
            ) from None
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(f"{path} exists and is not a socket; move it away or set another control_socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        LOGGER.info("removing stale control socket %s (nothing answers on it)", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        raise ControlSocketError(f"cannot probe control socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise ControlSocketError(
        f"another han-ota daemon is already listening on {path}; stop it first (systemctl stop han-ota) "
        "or give this one another control_socket"
    )


__all__ = [
    "API_PREFIX",
    "ApiError",
    "ControlApi",
    "ControlServer",
    "ControlSocketError",
    "Exchange",
    "HttpError",
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_JSON_DEPTH",
    "Request",
    "ROUTES",
    "dispatch",
    "parse_head",
    "parse_host_port",
    "render",
    "route",
]
