"""Messages longer than one MT frame through the emulated Z-Stack ("huge" AF data).

Z-Stack fragments on the air itself (its APS; our air does it in radios/sim/han.py);
only the MT frame, 250 bytes of payload, is too small for a long message, so MT_AF
carries it in pieces (Z-Stack mt/MT_AF.c, and TI's own host for it, ZAP's zap_af.c
``AF_DataRequest`` / ``afStore`` / ``afRetrieve``, which this follows):

* Outgoing: ``AF_DATA_REQUEST_EXT`` whose length field announces more than one frame
  carries (MT_RPC_DATA_MAX - 20) and no data: the stack keeps the request and answers
  SUCCESS; ``AF_DATA_STORE`` (index, up to 247 bytes) writes the data into it; an
  ``AF_DATA_STORE`` of length 0 sends it, and the store's SRSP carries the data
  request's status; ``AF_DATA_CONFIRM`` follows as for any request.
* Incoming: a message that does not fit ``AF_INCOMING_MSG`` goes to the host as
  ``AF_INCOMING_MSG_EXT`` with its length and no data bytes; the stack holds it, keyed
  by the message's timestamp, for ``AF_DATA_RETRIEVE`` (timestamp, index, length up to
  248); a retrieve of length 0 frees it.

Not modelled: the ageing of held messages (MT_AF_EXEC_CNT ticks) and what the stack
answers to a second huge request while one is stored (refused here).
"""

from __future__ import annotations

import logging
from typing import Any

import zigpy.types as t
import zigpy_znp.commands as c
import zigpy_znp.types as zt

from . import mt

LOGGER = logging.getLogger(__name__)

#: What one AF.DataRequestExt carries in its own frame (250 less its 20 bytes of fields)
MAX_INLINE_REQUEST = mt.MAX_DATA_LEN - 20
MAX_STORE = mt.MAX_DATA_LEN - 3
MAX_RETRIEVE = mt.MAX_DATA_LEN - 2
_REQUEST_EXT_HEADER = int(c.AF.DataRequestExt.Req.header)


class HugeMessages:
    """The coordinator's one stored outgoing request and its held incoming messages."""

    def __init__(self, coordinator: Any) -> None:  # the ZnpCoordinator (coordinator.py imports this module)
        self.coordinator = coordinator
        self._request: dict[str, Any] | None = None  # the announced request's fields
        self._length = 0
        self._data = bytearray()
        self._held: dict[int, bytes] = {}

    # -- outgoing ----------------------------------------------------------------------

    def take_request(self, frame: mt.MtFrame) -> bool:
        """An AF.DataRequestExt announcing a huge message (no data): keep it, answer it.
        False for any other frame (it goes through the normal dispatch)."""
        if frame.header != _REQUEST_EXT_HEADER or frame.type != mt.CmdType.SREQ:
            return False
        fields, rest = {}, frame.data
        for param in c.AF.DataRequestExt.Req.schema:
            if param.name == "Data":
                break
            try:
                fields[param.name], rest = param.type.deserialize(rest)
            except ValueError:
                return False  # the normal dispatch refuses it, naming the problem
        if len(rest) != 2:
            return False  # the data is there: an ordinary request
        length = int.from_bytes(rest, "little")
        if length <= MAX_INLINE_REQUEST:
            return False
        coordinator = self.coordinator
        coordinator.requests["AF.DataRequestExt"] += 1
        if self._request is not None:
            LOGGER.warning("ZNP emulator: a huge AF.DataRequestExt while one is stored: refused")
            status = zt.Status.FAILURE
        else:
            self._request, self._length, self._data = fields, length, bytearray(length)
            status = zt.Status.SUCCESS
        coordinator.send(c.AF.DataRequestExt.Rsp(Status=status))
        return True

    def data_store(self, req: Any) -> Any:
        """AF.DataStore: a piece of the stored request's data; length 0 sends it."""
        Rsp = c.AF.DataStore.Rsp
        if self._request is None:
            return Rsp(Status=zt.Status.FAILURE)
        data, index = bytes(req.Data), int(req.Index)
        if data:
            if index + len(data) > self._length:
                return Rsp(Status=zt.Status.INVALID_PARAMETER)
            self._data[index : index + len(data)] = data
            return Rsp(Status=zt.Status.SUCCESS)
        fields, payload = self._request, bytes(self._data)
        self._request, self._data = None, bytearray()
        # The stored request goes out as the ordinary one it stands for
        rsp = self.coordinator._af_data_request(c.AF.DataRequestExt.Req(**fields, Data=zt.LongBytes(payload)))
        return Rsp(Status=rsp.Status)

    # -- incoming ----------------------------------------------------------------------

    def hold(self, packet: t.ZigbeePacket, *, src_nwk: int, group: int, broadcast: bool, data: bytes,
             timestamp: int, tsn: int, mac_src: int, radius: int) -> None:
        """A message too long for AF.IncomingMsg: AF.IncomingMsgExt without its data
        (the other fields as the coordinator fills AF.IncomingMsg's)."""
        timestamp &= 0xFFFFFFFF
        while timestamp in self._held:  # the host names a held message by its timestamp
            timestamp = (timestamp + 1) & 0xFFFFFFFF
        self._held[timestamp] = data
        announce = c.AF.IncomingMsgExt.Callback(
            GroupId=group, ClusterId=packet.cluster_id,
            SrcAddrModeAddress=zt.AddrModeAddress(mode=zt.AddrMode.NWK, address=src_nwk),
            SrcEndpoint=packet.src_ep, SrcPanId=self.coordinator.nib.nwkPanId, DstEndpoint=packet.dst_ep,
            WasBroadcast=broadcast, LQI=packet.lqi if packet.lqi is not None else 200,
            SecurityUse=int(t.TransmitOptions.APS_Encryption in packet.tx_options), TimeStamp=timestamp,
            TSN=tsn, Data=zt.LongBytes(b""), MacSrcAddr=mac_src, MsgResultRadius=radius,
        )
        frame = mt.encode(announce)
        # The data field: its length, none of its bytes (then MacSrcAddr and the radius)
        body = frame.data[:-5] + len(data).to_bytes(2, "little") + frame.data[-3:]
        self.coordinator._send_frame(mt.MtFrame(cmd0=frame.cmd0, cmd1=frame.cmd1, data=body))

    def data_retrieve(self, req: Any) -> Any:
        """AF.DataRetrieve: a piece of a held message; length 0 frees it."""
        Rsp = c.AF.DataRetrieve.Rsp
        held = self._held.get(int(req.TimeStamp))
        if held is None:
            return Rsp(Status=zt.Status.FAILURE, Data=zt.ShortBytes(b""))
        if int(req.Length) == 0:
            del self._held[int(req.TimeStamp)]
            return Rsp(Status=zt.Status.SUCCESS, Data=zt.ShortBytes(b""))
        if int(req.Length) > MAX_RETRIEVE:
            return Rsp(Status=zt.Status.INVALID_PARAMETER, Data=zt.ShortBytes(b""))
        index = int(req.Index)
        return Rsp(Status=zt.Status.SUCCESS, Data=zt.ShortBytes(held[index : index + int(req.Length)]))


__all__ = ["HugeMessages", "MAX_INLINE_REQUEST", "MAX_RETRIEVE", "MAX_STORE"]
