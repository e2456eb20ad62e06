"""May this device activate new firmware on this command? A pure decision.

``verify_activation`` checks, in this order, stopping at the first failure:

1. a command, not a response or alert (NOT_A_COMMAND);
2. message code 0x0012, CS06 Activate Firmware (WRONG_MESSAGE_CODE);
3. signed at all (UNSIGNED), by an entity we hold an anchor for (UNKNOWN_SUPPLIER),
   with a valid ECDSA P-256 / SHA-256 signature over the signed bytes (BAD_SIGNATURE);
4. the originator is the supplier responsible for this device (NO_AUTHORITY);
5. addressed to this device (WRONG_RECIPIENT);
6. the CS06 counter equals the header counter (COUNTER_MISMATCH);
7. the counter is above the last one accepted from anyone for this device
   (REPLAYED_COUNTER; ``last_counter=None`` means none accepted yet);
8. an image is held (NO_IMAGE_HELD) and its Manufacturer Image Hash is the one signed
   (HASH_MISMATCH).

The kind of message comes first, as a device dispatches on it before it knows whose
key the message needs: a device's response is "not a command" whoever signed it, not
"unknown supplier". Neither of the two sends a response or an alert, so reporting
them first tells an unauthenticated sender nothing. Everything after that is decided
only for an authenticated supplier. The anti-replay store is the caller's: this module
only compares.

A signature verifies whether its s is high or low: GBCS does not ask for low-S, and
two of the three reference CS06 commands have a high s. The same command re-encoded
with n - s is the same supplier-signed command, so the counter, not the signature
bytes, is what refuses it a second time (REPLAYED_COUNTER).
"""

from __future__ import annotations

from dataclasses import dataclass

from .codes import REASON_CODES, AlertCode, CraFlag, MessageCode, Reason, ResponseCode, message_label
from .command import SignedCommand, parse_command
from .cs06 import HASH_SIZE, ActivateFirmware, iso_utc
from .errors import GbcsUsageError, MalformedCommand
from .ids import EntityId
from .keys import signature_valid as signature_valid  # r‖s, the one check images use too
from .trust import TrustStore


@dataclass(frozen=True)
class Verdict:
    """The outcome: a reason, a sentence for people, and the codes a device would send."""

    reason: Reason
    message: str
    response_code: ResponseCode | None  # CS06 response code; None: no response is sent
    alert_code: AlertCode | None
    command: SignedCommand | None  # None only for MALFORMED
    error: MalformedCommand | None = None  # the parse refusal, for MALFORMED

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    @property
    def activation(self) -> ActivateFirmware | None:
        """The CS06 body of an accepted command (None unless ``ok``)."""
        return self.command.activation if self.ok and self.command is not None else None


def _verdict(reason: Reason, message: str, command: SignedCommand | None) -> Verdict:
    response, alert = REASON_CODES[reason]
    return Verdict(reason, message, response, alert, command)


def verify_activation(
    cmd: SignedCommand,
    *,
    trust: TrustStore,
    responsible_supplier: EntityId,
    device_ieee: EntityId,
    last_counter: int | None,
    held_image_hash: bytes | None,
) -> Verdict:
    """Decide whether ``cmd`` lets ``device_ieee`` activate the image it holds."""
    if held_image_hash is not None and len(held_image_hash) != HASH_SIZE:
        raise GbcsUsageError(f"held image hash is {HASH_SIZE} bytes, got {len(held_image_hash)}")
    if last_counter is not None and last_counter < 0:
        raise GbcsUsageError(f"last counter {last_counter} is negative")
    apdu = cmd.apdu

    if apdu.cra_flag is not CraFlag.COMMAND:
        return _verdict(Reason.NOT_A_COMMAND, f"CRA flag is {apdu.cra_flag.name.lower()}, not command", cmd)
    if apdu.message_code is not MessageCode.ACTIVATE_FIRMWARE or cmd.activation is None:
        return _verdict(
            Reason.WRONG_MESSAGE_CODE,
            f"message code 0x{apdu.message_code:04X} ({message_label(apdu.message_code)}) is not CS06 Activate Firmware",
            cmd,
        )

    if apdu.signature is None:
        return _verdict(Reason.UNSIGNED, "command is not signed", cmd)
    key = trust.get(apdu.originator)
    if key is None:
        return _verdict(Reason.UNKNOWN_SUPPLIER, f"no trust anchor for originator {apdu.originator}", cmd)
    if not signature_valid(key, apdu.signed_data, apdu.signature):
        return _verdict(Reason.BAD_SIGNATURE, f"signature does not verify with the anchor for {apdu.originator}", cmd)

    if apdu.originator != responsible_supplier:
        return _verdict(
            Reason.NO_AUTHORITY,
            f"source does not have authority: {apdu.originator} is not the responsible supplier"
            f" {responsible_supplier} of device {device_ieee}",
            cmd,
        )
    if apdu.recipient != device_ieee:
        return _verdict(Reason.WRONG_RECIPIENT, f"addressed to {apdu.recipient}, not to device {device_ieee}", cmd)

    body = cmd.activation
    if body.counter != apdu.counter:
        return _verdict(
            Reason.COUNTER_MISMATCH, f"content counter {body.counter} differs from header counter {apdu.counter}", cmd
        )
    if last_counter is not None and apdu.counter <= last_counter:
        return _verdict(
            Reason.REPLAYED_COUNTER, f"counter {apdu.counter} is not above the last accepted {last_counter}", cmd
        )

    if held_image_hash is None:
        return _verdict(Reason.NO_IMAGE_HELD, f"device {device_ieee} holds no image to activate", cmd)
    if body.image_hash != held_image_hash:
        return _verdict(
            Reason.HASH_MISMATCH,
            f"hash mismatch: command names {body.image_hash.hex().upper()},"
            f" device holds {held_image_hash.hex().upper()}",
            cmd,
        )

    if body.cancels:
        what = "cancel the scheduled activation"
    elif body.execution_time is not None:
        what = f"activate at {iso_utc(body.execution_time)}"
    else:
        what = "activate now"
    return _verdict(Reason.OK, f"verified: {what} (counter {apdu.counter})", cmd)


def verify_activation_bytes(
    data: bytes | str,
    *,
    trust: TrustStore,
    responsible_supplier: EntityId,
    device_ieee: EntityId,
    last_counter: int | None,
    held_image_hash: bytes | None,
) -> Verdict:
    """Parse (hex ``str`` or raw ``bytes``) then verify; a parse refusal is MALFORMED."""
    try:
        cmd = parse_command(data)
    except MalformedCommand as exc:
        response, alert = REASON_CODES[Reason.MALFORMED]
        return Verdict(Reason.MALFORMED, f"malformed command: {exc}", response, alert, None, exc)
    return verify_activation(
        cmd,
        trust=trust,
        responsible_supplier=responsible_supplier,
        device_ieee=device_ieee,
        last_counter=last_counter,
        held_image_hash=held_image_hash,
    )

