"""The coordinator's own ZDO: what a coordinator's stack answers about itself.

Three coordinators sit in front of a `SimHan`: the sim ControllerApplication
(radios/sim/app.py), the EmberZNet NCP emulator (radios/emulate/ezsp/) and the Z-Stack
emulator (radios/emulate/znp/). In each, the stack (not the host) answers some ZDO
requests addressed to the coordinator: descriptors, addresses, Match_Desc, Mgmt_*.
Those answers are built here, once, from the ZDO specification (Zigbee 05-3474,
2.4.3 requests and 2.4.4 responses). Where a stack answers otherwise, the difference is
a field of `StackQuirks`, and each family has its instance below (`EMBERZNET`,
`ZSTACK`, `SIM`), so the three can be compared in one place.

Theory of operation (sans-I/O: no sockets, clocks or tasks):

* `answer(cluster_id, payload, coordinator, quirks, broadcast=...)` reads one request
  (`parse_request`: a typed `ZdoRequest`, or `MalformedZdo` naming field and offset)
  and returns an `Answer`: whether the stack handles it (`Handling`), the reply frame
  or ``None`` (silence is an answer too: a broadcast about someone else, a Match_Desc
  broadcast without a match), and the effects the caller applies to the stack
  (`PermitJoining`, `ChangeChannel`) *before* it sends the reply.
* `Coordinator` is what the stack knows about itself when the request arrives: its
  addresses, its registered endpoints, its neighbour table and (if it can) an energy
  scan. The module keeps no state between calls.
* The caller keeps the transport: where the reply goes and when, whether the host also
  sees the request (EmberZNet passes a copy, by configuration), responses and empty
  frames (never answered, so `answer` refuses them as a caller error).

Frames are read and built with zigpy's ZDO schemas (``zigpy.zdo.types.CLUSTERS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import enum
from typing import Any, Final

import zigpy.types as t
import zigpy.zdo.types as zdo_t

__all__ = [
    "EMBERZNET",
    "SIM",
    "ZSTACK",
    "Answer",
    "ChangeChannel",
    "Coordinator",
    "Effect",
    "EnergyScan",
    "Endpoint",
    "Handling",
    "IMPLEMENTED",
    "MalformedZdo",
    "PermitJoining",
    "StackQuirks",
    "ZdoFrame",
    "ZdoRequest",
    "answer",
    "node_descriptor",
    "parse_request",
]

C = zdo_t.ZDOCmd
Status = zdo_t.Status

#: The broadcast addresses (05-3474 3.6.5): all, rx-on-when-idle, routers, low-power routers.
BROADCAST_NWKS: Final = frozenset({0xFFFF, 0xFFFD, 0xFFFC, 0xFFFB})
WILDCARD_PROFILE: Final = 0xFFFF

#: Requests naming a NWKAddrOfInterest first, answered with status + that address when
#: it is not ours (2.4.4.2: DEVICE_NOT_FOUND).
_DESCRIPTOR_REQUESTS: Final = frozenset(
    {C.Node_Desc_req, C.Power_Desc_req, C.Simple_Desc_req, C.Active_EP_req, C.Match_Desc_req}
)


#: Every request `answer` can build a reply (or an effect) for.
IMPLEMENTED: Final = _DESCRIPTOR_REQUESTS | frozenset(
    {
        C.NWK_addr_req,
        C.IEEE_addr_req,
        C.Mgmt_Lqi_req,
        C.Mgmt_Rtg_req,
        C.Mgmt_Bind_req,
        C.Mgmt_Permit_Joining_req,
        C.Mgmt_NWK_Update_req,
        C.Bind_req,
        C.Unbind_req,
    }
)


class MalformedZdo(ValueError):
    """A ZDO frame the stack cannot read as a request: names the command, field and offset."""


@dataclasses.dataclass(frozen=True, slots=True)
class ZdoRequest:
    """One parsed request: the command, its transaction number and its fields (zigpy types)."""

    command: zdo_t.ZDOCmd
    tsn: int
    args: tuple[Any, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class ZdoFrame:
    """A ZDO frame the stack sends: cluster and APS payload (TSN first)."""

    cluster_id: int
    tsn: int
    body: bytes

    @property
    def payload(self) -> bytes:
        return bytes((self.tsn,)) + self.body


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint the host registered with the stack (EZSP addEndpoint, AF.Register, zigpy's add_endpoint)."""

    endpoint: int
    profile: int
    device_type: int
    device_version: int
    input_clusters: tuple[int, ...]
    output_clusters: tuple[int, ...]

    @classmethod
    def from_descriptor(cls, descriptor: zdo_t.SimpleDescriptor) -> Endpoint:
        return cls(
            endpoint=int(descriptor.endpoint),
            profile=int(descriptor.profile),
            device_type=int(descriptor.device_type),
            device_version=int(descriptor.device_version),
            input_clusters=tuple(int(c) for c in descriptor.input_clusters),
            output_clusters=tuple(int(c) for c in descriptor.output_clusters),
        )

    def simple_descriptor(self) -> zdo_t.SizePrefixedSimpleDescriptor:
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=self.endpoint,
            profile=self.profile,
            device_type=self.device_type,
            device_version=self.device_version,
            input_clusters=list(self.input_clusters),
            output_clusters=list(self.output_clusters),
        )

    def matches(self, profile: int, in_clusters: Sequence[int], out_clusters: Sequence[int], *, wildcard: bool) -> bool:
        """2.4.4.2.7: same profile, and one of the requester's clusters on the matching side."""
        if profile != self.profile and not (wildcard and profile == WILDCARD_PROFILE):
            return False
        return bool(set(in_clusters) & set(self.input_clusters) or set(out_clusters) & set(self.output_clusters))


