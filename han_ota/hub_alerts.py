"""The hub's GBCS messages: its own CCS08 alerts, and every message kept, audited, fed.

Wiring only; the bytes are gateway.gbcs.alerts', the rows gateway.store's. One
``HubMessages`` per process (the daemon, a one-shot push):

- ``observer`` is an engine job observer: when a transfer to a device ends it emits a
  CCS08 Firmware Transfer Alert (0x0128). The device has the whole image (the job
  reached held, scheduled, activated or confirmed from pending or transferring): 0x8F8A,
  response 0. The job was cancelled (the user, or a newer push superseding it): 0x8F89,
  1 image discarded. It failed before the device had the image: 0x8F89 with 2 when the
  device's hardware version is outside the image's range, else 3 file transfer
  failure. firmwareVersion is the image's file version, entityId the device. One alert
  per job and outcome: a job resumed after a restart does not send its alert twice.
- Emission takes the counter first and signs after (``StateStore.reserve_hub_message``,
  one transaction, with what the alert will say), then keeps the bytes and commits the
  counter (``complete_hub_message``, another). A kill between the two leaves a
  reservation that ``recover`` finishes at the next start with the same counter and
  fields: no alert lost, no counter used twice, none ever lower than one before.
- ``record`` keeps any other message (H-tunnel's on_message: direction "in" | "out"),
  judged against the keys the hub knows: the suppliers' anchors and its own certificate.
- ``unanswered_forwards`` finds the commands forwarded before a kill that no response of
  their device answers; the daemon sends each again once (han_ota/tunnels.py ``reforward``),
  without a second "out" row, and ``mark_reforwarded`` notes it in the row's details.

Every kept message is audited (``gbcs.message``) and written to the GFI feed when one
is configured. Without a ``[hub]`` signing key the alerts are unsigned (``start``
logs that). A push without a state directory keeps its alerts in memory only.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any

import zigpy.types as zt

from eui64 import Eui64
from gateway.config import Config, HubConfig
from gateway.crashpoint import crashpoint
from gateway.engine import Job
from gateway.gbcs.alerts import FirmwareTransferAlert, TransferResponse, build_transfer_alert
from gateway.gbcs.ids import EntityId
from gateway.gbcs.messages import read_message
from gateway.gbcs.trust import TrustStore, read_anchor
from gateway.ota import events as ev
from gateway.store import MessageDirection, StateStore, StoredMessage, StoreError
from han_ota.gfi_feed import GfiFeed

LOGGER = logging.getLogger("han_ota.hub_alerts")

#: What a message's audit record is called.
AUDIT_EVENT = "gbcs.message"
#: A kept forward's details key: when a restart forwarded it again (``unanswered_forwards``).
REFORWARDED = "reforwarded_utc"
#: The hub's id when [hub] names none and the coordinator's IEEE is not known.
FALLBACK_HUB_ID = "0000000000000000"

_HAS_IMAGE = frozenset({ev.SessionState.HELD, ev.SessionState.SCHEDULED, ev.SessionState.ACTIVATED, ev.SessionState.CONFIRMED})
_BEFORE_IMAGE = frozenset({ev.SessionState.PENDING, ev.SessionState.TRANSFERRING})

# (event, device, job=, **fields): the daemon's _audit, or a logger line for a push.
Audit = Callable[..., None]


def transfer_outcome(action: ev.StateChanged) -> TransferResponse | None:
    """The CCS08 a job's state change calls for, or None (not the end of a transfer)."""
    if action.new in _HAS_IMAGE and action.old in _BEFORE_IMAGE:
        return TransferResponse.SUCCESS
    if action.new is ev.SessionState.CANCELLED:
        return TransferResponse.IMAGE_DISCARDED
    if action.new is ev.SessionState.FAILED and action.old in _BEFORE_IMAGE:
        # The session's one refusal of a hardware version (gateway/ota/session.py _check_query).
        if "hardware version" in (action.reason or "") and "outside image range" in (action.reason or ""):
            return TransferResponse.HARDWARE_VERSION_MISMATCH
        return TransferResponse.FILE_TRANSFER_FAILURE
    return None


