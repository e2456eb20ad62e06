"""The Key Establishment cluster's (0x0800) ZCL payloads, as typed frames.

Smart Energy key establishment (CBKE) runs over four commands each way, with the same
ids in both directions (client = the initiating device, server = the hub)::

    0x00  Initiate Key Establishment Request / Response
          suite (uint16, one KeyEstablishmentSuite bit) | EphemeralDataGenerateTime (uint8)
          | ConfirmKeyGenerateTime (uint8) | identity (the implicit certificate: 48 / 74)
    0x01  Ephemeral Data Request / Response       the compressed ephemeral point (22 / 37)
    0x02  Confirm Key Data Request / Response     MACU / MACV (16)
    0x03  Terminate Key Establishment             status (uint8) | wait time (uint8)
                                                  | suite (uint16)

zigpy 2.4 declares the cluster (``KeyEstablishment``, 0x0800) without attributes or
commands, so the layouts above follow the Smart Energy specification's cluster
definition. ZCL integers are little-endian; certificates, points and MACs are raw byte
strings, most significant byte first, exactly as the crypto (``gateway.se``) uses them.

The length of a variable field depends on the suite: an Initiate carries its own suite
in its first field, every later frame takes the suite of the exchange (passed in).
Parsing refuses short and long payloads alike with ``KeFrameError``, naming the command,
the field and its byte offset in the payload; constructors check only what the wire can
carry (integer ranges), so that a test or a simulated device can build a frame the
parser will refuse.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from gateway.se.errors import SeError
from gateway.se.suites import SUITES, Suite

__all__ = [
    "CLUSTER_ID",
    "KEY_ESTABLISHMENT_SUITE_ATTRIBUTE",
    "MAC_LENGTH",
    "ClientCommand",
    "ClientFrame",
    "ConfirmKeyDataRequest",
    "ConfirmKeyDataResponse",
    "EphemeralDataRequest",
    "EphemeralDataResponse",
    "InitiateKeyEstablishmentRequest",
    "InitiateKeyEstablishmentResponse",
    "KeFrameError",
    "KeStatus",
    "KeUnknownCommand",
    "KeUnknownSuite",
    "ServerCommand",
    "ServerFrame",
    "TerminateKeyEstablishment",
    "parse_client_frame",
    "parse_server_frame",
    "suite_bitmap",
    "suite_for_bit",
    "suites_in_bitmap",
]

CLUSTER_ID = 0x0800
#: KeyEstablishmentSuite (bitmap16), on both the client and the server side.
KEY_ESTABLISHMENT_SUITE_ATTRIBUTE = 0x0000
#: MACU and MACV: HMAC-AES-MMO, one AES block.
MAC_LENGTH = 16


class ClientCommand(enum.IntEnum):
    """Commands the device (client) sends; the hub receives them."""

    INITIATE_KEY_ESTABLISHMENT_REQUEST = 0x00
    EPHEMERAL_DATA_REQUEST = 0x01
    CONFIRM_KEY_DATA_REQUEST = 0x02
    TERMINATE_KEY_ESTABLISHMENT = 0x03


class ServerCommand(enum.IntEnum):
    """Commands the hub (server) sends."""

    INITIATE_KEY_ESTABLISHMENT_RESPONSE = 0x00
    EPHEMERAL_DATA_RESPONSE = 0x01
    CONFIRM_KEY_DATA_RESPONSE = 0x02
    TERMINATE_KEY_ESTABLISHMENT = 0x03


class KeStatus(enum.IntEnum):
    """Terminate Key Establishment status codes."""

    UNKNOWN_ISSUER = 0x01
    BAD_KEY_CONFIRM = 0x02
    BAD_MESSAGE = 0x03
    NO_RESOURCES = 0x04
    UNSUPPORTED_SUITE = 0x05
    INVALID_CERTIFICATE = 0x06


# --------------------------------------------------------------------------- errors


class KeFrameError(SeError):
    """A Key Establishment payload that is not one: names command, field and offset."""

    def __init__(self, command: str, field: str, offset: int, reason: str) -> None:
        self.command = command
        self.field = field
        self.offset = offset
        self.reason = reason
        super().__init__(f"{command}: {field} at offset {offset}: {reason}")


class KeUnknownSuite(KeFrameError):
    """An Initiate naming no single suite this code knows: its identity cannot be
    sized. The hub answers UNSUPPORTED_SUITE, not BAD_MESSAGE."""

    def __init__(self, command: str, suite: int) -> None:
        super().__init__(command, "suite", 0, f"0x{suite:04X} is not one known key establishment suite")
        self.suite = suite


class KeUnknownCommand(KeFrameError):
    """A command id the cluster does not define (ZCL: UNSUP_CLUSTER_COMMAND)."""

    def __init__(self, direction: str, command_id: int) -> None:
        super().__init__(f"{direction} command 0x{command_id:02X}", "command id", 0, "not a Key Establishment command")
        self.command_id = command_id


# --------------------------------------------------------------------------- suites


def suite_for_bit(value: int) -> Suite | None:
    """The suite whose KeyEstablishmentSuite bit is exactly ``value``, or None."""
    for candidate in SUITES:
        if candidate.bit == value:
            return candidate
    return None


def suite_bitmap(suites: Iterable[Suite]) -> int:
    """The KeyEstablishmentSuite attribute value offering ``suites``."""
    value = 0
    for each in suites:
        value |= each.bit
    return value


def suites_in_bitmap(value: int) -> tuple[Suite, ...]:
    """The known suites a KeyEstablishmentSuite value offers, strongest first."""
    return tuple(each for each in SUITES if value & each.bit)


# --------------------------------------------------------------------------- reading

# The shared parsers serve a request and its response alike.
_I = TypeVar("_I", bound="_Initiate")
_E = TypeVar("_E", bound="_Ephemeral")
_C = TypeVar("_C", bound="_Confirm")

_U16 = struct.Struct("<H")
_INITIATE_HEAD = struct.Struct("<HBB")
_TERMINATE = struct.Struct("<BBH")


def _layout(command: str, payload: bytes, fields: tuple[tuple[str, int], ...]) -> None:
    """Refuse ``payload`` unless it is exactly ``fields`` (name, size) end to end."""
    offset = 0
    for name, size in fields:
        left = len(payload) - offset
        if left < size:
            unit = "byte" if size == 1 else "bytes"
            raise KeFrameError(command, name, offset, f"truncated: needs {size} {unit}, {max(left, 0)} left")
        offset += size
    if len(payload) > offset:
        extra = len(payload) - offset
        raise KeFrameError(command, "end", offset, f"{extra} byte{'s' if extra != 1 else ''} after the last field")


def _check_uint(command: str, field: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{command}: {field} must be a uint{bits}, not {value!r}")


def _check_bytes(command: str, field: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise ValueError(f"{command}: {field} must be bytes, not {type(value).__name__}")


def _need_suite(command: str, field: str, suite: Suite | None) -> Suite:
    if suite is None:
        raise KeFrameError(command, field, 0, "its length depends on the exchange's suite, and none was given")
    return suite


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class _Initiate:
    """The layout Initiate Key Establishment Request and Response share."""

    name: ClassVar[str] = "Initiate Key Establishment"
    command_id: ClassVar[int] = 0x00

    #: The KeyEstablishmentSuite bit of the suite asked for (request) or granted (response).
    suite: int
    #: Seconds the sender needs to produce its ephemeral data (the peer waits that long).
    ephemeral_data_generate_time: int
    #: Seconds the sender needs to compute and confirm the key.
    confirm_key_generate_time: int
    #: The sender's implicit certificate (48 bytes for suite 1, 74 for suite 2).
    identity: bytes

    def __post_init__(self) -> None:
        _check_uint(self.name, "suite", self.suite, 16)
        _check_uint(self.name, "ephemeral_data_generate_time", self.ephemeral_data_generate_time, 8)
        _check_uint(self.name, "confirm_key_generate_time", self.confirm_key_generate_time, 8)
        _check_bytes(self.name, "identity", self.identity)

    def to_bytes(self) -> bytes:
        return _INITIATE_HEAD.pack(self.suite, self.ephemeral_data_generate_time, self.confirm_key_generate_time) + self.identity

    @classmethod
    def peek_suite(cls, payload: bytes) -> int:
        """The suite field alone (the hub checks it before the rest)."""
        _layout(cls.name, payload[: _U16.size], (("suite", _U16.size),))
        value: int = _U16.unpack_from(payload)[0]
        return value


def _parse_initiate(cls: type[_I], payload: bytes) -> _I:
    value = cls.peek_suite(payload)
    known = suite_for_bit(value)
    if known is None:
        raise KeUnknownSuite(cls.name, value)
    _layout(
        cls.name,
        payload,
        (("suite", 2), ("ephemeral_data_generate_time", 1), ("confirm_key_generate_time", 1), ("identity", known.certificate_length)),
    )
    suite, eph_time, confirm_time = _INITIATE_HEAD.unpack_from(payload)
    return cls(suite, eph_time, confirm_time, bytes(payload[_INITIATE_HEAD.size :]))


@dataclass(frozen=True, slots=True)
class InitiateKeyEstablishmentRequest(_Initiate):
    """Client 0x00: the device starts an exchange with its certificate."""

    name: ClassVar[str] = "Initiate Key Establishment Request"
    command_id: ClassVar[int] = ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST

    @classmethod
    def from_bytes(cls, payload: bytes) -> InitiateKeyEstablishmentRequest:
        return _parse_initiate(cls, payload)


@dataclass(frozen=True, slots=True)
class InitiateKeyEstablishmentResponse(_Initiate):
    """Server 0x00: the hub accepts, with its own certificate and times."""

    name: ClassVar[str] = "Initiate Key Establishment Response"
    command_id: ClassVar[int] = ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE

    @classmethod
    def from_bytes(cls, payload: bytes) -> InitiateKeyEstablishmentResponse:
        return _parse_initiate(cls, payload)


@dataclass(frozen=True, slots=True)
class _Ephemeral:
    name: ClassVar[str] = "Ephemeral Data"
    command_id: ClassVar[int] = 0x01

    #: The sender's compressed ephemeral public key (22 bytes suite 1, 37 suite 2).
    data: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.name, "data", self.data)

    def to_bytes(self) -> bytes:
        return self.data


def _parse_ephemeral(cls: type[_E], payload: bytes, suite: Suite) -> _E:
    _layout(cls.name, payload, (("data", suite.point_length),))
    return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class EphemeralDataRequest(_Ephemeral):
    """Client 0x01: the device's ephemeral public key QEU."""

    name: ClassVar[str] = "Ephemeral Data Request"
    command_id: ClassVar[int] = ClientCommand.EPHEMERAL_DATA_REQUEST

    @classmethod
    def from_bytes(cls, payload: bytes, suite: Suite) -> EphemeralDataRequest:
        return _parse_ephemeral(cls, payload, suite)