@dataclasses.dataclass(frozen=True, slots=True)
class EnergyScan:
    """A Mgmt_NWK_Update energy scan's result (2.4.4.3.9): counters and one energy per channel."""

    total_transmissions: int
    transmission_failures: int
    energies: tuple[int, ...]


def _no_neighbors() -> Sequence[zdo_t.Neighbor]:
    return ()


def _no_energy_scan(channels: t.Channels) -> EnergyScan | None:
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Coordinator:
    """What the stack knows about itself when a request arrives.

    ``endpoints`` keeps the host's registration order (`StackQuirks.match_in_registration_order`).
    ``energy_scan`` returning ``None`` leaves an energy scan request unanswered.
    """

    nwk: int
    ieee: t.EUI64
    endpoints: Mapping[int, Endpoint]
    manufacturer_code: int = 0
    neighbors: Callable[[], Sequence[zdo_t.Neighbor]] = _no_neighbors
    energy_scan: Callable[[t.Channels], EnergyScan | None] = _no_energy_scan


@dataclasses.dataclass(frozen=True, slots=True)
class PermitJoining:
    """Mgmt_Permit_Joining_req: open the network for ``duration`` seconds (0 closes it)."""

    duration: int


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeChannel:
    """Mgmt_NWK_Update_req with ScanDuration 0xFE naming one channel: move the network there."""

    channel: int


Effect = PermitJoining | ChangeChannel


class Handling(enum.Enum):
    HANDLED = "handled"  # the stack handles the request (the reply may still be None)
    UNSUPPORTED = "unsupported"  # not one the stack answers
    MALFORMED = "malformed"  # unreadable: `Answer.error` says why


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    handling: Handling
    reply: ZdoFrame | None = None
    effects: tuple[Effect, ...] = ()
    command: zdo_t.ZDOCmd | None = None
    error: str | None = None

    @property
    def supported(self) -> bool:
        return self.handling is Handling.HANDLED


