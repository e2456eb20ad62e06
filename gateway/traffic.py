"""The hub's measure of background HAN traffic (issue 15 part 2), sans-I/O.

Two kinds of background message, each measured the only way a hub can, from the bytes
and its own clock:

* ``metering``: a device's stamped Metering (0x0702) report. The bench's layout (the
  simulated meter's, radios/sim/traffic.py; written here again from that layout, as
  the hub never imports the simulator): a manufacturer-specific Report Attributes,
  server to client, with records 0x0000 uint32 (the flow's sequence number), 0x0001
  uint48 (its wall-clock send time in ms) and 0x0002 octet string (padding). Latency
  is the hub's receive time less the stamp; every sequence number skipped is a lost
  report (one that never arrived after the last one heard is not seen: loss at the end
  of a run is undercounted by at most one per device).
* ``price``: a Price (0x0700) PublishPrice the hub sends; latency is from handing it to
  the radio until the radio's confirmation (the APS ack), loss is a delivery failure.
* ``tunnel``: a GBCS-sized message the hub sends over the device's GBCS tunnel
  (gateway/tunnel); latency is until the tunnel's acknowledgement (the TransferData
  frames confirmed), loss is a message the tunnel could not carry in time. The bytes
  (`tunnel_message`) are a bench marker, not a GBCS command: the device only keeps them.

`StampedReport.parse` refuses bad bytes with the field and offset; `is_stamped_report`
says whether a frame is meant to be one (so any other Metering frame passes by).
`TrafficMeter` turns reports and price outcomes into `Sample`s, the daemon writes each
as a ``traffic.sample`` audit record (gateway/report reads them).
"""

from __future__ import annotations

from dataclasses import dataclass
import struct
from typing import Final

__all__ = [
    "CLUSTER_METERING",
    "CLUSTER_PRICE",
    "KINDS",
    "MIN_SIZE",
    "BackgroundFrameError",
    "Sample",
    "StampedReport",
    "TrafficMeter",
    "is_stamped_report",
    "publish_price",
    "tunnel_message",
]

CLUSTER_PRICE: Final = 0x0700
CLUSTER_METERING: Final = 0x0702
KINDS: Final = ("metering", "price", "tunnel")

_METERING_HEADER = struct.Struct("<BHBB")  # frame control, manufacturer, TSN, command
_RECORDS: Final = ((0x0000, 0x23, 4, "sequence"), (0x0001, 0x25, 6, "sent_at_ms"))
_PADDING_ID: Final = 0x0002
_REPORT_ATTRIBUTES: Final = 0x0A
_FC_MANUFACTURER: Final = 0x04
_FC_SERVER_TO_CLIENT: Final = 0x08

# PublishPrice (SE 1.4 D.4.2.4.1) mandatory fields after the ZCL header, the rate label
# (octet string, at most 12) apart: provider id 4, issuer event id 4, current time 4,
# unit of measure 1, currency 2, trailing digit/tier 1, tiers/register tier 1, start
# time 4, duration 2, price 4.
_PRICE_FIXED: Final = 3 + 4 + 1 + 4 + 4 + 1 + 2 + 1 + 1 + 4 + 2 + 4  # 31 with an empty label
_RATE_LABEL_MAX: Final = 12
_TUNNEL_MARK: Final = b"BENCH-TUNNEL"
MIN_SIZE: Final = {"metering": 25, "price": _PRICE_FIXED, "tunnel": len(_TUNNEL_MARK) + 4}
#: The metering report's padding is one octet string; a GBCS message on the tunnel may
#: be as long as a GBCS command the tunnel carries in one TransferData (1200 here).
MAX_SIZE: Final = {"metering": 279, "price": 279, "tunnel": 1200}


class BackgroundFrameError(ValueError):
    """A background frame that cannot be read: the field and its offset."""

    def __init__(self, field: str, offset: int, reason: str) -> None:
        super().__init__(f"stamped Metering report: {field} at offset {offset}: {reason}")
        self.field = field
        self.offset = offset


def is_stamped_report(cluster: int, data: bytes) -> bool:
    """A manufacturer-specific Report Attributes from a Metering server: the bench's form."""
    return (
        cluster == CLUSTER_METERING
        and len(data) >= 5
        and data[0] & 0x03 == 0x00
        and data[0] & (_FC_MANUFACTURER | _FC_SERVER_TO_CLIENT) == _FC_MANUFACTURER | _FC_SERVER_TO_CLIENT
        and data[4] == _REPORT_ATTRIBUTES
    )


