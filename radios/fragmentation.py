"""Messages longer than one frame through bellows and zigpy-znp, as each stack's host does it.

The sim radio fragments on its air (radios/sim/han.py). The two real stacks split the
work with their host differently, and neither radio library does the host's part for
outgoing messages (bellows 1.2.1 refuses them with "OctetString is too long",
zigpy-znp 1.1.1 with "... is not an unsigned 8 bit integer"), so this layer does,
installed on the app like radios/tap.py's filter: whatever calls ``send_packet``
(our tunnel, zigpy) needs to know nothing of it.

EmberZNet (EZSP): fragmentation is a host library (Silicon Labs' fragmentation
plugin, gecko_sdk protocol/zigbee/app/framework/plugin/fragmentation/fragmentation.c,
fragmentation-host.c). ``emAfFragmentationSendUnicast`` cuts the message into blocks of
``emberAfMaximumApsPayloadLength`` (the NCP's maximum, less the APS encryption overhead
when secured, less EMBER_AF_APS_FRAGMENTATION_OVERHEAD = 2), at most 255;
``sendNextFragments`` sends a window of ``EZSP_CONFIG_FRAGMENT_WINDOW_SIZE`` blocks, each
with ``sendUnicast``, ``EMBER_APS_OPTION_FRAGMENT`` and ``groupId`` =
``HIGH_LOW_TO_INT(fragmentCount, index)``, all under the APS sequence the first send
returned; ``emAfFragmentationMessageSent`` counts each block's ``messageSentHandler``,
sends the next window when the window is confirmed and gives up at the first failure.
Lost blocks are resent by the stack's APS (apscMaxFrameRetries), not by the host.
Incoming fragments bellows already reassembles and acks (bellows/ezsp/protocol.py), but
only on EZSP 13 and older: see `_mend_bellows_reassembly`.

Z-Stack (ZNP): the stack fragments itself; only the MT frame (250 bytes) is too small.
TI's host (ZAP, components/zap/zap_af.c ``AF_DataRequest``/``afStore``/``afRetrieve``)
sends a message longer than MT_RPC_DATA_MAX - 20 as ``AF_DATA_REQUEST_EXT`` carrying the
length and no data, then the data with ``AF_DATA_STORE`` (index, up to 247 bytes), then
an ``AF_DATA_STORE`` of length 0, which makes the stack send it; ``AF_DATA_CONFIRM``
follows as for any request. A received message too long for one MT frame comes as
``AF_INCOMING_MSG_EXT`` with its length and no data; the host fetches it with
``AF_DATA_RETRIEVE`` (timestamp, index, up to 248 bytes) and frees it with a retrieve of
length 0. zigpy-znp 1.1.1 does neither (it cannot even parse such an IncomingMsgExt), so
the incoming half is here too: the message goes to zigpy through zigpy-znp's own
``on_af_message``, as a short one would.

The cutting is sans-I/O (``ezsp_blocks``, ``windows``, ``store_chunks``,
``retrieve_chunks``); ``install_fragmentation`` is the thin asyncio side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import zigpy.exceptions
import zigpy.types as zt
from zigpy.application import ControllerApplication

from radios.limits import EZSP as EZSP_LIMITS

LOGGER = logging.getLogger(__name__)

__all__ = [
    "Block", "FragmentationError", "ezsp_blocks", "install_fragmentation", "retrieve_chunks", "store_chunks",
    "windows",
]

MAX_BLOCKS: Final = 255  # the block count is one byte (groupId high byte, the air's first block)
EZSP_FRAGMENTATION_OVERHEAD: Final = 2  # EMBER_AF_APS_FRAGMENTATION_OVERHEAD (af.h)
EZSP_SEND_TIMEOUT_S: Final = 3.0 * 4  # bellows' MESSAGE_SEND_TIMEOUT_MAINS, times the APS attempts
MT_RPC_DATA_MAX: Final = 250
ZNP_REQUEST_EXT_HEADER: Final = 20  # ZAP_AF_REQ_MSG_HDR: DataRequestExt's fields before the data
ZNP_STORE_MAX: Final = MT_RPC_DATA_MAX - 3  # ZAP_AF_STO_DAT_MAX
ZNP_RETRIEVE_MAX: Final = MT_RPC_DATA_MAX - 2  # ZAP_AF_RTV_DAT_MAX
#: The longest payload one AF.DataRequestExt carries in its own MT frame
ZNP_MAX_INLINE: Final = MT_RPC_DATA_MAX - ZNP_REQUEST_EXT_HEADER
ZNP_CONFIRM_TIMEOUT_S: Final = 30.0


class FragmentationError(ValueError):
    """A message that cannot be cut as the stack's host would: says why."""