@dataclasses.dataclass(frozen=True, slots=True)
class StackQuirks:
    """How one coordinator stack's ZDO differs from the specification, or from its peers.

    Each field names one difference; the docstrings of the instances below say where a
    value comes from.
    """

    name: str
    #: requests the stack answers itself; others are UNSUPPORTED
    answers: frozenset[zdo_t.ZDOCmd]
    #: of those, the ones still answered when the request was broadcast (the rest
    #: only take effect, as a permit-join broadcast does)
    broadcast_answers: frozenset[zdo_t.ZDOCmd]
    #: node descriptor fields that differ between stacks (2.3.2.3)
    max_buffer_size: int
    max_transfer_size: int
    server_mask: int
    #: a unicast request the stack does not answer gets status NOT_SUPPORTED (else silence:
    #: the host answers it)
    refuses_unsupported: bool
    #: the same for an unreadable request (it needs at least a TSN to be answered)
    refuses_malformed: bool
    #: descriptor requests about another node: DEVICE_NOT_FOUND (unicast) or silence
    #: (broadcast), as 2.4.4.2 says; when False they are answered about the coordinator
    checks_nwk_of_interest: bool
    #: NWK_addr_req / IEEE_addr_req about another node go unanswered (2.4.3.1.1-2); when
    #: False the coordinator answers with its own addresses
    checks_address_of_interest: bool
    #: NWKAddrOfInterest values IEEE_addr_req and Match_Desc_req take as "anyone"
    broadcast_nwks: frozenset[int]
    #: Match_Desc_req with profile 0xFFFF matches every endpoint's profile
    wildcard_profile: bool
    #: Match_Desc_rsp lists endpoints in the host's registration order (else ascending)
    match_in_registration_order: bool
    #: Simple_Desc_rsp with a failure status still carries Length = 0 (2.4.4.2.5)
    simple_desc_failure_length: bool
    #: NWK_addr_rsp / IEEE_addr_rsp always carry NumAssocDev = 0, StartIndex = 0 and an
    #: empty list (the extended form), whatever the RequestType; else only status and
    #: addresses (the single-device form of 2.4.4.2.1)
    address_rsp_assoc_fields: bool
    #: neighbour table entries per Mgmt_Lqi_rsp
    lqi_page: int

    def __post_init__(self) -> None:
        unknown = self.answers - IMPLEMENTED
        if unknown:
            raise ValueError(f"StackQuirks {self.name!r}: no answer is built for {sorted(c.name for c in unknown)}")
        if not self.broadcast_answers <= self.answers:
            raise ValueError(f"StackQuirks {self.name!r}: broadcast_answers must be a subset of answers")
        if C.Mgmt_Lqi_req in self.answers and self.lqi_page < 1:
            raise ValueError(f"StackQuirks {self.name!r}: answers Mgmt_Lqi_req with lqi_page={self.lqi_page}")


_EMBER_ANSWERS: Final = frozenset(
    {C.NWK_addr_req, C.IEEE_addr_req, C.Node_Desc_req, C.Power_Desc_req, C.Simple_Desc_req, C.Active_EP_req, C.Match_Desc_req}
)

EMBERZNET: Final = StackQuirks(
    # The NCP's stack answers these itself even when the host asks for copies
    # (CONFIG_APPLICATION_ZDO_FLAGS; radios/emulate/ezsp/ncp.py passes them on), and
    # leaves every other request to the host, silently. The stack only knows about
    # itself: its node descriptor and the endpoints the host registered with
    # ``addEndpoint``.
    name="EmberZNet",
    answers=_EMBER_ANSWERS,
    broadcast_answers=_EMBER_ANSWERS,
    max_buffer_size=82,
    max_transfer_size=128,
    # Primary trust center, network manager, stack compliance revision 22
    server_mask=0x2C41,
    refuses_unsupported=False,
    refuses_malformed=False,
    checks_nwk_of_interest=True,
    checks_address_of_interest=True,
    broadcast_nwks=BROADCAST_NWKS,
    wildcard_profile=True,
    match_in_registration_order=False,
    simple_desc_failure_length=False,
    address_rsp_assoc_fields=True,
    lqi_page=0,  # Mgmt_Lqi_req goes to the host
)

ZSTACK: Final = StackQuirks(
    # Z-Stack's ZDO answers the requests addressed to the coordinator itself; what the
    # emulator does not implement is refused with NOT_SUPPORTED (and recorded as a gap by
    # radios/emulate/znp/coordinator.py). A broadcast only takes effect (permit joining,
    # channel change); of broadcasts, only the address requests are answered.
    name="Z-Stack",
    answers=frozenset(
        {
            C.NWK_addr_req,
            C.IEEE_addr_req,
            C.Node_Desc_req,
            C.Active_EP_req,
            C.Simple_Desc_req,
            C.Match_Desc_req,
            C.Mgmt_Lqi_req,
            C.Mgmt_Rtg_req,
            C.Mgmt_Bind_req,
            C.Mgmt_Permit_Joining_req,
            C.Mgmt_NWK_Update_req,
        }
    ),
    broadcast_answers=frozenset({C.NWK_addr_req, C.IEEE_addr_req}),
    max_buffer_size=0x50,
    max_transfer_size=160,
    server_mask=0x2C41,
    refuses_unsupported=True,
    refuses_malformed=True,
    checks_nwk_of_interest=False,
    checks_address_of_interest=True,
    broadcast_nwks=frozenset({0xFFFF, 0xFFFD, 0xFFFC}),
    wildcard_profile=False,
    match_in_registration_order=True,
    simple_desc_failure_length=True,
    address_rsp_assoc_fields=True,
    lqi_page=3,
)