@dataclass(frozen=True)
class StampedReport:
    sequence: int
    sent_at_ms: int

    @classmethod
    def parse(cls, data: bytes) -> StampedReport:
        if len(data) < _METERING_HEADER.size:
            raise BackgroundFrameError("ZCL header", len(data), f"{len(data)} bytes, expected {_METERING_HEADER.size}")
        offset = _METERING_HEADER.size
        values: list[int] = []
        for attr, type_id, width, name in _RECORDS:
            if len(data) < offset + 3 + width:
                raise BackgroundFrameError(name, offset, f"truncated: {len(data) - offset} bytes left, expected {3 + width}")
            got_attr, got_type = struct.unpack_from("<HB", data, offset)
            if got_attr != attr or got_type != type_id:
                raise BackgroundFrameError(name, offset, f"record 0x{got_attr:04X} type 0x{got_type:02X}, expected 0x{attr:04X} type 0x{type_id:02X}")
            values.append(int.from_bytes(data[offset + 3 : offset + 3 + width], "little"))
            offset += 3 + width
        if offset != len(data):
            # The padding record: an octet string that ends the frame exactly.
            if len(data) < offset + 4 or struct.unpack_from("<HB", data, offset) != (_PADDING_ID, 0x41):
                raise BackgroundFrameError("padding", offset, "expected record 0x0002 type 0x41 (octet string)")
            if offset + 4 + data[offset + 3] != len(data):
                raise BackgroundFrameError("padding", offset + 3, f"length {data[offset + 3]} leaves {len(data) - offset - 4} bytes")
        return cls(values[0], values[1])


def publish_price(tsn: int, issuer_event_id: int, size: int, now_utc: int) -> bytes:
    """A PublishPrice of ``size`` bytes (server to client, no default response asked):
    the rate label takes up to 12 bytes, the optional fields after it the rest (zero)."""
    if not MIN_SIZE["price"] <= size <= MAX_SIZE["price"]:
        raise ValueError(f"publish_price: size {size} outside {MIN_SIZE['price']}..{MAX_SIZE['price']}")
    label = min(size - _PRICE_FIXED, _RATE_LABEL_MAX)
    optional = size - _PRICE_FIXED - label
    zcl_time = (now_utc - 946684800) & 0xFFFFFFFF  # UTCTime counts from 2000-01-01
    return (
        struct.pack("<BBB", 0x01 | _FC_SERVER_TO_CLIENT | 0x10, tsn & 0xFF, 0x00)
        + struct.pack("<IB", 1, label) + b"BENCH-RATE-1"[:label]
        + struct.pack("<IIBHBBIHI", issuer_event_id & 0xFFFFFFFF, zcl_time, 0x00, 826, 0x21, 0x11, 0, 0xFFFF, 1500)
        + bytes(optional)
    )


def tunnel_message(seq: int, size: int) -> bytes:
    """``size`` bytes for the tunnel: the bench's mark, the sequence number, padding."""
    if not MIN_SIZE["tunnel"] <= size <= MAX_SIZE["tunnel"]:
        raise ValueError(f"tunnel_message: size {size} outside {MIN_SIZE['tunnel']}..{MAX_SIZE['tunnel']}")
    return _TUNNEL_MARK + struct.pack(">I", seq & 0xFFFFFFFF) + bytes(size - MIN_SIZE["tunnel"])


@dataclass(frozen=True)
class Sample:
    """One background message's fate: its latency, or None for a lost one."""

    device: str
    kind: str
    latency_ms: float | None
    seq: int


class TrafficMeter:
    """Background messages in, samples out. Time is an argument (ms, the hub's clocks)."""

    def __init__(self) -> None:
        self._last_seq: dict[str, int] = {}

    def report(self, device: str, report: StampedReport, received_ms: float) -> list[Sample]:
        """A stamped report heard: its sample, after one lost sample per skipped sequence
        number. A sequence at or below the last one (a restarted simulator) starts over."""
        out: list[Sample] = []
        last = self._last_seq.get(device)
        if last is not None and report.sequence > last + 1:
            out.extend(Sample(device, "metering", None, seq) for seq in range(last + 1, report.sequence))
        self._last_seq[device] = report.sequence
        out.append(Sample(device, "metering", max(0.0, received_ms - report.sent_at_ms), report.sequence))
        return out

    @staticmethod
    def confirmed(device: str, kind: str, seq: int, sent_ms: float, confirmed_ms: float, delivered: bool) -> Sample:
        """A message the hub sent (price, tunnel): timed to its confirmation, or lost."""
        return Sample(device, kind, max(0.0, confirmed_ms - sent_ms) if delivered else None, seq)