# -- sans-I/O ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One EZSP block: its number, the message's block count, its bytes."""

    index: int
    count: int
    data: bytes

    @property
    def group_id(self) -> int:
        """The apsFrame groupId the host library sends it with (count high, index low)."""
        return self.count << 8 | self.index


def ezsp_blocks(message: bytes, part_size: int) -> list[Block]:
    """``message`` cut into ``part_size``-byte blocks (the last shorter)."""
    if part_size < 1:
        raise FragmentationError(f"APS fragmentation: block size {part_size} leaves no room for data")
    count = max(1, -(-len(message) // part_size))
    if count > MAX_BLOCKS:
        raise FragmentationError(
            f"APS fragmentation: {len(message)} bytes need {count} blocks of {part_size}, more than {MAX_BLOCKS}"
        )
    return [Block(i, count, message[i * part_size : (i + 1) * part_size]) for i in range(count)]


def windows(blocks: list[Block], size: int) -> list[list[Block]]:
    """The blocks a window at a time (EZSP_CONFIG_FRAGMENT_WINDOW_SIZE, 1..8)."""
    if not 1 <= size <= 8:
        raise FragmentationError(f"APS fragmentation: window size {size} is not 1..8")
    return [blocks[i : i + size] for i in range(0, len(blocks), size)]


def store_chunks(message: bytes) -> list[tuple[int, bytes]]:
    """The AF.DataStore requests for ``message``: (index, data), the last (len, b"")
    being the zero-length store that makes Z-Stack send it."""
    chunks = [(i, message[i : i + ZNP_STORE_MAX]) for i in range(0, len(message), ZNP_STORE_MAX)]
    return [*chunks, (len(message), b"")]


def retrieve_chunks(length: int) -> list[tuple[int, int]]:
    """The AF.DataRetrieve requests for a held message: (index, length), the last
    (length, 0) freeing it."""
    return [(i, min(ZNP_RETRIEVE_MAX, length - i)) for i in range(0, length, ZNP_RETRIEVE_MAX)] + [(length, 0)]


# -- the asyncio side --------------------------------------------------------------


def install_fragmentation(app: ControllerApplication) -> Callable[[], None]:
    """Send (and, for Z-Stack, receive) messages longer than one frame on ``app``, a
    started bellows or zigpy-znp app; the sim app and others are left alone (the sim
    fragments on its air). Returns the function that removes the layer."""
    if hasattr(app, "_ezsp"):
        ezsp = _EzspSender(app)
        remove_tx = _install(app, ezsp.send, ezsp.too_long)
        remove_rx = _mend_bellows_reassembly(app)

        def remove_ezsp() -> None:
            remove_tx()
            remove_rx()

        return remove_ezsp
    if hasattr(app, "_znp"):
        sender = _ZnpSender(app)
        remove_rx = sender.install_receiver()
        remove_tx = _install(app, sender.send, sender.too_long)

        def remove() -> None:
            remove_tx()
            remove_rx()

        return remove
    return lambda: None


def _install(app: Any, send: Callable[[zt.ZigbeePacket], Any], too_long: Callable[[zt.ZigbeePacket], bool]) -> Callable[[], None]:
    below = app.send_packet

    async def send_packet(packet: zt.ZigbeePacket) -> None:
        if too_long(packet):
            await send(packet)
        else:
            await below(packet)

    app.send_packet = send_packet

    def remove() -> None:
        if vars(app).get("send_packet") is send_packet:
            if getattr(below, "__self__", None) is app and getattr(below, "__func__", None) is type(app).send_packet:
                del app.send_packet
            else:
                app.send_packet = below

    return remove


class _EzspSender:
    """The host fragmentation library's sending half, through bellows' own EZSP calls."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._window: int | None = None

    def too_long(self, packet: zt.ZigbeePacket) -> bool:
        """A unicast the NCP would refuse whole (MESSAGE_TOO_LONG): EmberZNet's 82 bytes
        under NWK security (EMBER_AF_MAXIMUM_APS_PAYLOAD_LENGTH), less APS security."""
        if packet.dst is None or packet.dst.addr_mode not in (zt.AddrMode.NWK, zt.AddrMode.IEEE):
            return False
        secured = zt.TransmitOptions.APS_Encryption in packet.tx_options
        return len(packet.data.serialize()) > EZSP_LIMITS.max_payload(aps_encrypted=secured, relays=0)

    async def _window_size(self) -> int:
        if self._window is None:
            import bellows.types as t

            status, value = await self.app._ezsp.getConfigurationValue(
                configId=t.EzspConfigId.CONFIG_FRAGMENT_WINDOW_SIZE)
            ok = t.sl_Status.from_ember_status(status) == t.sl_Status.OK
            self._window = min(8, max(1, int(value))) if ok else 1
        return self._window

    async def _part_size(self, secured: bool) -> int:
        (length,) = await self.app._ezsp.maximumPayloadLength()
        return int(length) - (EZSP_LIMITS.aps_encryption_overhead if secured else 0) - EZSP_FRAGMENTATION_OVERHEAD

    async def send(self, packet: zt.ZigbeePacket) -> None:
        import bellows.types as t

        app = self.app
        nwk = packet.dst.address
        if packet.dst.addr_mode == zt.AddrMode.IEEE:
            device = app.get_device(ieee=packet.dst.address)
            nwk = device.nwk
        secured = zt.TransmitOptions.APS_Encryption in packet.tx_options
        options = (t.EmberApsOption.APS_OPTION_ENABLE_ROUTE_DISCOVERY | t.EmberApsOption.APS_OPTION_RETRY
                   | t.EmberApsOption.APS_OPTION_FRAGMENT)
        if secured:
            options |= t.EmberApsOption.APS_OPTION_ENCRYPTION
        blocks = ezsp_blocks(packet.data.serialize(), await self._part_size(secured))
        sequence = int(packet.tsn or 0)
        async with app._limit_concurrency(priority=packet.priority):
            for window in windows(blocks, await self._window_size()):
                confirmations = []
                for block in window:
                    aps = t.EmberApsFrame(
                        profileId=packet.profile_id, clusterId=packet.cluster_id, sourceEndpoint=packet.src_ep,
                        destinationEndpoint=packet.dst_ep or 0, options=options, groupId=block.group_id,
                        sequence=sequence,
                    )
                    tag = app.get_sequence()
                    key = (nwk, tag)
                    future = app._pending_requests[key] = asyncio.get_running_loop().create_future()
                    confirmations.append((key, future))
                    async with app._req_lock:
                        status, sent_as = await app._ezsp.send_unicast(
                            nwk=nwk, aps_frame=aps, message_tag=tag, data=block.data)
                    if status != t.sl_Status.OK:
                        self._forget(confirmations)
                        raise zigpy.exceptions.DeliveryError(
                            f"Failed to enqueue block {block.index + 1}/{block.count}: {status!r}", status)
                    sequence = int(sent_as)  # every block under the first one's APS counter
                try:
                    async with asyncio.timeout(EZSP_SEND_TIMEOUT_S):
                        results = [await future for _, future in confirmations]
                finally:
                    self._forget(confirmations)
                for (status, _), block in zip(results, window):
                    if t.sl_Status.from_ember_status(status) != t.sl_Status.OK:
                        raise zigpy.exceptions.DeliveryError(
                            f"Failed to deliver block {block.index + 1}/{block.count}: {status!r}", status)

    def _forget(self, confirmations: list[tuple[tuple[int, int], asyncio.Future[Any]]]) -> None:
        for key, future in confirmations:
            if self.app._pending_requests.get(key) is future:
                del self.app._pending_requests[key]


def _mend_bellows_reassembly(app: Any) -> Callable[[], None]:
    """bellows 1.2.1 reassembles incoming fragments (ezsp/protocol.py) with EZSP 13's
    field positions on every version: from EZSP 14 on, its ``result[4]`` (the sender) is
    the binding index and ``result[7]`` (the data) the RSSI, and the reassembled message
    fails to parse. On 14+ fragmented incomingMessageHandler frames are taken before
    bellows' own handling and reassembled and acked with bellows' own FragmentManager and
    ``_send_fragment_ack``, by field name; everything else goes to bellows untouched."""
    ezsp = app._ezsp
    protocol = getattr(ezsp, "_protocol", None)
    if protocol is None or getattr(ezsp, "ezsp_version", 0) < 14 or not hasattr(protocol, "_fragment_manager"):
        return lambda: None
    mended = _V14Reassembly(protocol)
    ezsp._protocol = mended

    def remove() -> None:
        if ezsp._protocol is mended:
            ezsp._protocol = protocol
        mended.close()

    return remove


class _V14Reassembly:
    """bellows' EZSP 14+ protocol object with incoming fragments reassembled by name
    (see `_mend_bellows_reassembly`); any other attribute is the protocol's own."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._incoming_id, _, self._rx_schema = protocol.COMMANDS["incomingMessageHandler"]
        self._acks: set[asyncio.Task[Any]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol, name)

    def close(self) -> None:
        for task in list(self._acks):
            task.cancel()

    def __call__(self, data: bytes) -> None:
        import bellows.types as t

        protocol = self._protocol
        _, frame_id, params = protocol._ezsp_frame_rx(data)
        if frame_id != self._incoming_id:
            return protocol(data)
        result, _ = t.deserialize_dict(params, self._rx_schema)
        aps = result["aps_frame"]
        if not aps.options & t.EmberApsOption.APS_OPTION_FRAGMENT:
            return protocol(data)
        nwk = result["nwk"]
        complete, whole, count, index = protocol._fragment_manager.handle_incoming_fragment(
            sender_nwk=nwk, aps_sequence=aps.sequence, profile_id=aps.profileId, cluster_id=aps.clusterId,
            fragment_count=(aps.groupId >> 8) & 0xFF, fragment_index=aps.groupId & 0xFF, payload=result["message"],
        )
        ack = asyncio.get_running_loop().create_task(protocol._send_fragment_ack(nwk, aps, count, index))
        self._acks.add(ack)
        ack.add_done_callback(self._ack_done)
        if complete:
            result["message"] = whole
            protocol._handle_callback("incomingMessageHandler", list(result.values()))
        return None

    def _ack_done(self, task: asyncio.Task[Any]) -> None:
        self._acks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.warning("EZSP: a fragment ack failed: %s", task.exception())


class _ZnpSender:
    """TI's host side of huge AF messages, through zigpy-znp's own request API."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._store = asyncio.Lock()  # the stack holds one outgoing buffer
        self._tasks: set[asyncio.Task[None]] = set()

    def too_long(self, packet: zt.ZigbeePacket) -> bool:
        return packet.dst is not None and packet.dst_ep != 0 and len(packet.data.serialize()) > ZNP_MAX_INLINE

    async def send(self, packet: zt.ZigbeePacket) -> None:
        import zigpy_znp.commands as c
        import zigpy_znp.types as t

        app = self.app
        if packet.dst.addr_mode not in (zt.AddrMode.NWK, zt.AddrMode.IEEE):
            raise zigpy.exceptions.DeliveryError(f"{len(packet.data.serialize())} bytes: too long for a broadcast")
        options = c.af.TransmitOptions.SUPPRESS_ROUTE_DISC_NETWORK
        if zt.TransmitOptions.ACK in packet.tx_options:
            options |= c.af.TransmitOptions.ACK_REQUEST
        if zt.TransmitOptions.APS_Encryption in packet.tx_options:
            options |= c.af.TransmitOptions.ENABLE_SECURITY
        data = packet.data.serialize()
        huge = _huge(len(data), t)
        request = c.AF.DataRequestExt.Req(
            DstAddrModeAddress=t.AddrModeAddress.from_zigpy_type(packet.dst), DstEndpoint=packet.dst_ep or 0,
            DstPanId=0x0000, SrcEndpoint=app._find_endpoint(dst_ep=packet.dst_ep, profile=packet.profile_id,
                                                           cluster=packet.cluster_id),
            ClusterId=packet.cluster_id, TSN=packet.tsn, Options=options, Radius=packet.radius or 0, Data=huge,
        )
        try:
            async with app._limit_concurrency(priority=packet.priority), self._store:
                await app._znp.request(request, RspStatus=t.Status.SUCCESS)
                *stores, (end, _) = store_chunks(data)
                for index, chunk in stores:
                    await app._znp.request(c.AF.DataStore.Req(Index=index, Data=chunk), RspStatus=t.Status.SUCCESS)
                async with asyncio.timeout(ZNP_CONFIRM_TIMEOUT_S):
                    confirm = await app._znp.request_callback_rsp(
                        request=c.AF.DataStore.Req(Index=end, Data=b""), RspStatus=t.Status.SUCCESS,
                        callback=c.AF.DataConfirm.Callback(partial=True, TSN=packet.tsn),
                    )
        except Exception as exc:
            if isinstance(exc, zigpy.exceptions.DeliveryError):
                raise
            raise zigpy.exceptions.DeliveryError(f"Failed to send a {len(data)}-byte request: {exc}") from exc
        if confirm.Status != t.Status.SUCCESS:
            raise zigpy.exceptions.DeliveryError(f"Failed to send request: {confirm.Status!r}", status=confirm.Status)

    def install_receiver(self) -> Callable[[], None]:
        import zigpy_znp.commands as c

        znp = self.app._znp
        below = znp.frame_received
        header = c.AF.IncomingMsgExt.Callback.header

        def frame_received(frame: Any) -> bool | None:
            if frame.header != header:
                return below(frame)
            self._spawn(self._incoming_ext(bytes(frame.data)))
            return True

        znp.frame_received = frame_received

        def remove() -> None:
            if vars(znp).get("frame_received") is frame_received:
                del znp.frame_received
            for task in list(self._tasks):
                task.cancel()

        return remove

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="znp: huge incoming message")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("ZNP: a long incoming message failed", exc_info=task.exception())

    async def _incoming_ext(self, payload: bytes) -> None:
        """An AF.IncomingMsgExt: read its fields, fetch a held message's data, and hand
        it to zigpy-znp's ``on_af_message`` as the AF.IncomingMsg it would have been."""
        import zigpy_znp.commands as c
        import zigpy_znp.types as t

        try:
            fields, length, held = parse_incoming_ext(payload)
        except FragmentationError as exc:
            LOGGER.warning("ZNP: AF.IncomingMsgExt dropped: %s", exc)
            return
        data = fields.pop("Data")
        if held:
            parts = []
            try:
                for index, size in retrieve_chunks(length):
                    rsp = await self.app._znp.request(
                        c.AF.DataRetrieve.Req(TimeStamp=fields["TimeStamp"], Index=index, Length=size),
                        RspStatus=t.Status.SUCCESS)
                    parts.append(bytes(rsp.Data))
            except Exception as exc:  # noqa: BLE001 - a lost message, not a crash
                LOGGER.warning("ZNP: a %d-byte incoming message could not be retrieved: %s", length, exc)
                return
            data = b"".join(parts)
        source = fields.pop("SrcAddrModeAddress")
        if source.mode != t.AddrMode.NWK:
            with contextlib.suppress(KeyError):
                source = t.AddrModeAddress(mode=t.AddrMode.NWK, address=self.app.get_device(ieee=source.address).nwk)
        if source.mode != t.AddrMode.NWK:
            LOGGER.warning("ZNP: AF.IncomingMsgExt from unknown %s dropped", source)
            return
        fields.pop("SrcPanId")
        fields["SecurityUse"] = bool(fields["SecurityUse"])  # a uint8 here, a Bool in IncomingMsg
        # The AF.IncomingMsg it stands for: only read by on_af_message, and one zigpy-znp
        # could not build (its Data is a one-byte-length field)
        message = types.SimpleNamespace(SrcAddr=source.address, Data=data, **fields)
        await self.app.on_af_message(message)


def _huge(length: int, t: Any) -> Any:
    """AF.DataRequestExt's Data for a stored message: the length, none of the bytes."""

    class HugeData(t.LongBytes):  # type: ignore[misc, name-defined]
        def serialize(self) -> bytes:
            return length.to_bytes(2, "little")

    return HugeData(b"")


def parse_incoming_ext(payload: bytes) -> tuple[dict[str, Any], int, bool]:
    """AF.IncomingMsgExt's fields by zigpy-znp's schema; the data field may hold only
    its length (a held message). Returns (fields, data length, held)."""
    import zigpy_znp.commands as c
    import zigpy_znp.types as t

    fields: dict[str, Any] = {}
    rest = payload
    length = 0
    held = False
    for param in c.AF.IncomingMsgExt.Callback.schema:
        offset = len(payload) - len(rest)
        try:
            if param.name == "Data":
                length, after = t.uint16_t.deserialize(rest)
                # Held: what follows the length is exactly the two trailing fields
                held = length > 0 and len(after) == 3
                fields["Data"], rest = (b"", after) if held else (after[:length], after[length:])
                if not held and len(after) < length:
                    raise ValueError(f"{length} bytes announced, {len(after)} present")
            else:
                fields[param.name], rest = param.type.deserialize(rest)
        except ValueError as exc:
            raise FragmentationError(f"AF.IncomingMsgExt: field {param.name} at offset {offset}: {exc}") from exc
    if rest:
        raise FragmentationError(f"AF.IncomingMsgExt: {len(rest)} bytes after the last field at offset {len(payload) - len(rest)}")
    return fields, length, held