SIM: Final = StackQuirks(
    # The sim radio answers what zigpy asks of its own coordinator (loopback
    # unicasts): the interview, address lookups, Mgmt_Lqi for the topology and the
    # requests zigpy sends when it permits joins or binds. Energy scans go through
    # ControllerApplication.energy_scan instead. From devices it answers Match_Desc,
    # as EmberZNet and Z-Stack do from their registered endpoints (an SE device finds
    # the Key Establishment server so).
    name="sim",
    answers=frozenset(
        {
            C.Match_Desc_req,
            C.Node_Desc_req,
            C.Active_EP_req,
            C.Simple_Desc_req,
            C.NWK_addr_req,
            C.IEEE_addr_req,
            C.Mgmt_Lqi_req,
            C.Mgmt_NWK_Update_req,
            C.Mgmt_Permit_Joining_req,
            C.Bind_req,
            C.Unbind_req,
        }
    ),
    broadcast_answers=frozenset({C.Match_Desc_req}),  # a device's broadcast query; zigpy's own go to the air
    max_buffer_size=82,
    max_transfer_size=255,
    server_mask=(22 << 9) | 0x0001,  # primary trust centre, stack revision 22
    refuses_unsupported=True,
    refuses_malformed=False,
    checks_nwk_of_interest=False,
    checks_address_of_interest=False,
    broadcast_nwks=BROADCAST_NWKS,
    wildcard_profile=False,
    match_in_registration_order=False,
    simple_desc_failure_length=True,
    address_rsp_assoc_fields=False,
    lqi_page=2,  # two per frame, as small NCPs do
)


def node_descriptor(quirks: StackQuirks, manufacturer_code: int = 0) -> zdo_t.NodeDescriptor:
    """The coordinator's node descriptor (2.3.2.3): a mains-powered, always-on FFD."""
    flags = zdo_t.MACCapabilityFlags
    return zdo_t.NodeDescriptor(  # type: ignore[no-untyped-call]
        logical_type=zdo_t.LogicalType.Coordinator,
        complex_descriptor_available=0,
        user_descriptor_available=0,
        reserved=0,
        aps_flags=0,
        frequency_band=zdo_t.FrequencyBand.Freq2400MHz,
        mac_capability_flags=(
            flags.AlternatePanCoordinator
            | flags.FullFunctionDevice
            | flags.MainsPowered
            | flags.RxOnWhenIdle
            | flags.AllocateAddress
        ),
        manufacturer_code=manufacturer_code,
        maximum_buffer_size=quirks.max_buffer_size,
        maximum_incoming_transfer_size=quirks.max_transfer_size,
        server_mask=quirks.server_mask,
        maximum_outgoing_transfer_size=quirks.max_transfer_size,
        descriptor_capability_field=zdo_t.DescriptorCapability.NONE,
    )


def parse_request(cluster_id: int, payload: bytes) -> ZdoRequest:
    """One ZDO frame's APS payload as a typed request, or `MalformedZdo`."""
    try:
        command = _command(cluster_id)
    except ValueError:
        raise MalformedZdo(f"cluster 0x{cluster_id:04X} is not a ZDO command") from None
    if not payload:
        raise MalformedZdo(f"{command.name}: empty frame, no TSN at offset 0")
    schema = zdo_t.CLUSTERS.get(command)
    if schema is None:
        raise MalformedZdo(f"{command.name}: no frame layout known (zigpy has no schema)")
    rest = payload[1:]
    args: list[Any] = []
    for name, type_ in zip(*schema):
        offset = len(payload) - len(rest)
        try:
            value, rest = type_.deserialize(rest)
        except (ValueError, KeyError) as exc:
            raise MalformedZdo(f"{command.name}: field {name} at offset {offset}: {exc}") from None
        args.append(value)
    return ZdoRequest(command, payload[0], tuple(args))