@dataclass(frozen=True, slots=True)
class EphemeralDataResponse(_Ephemeral):
    """Server 0x01: the hub's ephemeral public key QEV."""

    name: ClassVar[str] = "Ephemeral Data Response"
    command_id: ClassVar[int] = ServerCommand.EPHEMERAL_DATA_RESPONSE

    @classmethod
    def from_bytes(cls, payload: bytes, suite: Suite) -> EphemeralDataResponse:
        return _parse_ephemeral(cls, payload, suite)


@dataclass(frozen=True, slots=True)
class _Confirm:
    name: ClassVar[str] = "Confirm Key Data"
    command_id: ClassVar[int] = 0x02

    #: MACU (request) or MACV (response).
    mac: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.name, "mac", self.mac)

    def to_bytes(self) -> bytes:
        return self.mac


def _parse_confirm(cls: type[_C], payload: bytes) -> _C:
    _layout(cls.name, payload, (("mac", MAC_LENGTH),))
    return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class ConfirmKeyDataRequest(_Confirm):
    """Client 0x02: the device's key confirmation MACU."""

    name: ClassVar[str] = "Confirm Key Data Request"
    command_id: ClassVar[int] = ClientCommand.CONFIRM_KEY_DATA_REQUEST

    @classmethod
    def from_bytes(cls, payload: bytes) -> ConfirmKeyDataRequest:
        return _parse_confirm(cls, payload)