def known_keys(config: Config, suppliers: TrustStore, devices: Mapping[EntityId, Any] | None = None) -> TrustStore:
    """The keys a message's signature is judged against: the suppliers', the devices'
    (their digital-signing certificates' keys, where known) and the hub's own."""
    known = TrustStore({**suppliers, **(devices or {})})
    hub = config.hub
    if hub.key is None or hub.entity_id is None:
        return known
    return known.with_anchor(EntityId.parse(hub.entity_id), hub.key.public_key())


def device_keys_of(config: Config) -> dict[EntityId, Any]:
    """The devices' keys from their `[[device]] gbcs_certificate`, by entity id: the one
    the certificate names, else the device's IEEE address. GbcsUsageError names a file
    that cannot be read."""
    keys: dict[EntityId, Any] = {}
    for device in config.devices:
        if device.gbcs_certificate is not None:
            anchor = read_anchor(device.gbcs_certificate)
            keys[anchor.entity_id or EntityId.parse(device.ieee.hex())] = anchor.public_key
    return keys


def counter_floor(now: dt.datetime) -> int:
    """Milliseconds since 1970: the counter a fresh state directory starts from, so a
    hub whose store was wiped still counts above what it sent before."""
    return int(now.timestamp() * 1000)


class HubMessages:
    def __init__(
        self,
        config: Config,
        store: StateStore | None,
        *,
        trust: TrustStore,
        audit: Audit | None = None,
        durable_job_id: Callable[[Job], int | None] = lambda job: None,
        clock: Callable[[], dt.datetime] | None = None,
        device_keys: Mapping[EntityId, Any] | None = None,
    ) -> None:
        self.hub: HubConfig = config.hub
        self.store = store
        self.known = known_keys(config, trust, device_keys)
        self._audit = audit
        self.engine: Any = None  # the engine watched (``watch``): its app names the coordinator
        self._durable_job_id = durable_job_id
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))
        self.feed: GfiFeed | None = GfiFeed(self.hub.gfi_feed) if self.hub.gfi_feed else None
        #: Engine job id -> the messages kept for it in this process (push --json).
        self._by_job: dict[str, list[dict[str, Any]]] = {}
        self._memory_counter = 0  # without a store

    # ------------------------------------------------------------------ lifecycle

    async def start(self, unsigned_level: int = logging.WARNING) -> None:
        """Listen for the feed and finish what a crash left; say so when alerts go unsigned."""
        if not self.hub.signed:
            LOGGER.log(unsigned_level, "no [hub] signing_key: the hub's CCS08 alerts are recorded unsigned (`han-ota gbcs keygen -o PREFIX` makes a key)")
        if self.feed is not None:
            await self.feed.start()
        self.recover()

    async def close(self) -> None:
        if self.feed is not None:
            await self.feed.close()

    def recover(self) -> int:
        """Finish the alerts a crash left reserved: same counter, same fields. Returns how many."""
        if self.store is None:
            return 0
        pending = self.store.pending_hub_messages()
        for row in pending:
            LOGGER.warning("hub alert counter %s was reserved but not recorded before a stop: signing and recording it now", row.counter)
            self._finish(row, None)
        return len(pending)

    # ------------------------------------------------------------------ the engine's observer

    def watch(self, engine: Any) -> None:
        """Observe ``engine``'s jobs. Call it before the caller adds its own observer, so
        an alert's reservation is on disk before the job's state change is."""
        self.engine = engine
        engine.add_observer(self.observer)

    def observer(self, job: Job, action: ev.Action) -> None:
        if not isinstance(action, ev.StateChanged):
            return
        outcome = transfer_outcome(action)
        if outcome is None:
            return
        number = self._durable_job_id(job)
        if self._already_sent(job, number, outcome):
            return
        alert = FirmwareTransferAlert.ended(
            outcome,
            device=EntityId(Eui64.from_air(job.ieee).written),
            firmware_version=job.image.file_version,
            at=self._clock(),
        )
        details = {
            "alert_code": f"0x{int(alert.alert_code):04X}",
            "response_code": int(outcome),
            "outcome": outcome.name.lower(),
            "entity_id": str(alert.entity_id),
            "firmware_version": alert.firmware_version,
            "execution_time": alert.execution_time.isoformat(),
            "originator": str(self._originator()),
            "recipient": self.hub.acb_id,
            "engine_job": job.id,
            "reason": action.reason,
        }
        try:
            self.emit(job.ieee, number, details, engine_job=job.id)
        except StoreError as exc:
            # Before the reservation: no counter was spent and the alert is not kept. After
            # it: the next start finishes it (recover).
            LOGGER.error("%s job=%s CCS08 %s not recorded: %s", job.ieee, job.id, details["alert_code"], exc)

    def _already_sent(self, job: Job, number: int | None, outcome: TransferResponse) -> bool:
        if any(m["direction"] == "hub" and (m["details"] or {}).get("response_code") == int(outcome) for m in self._by_job.get(job.id, ())):
            return True
        if self.store is None or number is None:
            return False
        return any(
            m.direction is MessageDirection.HUB and (m.details or {}).get("response_code") == int(outcome)
            for m in self.store.list_messages(job_id=number, status=None)
        )

    def _originator(self) -> EntityId:
        if self.hub.entity_id is not None:
            return EntityId.parse(self.hub.entity_id)
        ieee = _coordinator_ieee(self.engine)
        if ieee is None:
            return EntityId.parse(FALLBACK_HUB_ID)
        return EntityId(_device(ieee).written)

    # ------------------------------------------------------------------ emitting and keeping

    def emit(self, ieee: object, job_id: int | None, details: Mapping[str, Any], *, engine_job: str | None = None) -> dict[str, Any]:
        """Reserve the counter, sign, keep: the hub's own alert (``details`` as ``observer`` makes them)."""
        if self.store is None:
            self._memory_counter = max(self._memory_counter + 1, counter_floor(self._clock()))
            data = self._build(details, self._memory_counter)
            return self._kept(self._unstored(MessageDirection.HUB, ieee, data, details), ieee, None, data, engine_job)
        row = self.store.reserve_hub_message(_device(ieee), job_id, details, floor=counter_floor(self._clock()))
        crashpoint("hub_alert.reserved")
        return self._finish(row, engine_job)

    def _finish(self, row: StoredMessage, engine_job: str | None) -> dict[str, Any]:
        assert self.store is not None and row.counter is not None and row.details is not None
        data = self._build(row.details, row.counter)
        crashpoint("hub_alert.signed")
        stored = self.store.complete_hub_message(row.message_id, data, known=self.known)
        return self._kept(stored.to_dict(), row.device, row.job_id, data, engine_job or row.details.get("engine_job"))

    def _build(self, details: Mapping[str, Any], counter: int) -> bytes:
        alert = FirmwareTransferAlert.ended(
            TransferResponse(details["response_code"]),
            device=EntityId.parse(details["entity_id"]),
            firmware_version=int(details["firmware_version"]),
            at=dt.datetime.fromisoformat(details["execution_time"]),
        )
        return build_transfer_alert(
            self.hub.key,
            originator=EntityId.parse(details["originator"]),
            recipient=EntityId.parse(details["recipient"]),
            counter=counter,
            alert=alert,
        )

    def record(self, direction: str, ieee: object, data: bytes, job_id: int | None = None, *, engine_job: str | None = None) -> dict[str, Any]:
        """Keep a message the hub forwarded ("out") or received ("in"): H-tunnel's on_message.
        Without ``job_id`` the message goes with the device's current job, if any."""
        if job_id is None and engine_job is None and self.engine is not None and isinstance(ieee, zt.EUI64):
            job = self.engine.job_for_device(ieee)
            if job is not None:
                job_id, engine_job = self._durable_job_id(job), job.id
        if self.store is None:
            view = self._unstored(MessageDirection(direction), ieee, bytes(data), None)
        else:
            device = None if ieee is None else _device(ieee)
            view = self.store.record_message(direction, device, bytes(data), job_id, known=self.known).to_dict()
        return self._kept(view, ieee, job_id, bytes(data), engine_job)

    def unanswered_forwards(self) -> list[StoredMessage]:
        """Commands the hub forwarded ("out") that no response of their device answers (same
        message code and counter) and that no earlier restart forwarded again: what a kill
        between a forward and its response left (``DaemonTunnels.reforward``). Oldest first."""
        if self.store is None:
            return []
        try:
            kept = self.store.list_messages()
        except StoreError as exc:
            LOGGER.error("the kept forwards cannot be read, none is forwarded again: %s", exc)
            return []
        answered = {(m.device, m.message_code, m.counter) for m in kept if m.direction is MessageDirection.IN and m.cra == "response"}
        return [
            m for m in kept
            if m.direction is MessageDirection.OUT and m.cra == "command" and m.data is not None and m.device is not None
            and REFORWARDED not in (m.details or {}) and (m.device, m.message_code, m.counter) not in answered
        ]

    def mark_reforwarded(self, message_id: int) -> None:
        """The device acknowledged the re-forward of kept command ``message_id``: never again."""
        if self.store is not None:
            self.store.annotate_message(message_id, {REFORWARDED: self._clock().isoformat()})

    def _unstored(self, direction: MessageDirection, ieee: object, data: bytes, details: Mapping[str, Any] | None) -> dict[str, Any]:
        info = read_message(data, self.known)
        return StoredMessage.unstored(info, direction, None if ieee is None else _device(ieee), self._clock(), details).to_dict()

    def _kept(self, view: dict[str, Any], ieee: object, job_id: int | None, data: bytes, engine_job: str | None) -> dict[str, Any]:
        if engine_job is not None:
            self._by_job.setdefault(str(engine_job), []).append(view)
        if self._audit is not None:
            fields = {k: view.get(k) for k in ("direction", "code_hex", "cra", "originator", "recipient", "counter", "signature", "hex")}
            fields["message_id"] = view.get("id")
            self._audit(AUDIT_EVENT, None if ieee is None else _device(ieee), job=job_id, **fields)
        if self.feed is not None:
            self.feed.publish(data)
        return view

    def job_messages(self, job: Job, durable_id: int | None = None) -> list[dict[str, Any]]:
        """The messages of a job, for push --json / status --json (``messages``)."""
        if self.store is not None and durable_id is not None:
            return [m.to_dict() for m in self.store.list_messages(job_id=durable_id)]
        return list(self._by_job.get(job.id, ()))