def _frame(command: zdo_t.ZDOCmd, tsn: int, *fields: Any) -> ZdoFrame:
    """A response, fields serialized with the leading part of its zigpy schema."""
    _names, types = zdo_t.CLUSTERS[command]
    body: bytes = t.serialize(fields, types[: len(fields)])  # type: ignore[no-untyped-call]
    return ZdoFrame(int(command), tsn, body)


# zigpy's enum and int types have untyped constructors: typed once here.
def _command(cluster_id: int) -> zdo_t.ZDOCmd:
    return zdo_t.ZDOCmd(cluster_id)  # type: ignore[no-untyped-call]


def _response(request: zdo_t.ZDOCmd) -> zdo_t.ZDOCmd:
    return _command(int(request) | 0x8000)


def _nwk(value: int) -> t.NWK:
    return t.NWK(value)  # type: ignore[no-untyped-call]


def _status_only(cluster_id: int, tsn: int, status: zdo_t.Status) -> ZdoFrame:
    return ZdoFrame(cluster_id | 0x8000, tsn, bytes((status,)))


def answer(
    cluster_id: int,
    payload: bytes,
    coordinator: Coordinator,
    quirks: StackQuirks,
    *,
    broadcast: bool = False,
) -> Answer:
    """The stack's answer to one ZDO request addressed to (or broadcast past) the coordinator.

    ``broadcast``: the request came in a broadcast (or multicast) frame, which gets no
    refusals and no DEVICE_NOT_FOUND (2.4.4.2). Responses (cluster >= 0x8000) are not
    requests: passing one is a caller error (`ValueError`).
    """
    if cluster_id & 0x8000:
        raise ValueError(f"ZDO cluster 0x{cluster_id:04X} is a response, not a request")
    try:
        request = parse_request(cluster_id, payload)
    except MalformedZdo as exc:
        reply = None
        if quirks.refuses_malformed and not broadcast and payload:
            reply = _status_only(cluster_id, payload[0], Status.NOT_SUPPORTED)
        return Answer(Handling.MALFORMED, reply, error=str(exc))
    command = request.command
    if command not in quirks.answers:
        reply = None
        if quirks.refuses_unsupported and not broadcast:
            reply = _status_only(cluster_id, request.tsn, Status.NOT_SUPPORTED)
        return Answer(Handling.UNSUPPORTED, reply, command=command)
    reply, effects = _handle(request, coordinator, quirks, broadcast)
    if broadcast and command not in quirks.broadcast_answers:
        reply = None
    return Answer(Handling.HANDLED, reply, effects, command=command)