@dataclass(frozen=True, slots=True)
class ConfirmKeyDataResponse(_Confirm):
    """Server 0x02: the hub's key confirmation MACV."""

    name: ClassVar[str] = "Confirm Key Data Response"
    command_id: ClassVar[int] = ServerCommand.CONFIRM_KEY_DATA_RESPONSE

    @classmethod
    def from_bytes(cls, payload: bytes) -> ConfirmKeyDataResponse:
        return _parse_confirm(cls, payload)


@dataclass(frozen=True, slots=True)
class TerminateKeyEstablishment:
    """0x03 in both directions: the sender ends the exchange.

    ``status`` is kept as sent (a device may send a code this enum lacks:
    ``known_status`` says); ``wait_time`` is the seconds the initiator should wait
    before trying again; ``suite`` the sender's KeyEstablishmentSuite value.
    """

    name: ClassVar[str] = "Terminate Key Establishment"
    command_id: ClassVar[int] = ClientCommand.TERMINATE_KEY_ESTABLISHMENT

    status: int
    wait_time: int
    suite: int

    def __post_init__(self) -> None:
        _check_uint(self.name, "status", self.status, 8)
        _check_uint(self.name, "wait_time", self.wait_time, 8)
        _check_uint(self.name, "suite", self.suite, 16)

    @property
    def known_status(self) -> KeStatus | None:
        try:
            return KeStatus(self.status)
        except ValueError:
            return None

    def to_bytes(self) -> bytes:
        return _TERMINATE.pack(self.status, self.wait_time, self.suite)

    @classmethod
    def from_bytes(cls, payload: bytes) -> TerminateKeyEstablishment:
        _layout(cls.name, payload, (("status", 1), ("wait_time", 1), ("suite", 2)))
        status, wait_time, suite = _TERMINATE.unpack_from(payload)
        return cls(status, wait_time, suite)