def _device(ieee: object) -> Eui64:
    """zigpy's EUI64 (over-the-air order) or a written form, as ``Eui64``."""
    if isinstance(ieee, zt.EUI64):
        return Eui64.from_air(ieee)
    return Eui64.of(ieee)  # type: ignore[arg-type]  # Eui64.of refuses anything else, naming its type


def hub_summary(config: Config) -> dict[str, Any]:
    """The [hub] section of `config check`."""
    hub = config.hub
    return {
        "entity_id": hub.entity_id or "the coordinator's IEEE address",
        "signing_key": None if hub.signing_key is None else str(hub.signing_key),
        "certificate": None if hub.certificate is None else str(hub.certificate),
        "acb_id": hub.acb_id,
        "gfi_feed": hub.gfi_feed,
        "alerts": "signed" if hub.signed else "unsigned (no signing_key)",
    }




async def start_hub_messages(
    config: Config,
    store: object,
    engine: Any = None,
    *,
    trust: TrustStore,
    audit: Audit | None = None,
    durable_job_id: Callable[[Job], int | None] = lambda job: None,
    device_keys: Mapping[EntityId, Any] | None = None,
    unsigned_level: int = logging.WARNING,
) -> HubMessages:
    """A started ``HubMessages`` (feed listening, crash leftovers finished), watching
    ``engine`` if given. ``store`` that is not a StateStore (a push without one) keeps
    the messages in memory."""
    hub = HubMessages(
        config, store if isinstance(store, StateStore) else None, trust=trust, audit=audit, durable_job_id=durable_job_id,
        device_keys=device_keys,
    )
    if engine is not None:
        hub.watch(engine)
    await hub.start(unsigned_level)
    return hub


def _coordinator_ieee(engine: Any) -> object:
    """The coordinator's IEEE address as zigpy knows it; None before it is known."""
    try:
        ieee = engine.app.state.node_info.ieee
    except AttributeError:
        return None
    return None if ieee is None or ieee == zt.EUI64.convert("00:00:00:00:00:00:00:00") else ieee


__all__ = ["AUDIT_EVENT", "REFORWARDED", "HubMessages", "device_keys_of", "hub_summary", "known_keys", "start_hub_messages", "transfer_outcome"]
