"""A simulated HCALCS or PPMID as a GBCS peer: sans-I/O, time as an argument.

`GbcsPeer` is what a simulated device says and does in GBCS. The device (device.py)
owns the radio, the tunnel and the OTA client; it hands the peer every bare GBCS
message the tunnel brings (`on_message`), tells it what it downloaded and activated,
and sends whatever bytes come back over the tunnel. ``now`` is always POSIX UTC
seconds (GBCS dates are wall-clock dates), and so is `get_timer`.

Theory of operation
===================

Commands (CRA flag 01) addressed to this device's entity id::

    CS06 Activate Firmware (0x0012)        HCALCS only (a PPMID's activation is the
                                           hub's, SECMP0007: ignored with a note)
        signature    the originator must be a supplier whose key the device holds,
                     and the supplier's signature must verify
        counter      strictly above the last one accepted from that originator; the
                     content's counter must equal the header's
        then         no date-time, or one not after now: activate the held image if
                     its Manufacturer Image Hash is the command's. Response (CRA 02,
                     the command's counter, from the device to the supplier, signed,
                     COSEM date-time now): SEQUENCE { responseCode, firmwareVersion }
                     with 0 success (firmwareVersion: the new one), 1 no image held,
                     2 hash mismatch, 3 activation failure (``activation_fails``)
                     date-time 9999-12-31 23:59:59: cancel the pending future-dated
                     activation; response NULL ("accepted")
                     a later date-time: pending (replacing any other); response NULL;
                     at its time (`get_timer` / `handle_timer`) the checks above run
                     and an alert 0x00CA goes to the supplier: 0x8F66 actioned (code 0)
                     or 0x8F67 not actioned, with the CS06's counter and
                     SEQUENCE { responseCode, firmwareVersion }
    CS08 Read Firmware Version (0x0129)    both kinds; the command carries no signature
                                           (GBCS protects it with the ACB's MAC, which a
                                           simulated device cannot check); the counter
                                           rule holds. Response: SEQUENCE
                                           { firmwareVersion, 0 read success }, signed

Anything else (unreadable bytes, another recipient, a response or alert, a message
code the device does not take, a refused check) gets no reply: the output's ``notes``
say why, for the device's record.

Events from the device::

    hold_image(hash, version)      a downloaded image passed the device's checks and is
                                   kept, waiting for activation
    drop_image()                   it was erased (the server aborted it)
    on_image_downloaded(hash, ok)  Firmware Distribution Receipt Alert (ZigBee form,
                                   0x00CF) to the supplier: 0x8F72, or 0x8F1C with the
                                   hash it computed
    on_activated(ok)               the device rebooted into the held image (ok) or kept
                                   its old one; the PPMID then sends its CS09 (0x012B,
                                   0x8F8B, activateImage 0 / 1) to the Access Control
                                   Broker; an HCALCS only updates its version

Alerts carry the device's own originator counter, strictly increasing: from the
device's clock (milliseconds since 1970) unless a starting value is given, so a device
rebuilt after a restart never reuses one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from eui64 import Eui64

from .content import (
    ACCEPTED,
    Alert,
    Cs06,
    MessageCode,
    ResponseCode,
    cs06_response,
    cs08_response,
    cs09_alert,
    fdra_zigbee,
    future_dated_alert,
    read_cs06,
)
from .cursor import GbcsReadError
from .reader import CRA_ALERT, CRA_COMMAND, CRA_RESPONSE, SignedMessage, read_message, signature_verifies
from .signer import cosem_date_time, signed_message

__all__ = ["DEFAULT_ACB_ID", "DEFAULT_SUPPLIER_ID", "GbcsPeer", "HeldImage", "PeerOutput"]

KINDS: Final = ("hcalcs", "ppmid")
# The RTDS 4.5.0 test supplier and Access Control Broker: a lab bench's defaults.
DEFAULT_SUPPLIER_ID: Final = Eui64(bytes.fromhex("90B3D51F30010000"))
DEFAULT_ACB_ID: Final = Eui64(bytes.fromhex("90B3D51F30000002"))


@dataclass(frozen=True)
class PeerOutput:
    """What the device must do after a message or a timer."""

    replies: list[bytes] = field(default_factory=list)  # bare GBCS messages to send over the tunnel
    activate: bytes | None = None  # the held image's hash: reboot into it now
    firmware_version: bytes | None = None  # the version the device runs once it has
    notes: tuple[str, ...] = ()  # why a message got no reply


@dataclass(frozen=True)
class HeldImage:
    """A downloaded image the device keeps until it is activated."""
    image_hash: bytes
    firmware_version: bytes


@dataclass(frozen=True)
class _Pending:
    command: Cs06
    supplier: Eui64
    execution_time: int


def _version(value: bytes) -> bytes:
    if len(value) != 4:
        raise ValueError(f"a GBCS firmware version is 4 bytes, got {len(value)}")
    return bytes(value)


class GbcsPeer:
    """One simulated device's GBCS side (see the module docstring)."""

    def __init__(
        self,
        kind: str,
        entity_id: Eui64,
        signing_key: ec.EllipticCurvePrivateKey,
        certificate: x509.Certificate,
        supplier_public_keys: Mapping[Eui64, ec.EllipticCurvePublicKey],
        firmware_version: bytes,
        *,
        supplier_id: Eui64 | None = None,
        acb_id: Eui64 = DEFAULT_ACB_ID,
        activation_fails: bool = False,
        originator_counter: int | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
        self.kind = kind
        self.entity_id = entity_id
        self.certificate = certificate
        self._key = signing_key
        self._suppliers = dict(supplier_public_keys)
        # Where its receipt alerts go: its (first) supplier.
        self.supplier_id = supplier_id if supplier_id is not None else next(iter(self._suppliers), DEFAULT_SUPPLIER_ID)
        self.acb_id = acb_id
        self.activation_fails = activation_fails
        self.firmware_version = _version(firmware_version)
        self.held: HeldImage | None = None
        self._pending: _Pending | None = None
        self._last_command: dict[Eui64, int] = {}  # per originator
        self._clock_counters = originator_counter is None
        self._last_counter = originator_counter or 0
        self._handlers: Mapping[int, Callable[[SignedMessage, float], PeerOutput]] = {
            MessageCode.CS06_ACTIVATE_FIRMWARE: self._on_cs06,
            MessageCode.CS08_READ_FIRMWARE_VERSION: self._on_cs08,
        }

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    # -- what the device tells the peer -------------------------------------------------

    def hold_image(self, image_hash: bytes, firmware_version: bytes) -> None:
        self.held = HeldImage(bytes(image_hash), _version(firmware_version))

    def drop_image(self) -> None:
        self.held = None

    def on_message(self, data: bytes, now: float) -> PeerOutput:
        """A bare GBCS message from the tunnel."""
        try:
            message = read_message(data)
        except GbcsReadError as exc:
            return PeerOutput(notes=(f"unreadable: {exc}",))
        if message.recipient != self.entity_id:
            return PeerOutput(notes=(f"for {message.recipient.hex()}, not this device ({self.entity_id.hex()})",))
        if message.cra_flag != CRA_COMMAND:
            return PeerOutput(notes=(f"CRA flag 0x{message.cra_flag:02X} is not a command",))
        handler = self._handlers.get(message.message_code)
        if handler is None:
            return PeerOutput(notes=(f"message code 0x{message.message_code:04X} is not one this device takes",))
        return handler(message, now)

    def get_timer(self) -> float | None:
        """When a future-dated activation is due (POSIX UTC seconds), or None."""
        return None if self._pending is None else float(self._pending.execution_time)

    def handle_timer(self, now: float) -> PeerOutput:
        pending = self._pending
        if pending is None or now < pending.execution_time:
            return PeerOutput()
        self._pending = None
        code, out = self._activate(pending.command.image_hash)
        alert = Alert.FUTURE_DATED_ACTIONED if code is ResponseCode.SUCCESS else Alert.FUTURE_DATED_NOT_ACTIONED
        content = future_dated_alert(alert, pending.execution_time, pending.command.counter, code, self.firmware_version)
        message = self._alert(MessageCode.FUTURE_DATED_ALERT, pending.supplier, content, now)
        return PeerOutput([message], out.activate, out.firmware_version, out.notes)

    def on_image_downloaded(self, image_hash: bytes, ok: bool, now: float) -> list[bytes]:
        """The Firmware Distribution Receipt Alert for a finished download."""
        alert = Alert.FIRMWARE_VERIFICATION_SUCCESSFUL if ok else Alert.FIRMWARE_VERIFICATION_FAILED
        return [self._alert(MessageCode.FDRA_ZIGBEE, self.supplier_id, fdra_zigbee(alert, now, image_hash), now)]

    def on_activated(self, ok: bool, now: float) -> list[bytes]:
        """The device rebooted into its held image (``ok``) or failed to; a PPMID's CS09."""
        if ok and self.held is not None:
            self.firmware_version = self.held.firmware_version
            self.held = None
        if self.kind != "ppmid":
            return []
        content = cs09_alert(now, self.firmware_version, ok)
        return [self._alert(MessageCode.CS09_PPMID_ACTIVATION_ALERT, self.acb_id, content, now)]

    # -- commands ---------------------------------------------------------------------

    def _counter_refusal(self, message: SignedMessage) -> str | None:
        last = self._last_command.get(message.originator)
        if last is not None and message.counter <= last:
            return f"counter {message.counter} is not above the last accepted from {message.originator.hex()} ({last})"
        return None

    def _on_cs06(self, message: SignedMessage, now: float) -> PeerOutput:
        if self.kind != "hcalcs":
            return PeerOutput(notes=("a PPMID takes its activation from the hub, not a CS06",))
        key = self._suppliers.get(message.originator)
        if key is None:
            return PeerOutput(notes=(f"originator {message.originator.hex()} is not a supplier this device trusts",))
        if not signature_verifies(message, key):
            return PeerOutput(notes=(f"the signature does not verify with supplier {message.originator.hex()}'s key",))
        refusal = self._counter_refusal(message)
        if refusal is not None:
            return PeerOutput(notes=(refusal,))
        try:
            command = read_cs06(message.content, message.content_offset)
        except GbcsReadError as exc:
            return PeerOutput(notes=(f"unreadable CS06: {exc}",))
        if command.counter != message.counter:
            return PeerOutput(notes=(f"CS06 content counter {command.counter} differs from the header's {message.counter}",))
        self._last_command[message.originator] = message.counter
        if command.cancels:
            notes: tuple[str, ...] = ("cancelled the pending future-dated activation",) if self._pending else ("nothing pending to cancel",)
            self._pending = None
            return PeerOutput([self._response(message, ACCEPTED, now)], notes=notes)
        if command.execution_time is not None and command.execution_time > now:
            notes = ("replaced the pending future-dated activation",) if self._pending else ()
            self._pending = _Pending(command, message.originator, command.execution_time)
            return PeerOutput([self._response(message, ACCEPTED, now)], notes=notes)
        code, out = self._activate(command.image_hash)
        reply = self._response(message, cs06_response(code, self.firmware_version), now)
        return PeerOutput([reply], out.activate, out.firmware_version, out.notes)

    def _activate(self, image_hash: bytes) -> tuple[ResponseCode, PeerOutput]:
        held = self.held
        if held is None:
            return ResponseCode.NO_IMAGE_HELD, PeerOutput(notes=("no image held",))
        if held.image_hash != image_hash:
            return ResponseCode.HASH_MISMATCH, PeerOutput(notes=(f"hash mismatch: holds {held.image_hash.hex()}",))
        if self.activation_fails:
            return ResponseCode.ACTIVATION_FAILURE, PeerOutput(notes=("activation failed (activation_fails)",))
        self.held = None
        self.firmware_version = held.firmware_version
        return ResponseCode.SUCCESS, PeerOutput(activate=held.image_hash, firmware_version=held.firmware_version)

    def _on_cs08(self, message: SignedMessage, now: float) -> PeerOutput:
        refusal = self._counter_refusal(message)
        if refusal is not None:
            return PeerOutput(notes=(refusal,))
        if message.content != ACCEPTED:  # the command's content is NULL
            return PeerOutput(notes=(f"CS08 content {message.content.hex().upper()} is not NULL (0500)",))
        self._last_command[message.originator] = message.counter
        return PeerOutput([self._response(message, cs08_response(self.firmware_version), now)])

    # -- what the device writes -------------------------------------------------------

    def _response(self, command: SignedMessage, content: bytes, now: float) -> bytes:
        """A response carries the command's counter and goes back to its originator."""
        return signed_message(
            cra_flag=CRA_RESPONSE,
            counter=command.counter,
            originator=self.entity_id,
            recipient=command.originator,
            message_code=command.message_code,
            content=content,
            key=self._key,
            date_time=cosem_date_time(now),
        )

    def _next_counter(self, now: float) -> int:
        counter = self._last_counter + 1
        if self._clock_counters:
            counter = max(counter, int(now * 1000))
        self._last_counter = counter
        return counter

    def _alert(self, code: MessageCode, recipient: Eui64, content: bytes, now: float) -> bytes:
        return signed_message(
            cra_flag=CRA_ALERT,
            counter=self._next_counter(now),
            originator=self.entity_id,
            recipient=recipient,
            message_code=code,
            content=content,
            key=self._key,
        )