ClientFrame = InitiateKeyEstablishmentRequest | EphemeralDataRequest | ConfirmKeyDataRequest | TerminateKeyEstablishment
ServerFrame = InitiateKeyEstablishmentResponse | EphemeralDataResponse | ConfirmKeyDataResponse | TerminateKeyEstablishment


def parse_client_frame(command_id: int, payload: bytes, suite: Suite | None = None) -> ClientFrame:
    """A frame the device sent. ``suite`` is the exchange's (sizes Ephemeral Data;
    an Initiate carries its own). Raises ``KeFrameError`` (``KeUnknownCommand``,
    ``KeUnknownSuite``) for anything else than one well-formed command."""
    payload = bytes(payload)
    if command_id == ClientCommand.INITIATE_KEY_ESTABLISHMENT_REQUEST:
        return InitiateKeyEstablishmentRequest.from_bytes(payload)
    if command_id == ClientCommand.EPHEMERAL_DATA_REQUEST:
        return EphemeralDataRequest.from_bytes(payload, _need_suite(EphemeralDataRequest.name, "data", suite))
    if command_id == ClientCommand.CONFIRM_KEY_DATA_REQUEST:
        return ConfirmKeyDataRequest.from_bytes(payload)
    if command_id == ClientCommand.TERMINATE_KEY_ESTABLISHMENT:
        return TerminateKeyEstablishment.from_bytes(payload)
    raise KeUnknownCommand("client", command_id)


def parse_server_frame(command_id: int, payload: bytes, suite: Suite | None = None) -> ServerFrame:
    """A frame the hub sent (for the device side and tests); as ``parse_client_frame``."""
    payload = bytes(payload)
    if command_id == ServerCommand.INITIATE_KEY_ESTABLISHMENT_RESPONSE:
        return InitiateKeyEstablishmentResponse.from_bytes(payload)
    if command_id == ServerCommand.EPHEMERAL_DATA_RESPONSE:
        return EphemeralDataResponse.from_bytes(payload, _need_suite(EphemeralDataResponse.name, "data", suite))
    if command_id == ServerCommand.CONFIRM_KEY_DATA_RESPONSE:
        return ConfirmKeyDataResponse.from_bytes(payload)
    if command_id == ServerCommand.TERMINATE_KEY_ESTABLISHMENT:
        return TerminateKeyEstablishment.from_bytes(payload)
    raise KeUnknownCommand("server", command_id)
