"""The ZDO requests an EmberZNet stack answers by itself.

With ``CONFIG_APPLICATION_ZDO_FLAGS = APP_RECEIVES_SUPPORTED_ZDO_REQUESTS |
APP_HANDLES_UNSUPPORTED_ZDO_REQUESTS`` (what bellows configures), the NCP's stack still
answers the requests it supports *and* passes a copy to the host; unsupported ones go to
the host only. So a device's Match_Desc_req for the OTA cluster gets the stack's answer
and zigpy's, as on a real dongle. The stack only knows about itself: its node
descriptor and the endpoints the host registered with ``addEndpoint``.

ZDO frames are built and parsed with zigpy's ZDO schemas (``zigpy.zdo.types``).
"""

from __future__ import annotations

import dataclasses
import logging

import zigpy.types as zt
import zigpy.zdo.types as zdo_t

LOGGER = logging.getLogger(__name__)

BROADCAST_NWKS = frozenset({0xFFFF, 0xFFFD, 0xFFFC, 0xFFFB})

SUPPORTED = frozenset(
    {
        zdo_t.ZDOCmd.NWK_addr_req,
        zdo_t.ZDOCmd.IEEE_addr_req,
        zdo_t.ZDOCmd.Node_Desc_req,
        zdo_t.ZDOCmd.Power_Desc_req,
        zdo_t.ZDOCmd.Simple_Desc_req,
        zdo_t.ZDOCmd.Active_EP_req,
        zdo_t.ZDOCmd.Match_Desc_req,
    }
)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    endpoint: int
    profile: int
    device_type: int
    device_version: int
    input_clusters: tuple[int, ...]
    output_clusters: tuple[int, ...]

    def simple_descriptor(self) -> zdo_t.SizePrefixedSimpleDescriptor:
        return zdo_t.SizePrefixedSimpleDescriptor(
            endpoint=self.endpoint,
            profile=self.profile,
            device_type=self.device_type,
            device_version=self.device_version,
            input_clusters=list(self.input_clusters),
            output_clusters=list(self.output_clusters),
        )


def coordinator_node_descriptor(manufacturer_code: int) -> zdo_t.NodeDescriptor:
    flags = zdo_t.MACCapabilityFlags
    return zdo_t.NodeDescriptor(
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
        maximum_buffer_size=82,
        maximum_incoming_transfer_size=128,
        # Primary trust center, network manager, stack compliance revision 22
        server_mask=0x2C41,
        maximum_outgoing_transfer_size=128,
        descriptor_capability_field=zdo_t.DescriptorCapability.NONE,
    )


@dataclasses.dataclass(frozen=True)
class ZdoAnswer:
    cluster_id: int
    payload: bytes


def parse_request(cluster_id: int, payload: bytes) -> tuple[zdo_t.ZDOCmd, int, list] | None:
    try:
        command = zdo_t.ZDOCmd(cluster_id)
    except ValueError:
        return None
    schema = zdo_t.CLUSTERS.get(command)
    if schema is None or not payload:
        return None
    tsn = payload[0]
    _names, types_ = schema
    try:
        args, _ = zt.deserialize(payload[1:], types_)
    except (ValueError, KeyError) as exc:
        LOGGER.debug("ZDO %s: unparsable request %s: %s", command.name, payload.hex(), exc)
        return None
    return command, tsn, args


def _build(command: zdo_t.ZDOCmd, tsn: int, *args) -> ZdoAnswer:
    _names, types_ = zdo_t.CLUSTERS[command]
    payload = bytes((tsn,)) + zt.serialize(args, types_[: len(args)])
    return ZdoAnswer(int(command), payload)


def answer(
    cluster_id: int,
    payload: bytes,
    *,
    dst_is_broadcast: bool,
    own_nwk: int,
    own_ieee: zt.EUI64,
    manufacturer_code: int,
    endpoints: dict[int, Endpoint],
) -> tuple[bool, ZdoAnswer | None]:
    """Return (supported, answer): whether the stack handles the request, and its reply."""
    parsed = parse_request(cluster_id, payload)
    if parsed is None:
        return False, None
    command, tsn, args = parsed
    if command not in SUPPORTED:
        return False, None
    status = zdo_t.Status
    rsp = zdo_t.ZDOCmd

    if command is rsp.NWK_addr_req:
        ieee = args[0]
        if ieee != own_ieee:
            return True, None  # only the owner of the address answers
        return True, _build(rsp.NWK_addr_rsp, tsn, status.SUCCESS, own_ieee, own_nwk, 0, 0, [])
    if command is rsp.IEEE_addr_req:
        nwk = args[0]
        if nwk != own_nwk and nwk not in BROADCAST_NWKS:
            return True, None
        return True, _build(rsp.IEEE_addr_rsp, tsn, status.SUCCESS, own_ieee, own_nwk, 0, 0, [])

    nwk_of_interest = args[0]
    about_us = nwk_of_interest == own_nwk or (
        command is rsp.Match_Desc_req and nwk_of_interest in BROADCAST_NWKS
    )
    if not about_us:
        if dst_is_broadcast:
            return True, None
        return True, _build(
            zdo_t.ZDOCmd(int(command) | 0x8000), tsn, status.DEVICE_NOT_FOUND, nwk_of_interest
        )

    if command is rsp.Node_Desc_req:
        return True, _build(
            rsp.Node_Desc_rsp, tsn, status.SUCCESS, own_nwk,
            coordinator_node_descriptor(manufacturer_code),
        )
    if command is rsp.Power_Desc_req:
        power = zdo_t.PowerDescriptor(
            current_power_mode=zdo_t.CurrentPowerMode.RxOnSyncedWithNodeDesc,
            available_power_sources=zdo_t.PowerSources.MainsPower,
            current_power_source=zdo_t.PowerSources.MainsPower,
            current_power_source_level=zdo_t.PowerSourceLevel.Percent100,
        )
        return True, _build(rsp.Power_Desc_rsp, tsn, status.SUCCESS, own_nwk, power)
    if command is rsp.Active_EP_req:
        return True, _build(rsp.Active_EP_rsp, tsn, status.SUCCESS, own_nwk, sorted(endpoints))
    if command is rsp.Simple_Desc_req:
        ep = endpoints.get(args[1])
        if ep is None:
            return True, _build(rsp.Simple_Desc_rsp, tsn, status.NOT_ACTIVE, own_nwk)
        return True, _build(rsp.Simple_Desc_rsp, tsn, status.SUCCESS, own_nwk, ep.simple_descriptor())
    if command is rsp.Match_Desc_req:
        _, profile, in_clusters, out_clusters = args
        matches = [
            ep.endpoint
            for ep in sorted(endpoints.values(), key=lambda e: e.endpoint)
            if (profile in (ep.profile, 0xFFFF))
            and (
                set(in_clusters) & set(ep.input_clusters)
                or set(out_clusters) & set(ep.output_clusters)
            )
        ]
        if not matches and dst_is_broadcast:
            return True, None  # no answer to a broadcast without a match
        return True, _build(rsp.Match_Desc_rsp, tsn, status.SUCCESS, own_nwk, matches)
    return False, None