def _handle(
    request: ZdoRequest, me: Coordinator, quirks: StackQuirks, broadcast: bool
) -> tuple[ZdoFrame | None, tuple[Effect, ...]]:
    command, tsn, args = request.command, request.tsn, request.args
    ok = Status.SUCCESS

    if command in (C.NWK_addr_req, C.IEEE_addr_req):
        if quirks.checks_address_of_interest:
            if command is C.NWK_addr_req:
                ours = args[0] == me.ieee
            else:
                ours = args[0] == me.nwk or args[0] in quirks.broadcast_nwks
            if not ours:
                return None, ()  # only the owner of the address answers
        fields: list[Any] = [ok, me.ieee, _nwk(me.nwk)]
        if quirks.address_rsp_assoc_fields:
            fields += [0, 0, []]
        return _frame(_response(command), tsn, *fields), ()

    if command in _DESCRIPTOR_REQUESTS and quirks.checks_nwk_of_interest:
        nwk_of_interest = args[0]
        about_us = nwk_of_interest == me.nwk or (
            command is C.Match_Desc_req and nwk_of_interest in quirks.broadcast_nwks
        )
        if not about_us:
            if broadcast:
                return None, ()
            return _frame(_response(command), tsn, Status.DEVICE_NOT_FOUND, nwk_of_interest), ()

    nwk = _nwk(me.nwk)
    if command is C.Node_Desc_req:
        return _frame(C.Node_Desc_rsp, tsn, ok, nwk, node_descriptor(quirks, me.manufacturer_code)), ()
    if command is C.Power_Desc_req:
        power = zdo_t.PowerDescriptor(
            current_power_mode=zdo_t.CurrentPowerMode.RxOnSyncedWithNodeDesc,
            available_power_sources=zdo_t.PowerSources.MainsPower,
            current_power_source=zdo_t.PowerSources.MainsPower,
            current_power_source_level=zdo_t.PowerSourceLevel.Percent100,
        )
        return _frame(C.Power_Desc_rsp, tsn, ok, nwk, power), ()
    if command is C.Active_EP_req:
        return _frame(C.Active_EP_rsp, tsn, ok, nwk, sorted(me.endpoints)), ()
    if command is C.Simple_Desc_req:
        # Any endpoint not registered is NOT_ACTIVE, also outside 1..240, where 2.4.4.2.5
        # would say INVALID_EP: no stack here tells the two apart.
        endpoint = me.endpoints.get(int(args[1]))
        if endpoint is None:
            frame = _frame(C.Simple_Desc_rsp, tsn, Status.NOT_ACTIVE, nwk)
            if quirks.simple_desc_failure_length:
                # Length 0 and no descriptor (zigpy's schema has no field for a bare length)
                frame = dataclasses.replace(frame, body=frame.body + b"\x00")
            return frame, ()
        return _frame(C.Simple_Desc_rsp, tsn, ok, nwk, endpoint.simple_descriptor()), ()
    if command is C.Match_Desc_req:
        _, profile, in_clusters, out_clusters = args
        endpoints = list(me.endpoints.values())
        if not quirks.match_in_registration_order:
            endpoints.sort(key=lambda e: e.endpoint)
        matches = [
            e.endpoint for e in endpoints if e.matches(profile, in_clusters, out_clusters, wildcard=quirks.wildcard_profile)
        ]
        if not matches and broadcast:
            return None, ()  # 2.4.4.2.7: no answer to a broadcast without a match
        return _frame(C.Match_Desc_rsp, tsn, ok, nwk, matches), ()
    if command is C.Mgmt_Lqi_req:
        start = int(args[0])
        table = list(me.neighbors())
        page = table[start : start + quirks.lqi_page]
        neighbors = zdo_t.Neighbors(Entries=len(table), StartIndex=start, NeighborTableList=page)
        return _frame(C.Mgmt_Lqi_rsp, tsn, ok, neighbors), ()
    if command is C.Mgmt_Rtg_req:
        return _frame(C.Mgmt_Rtg_rsp, tsn, ok, zdo_t.Routes(Entries=0, StartIndex=args[0], RoutingTableList=[])), ()
    if command is C.Mgmt_Bind_req:
        return _frame(C.Mgmt_Bind_rsp, tsn, ok, 0, args[0], []), ()
    if command is C.Mgmt_Permit_Joining_req:
        return _frame(C.Mgmt_Permit_Joining_rsp, tsn, ok), (PermitJoining(int(args[0])),)
    if command in (C.Bind_req, C.Unbind_req):
        # Accepted, not kept: nothing here sends through a binding table.
        return _frame(_response(command), tsn, ok), ()
    if command is C.Mgmt_NWK_Update_req:
        return _nwk_update(args[0], tsn, me)
    raise ValueError(f"StackQuirks {quirks.name!r} lists {command.name}, which no code answers")


def _nwk_update(
    update: zdo_t.NwkUpdate, tsn: int, me: Coordinator
) -> tuple[ZdoFrame | None, tuple[Effect, ...]]:
    """2.4.3.3.9: a channel change (0xFE), a channel mask/manager change (0xFF), or a scan."""
    if update.ScanDuration == zdo_t.NwkUpdate.CHANNEL_CHANGE_REQ:
        channels = list(update.ScanChannels)
        return None, ((ChangeChannel(channels[0]),) if len(channels) == 1 else ())
    if update.ScanDuration == zdo_t.NwkUpdate.CHANNEL_MASK_MANAGER_ADDR_CHANGE_REQ:
        return None, ()
    scan = me.energy_scan(update.ScanChannels)
    if scan is None:
        return None, ()
    frame = _frame(
        C.Mgmt_NWK_Update_rsp,
        tsn,
        Status.SUCCESS,
        update.ScanChannels,
        scan.total_transmissions,
        scan.transmission_failures,
        list(scan.energies),
    )
    return frame, ()
