"""radios/coordinator_zdo.py: the coordinator's own ZDO answers, and each stack's quirks (issue 17)."""

from __future__ import annotations

import dataclasses

import pytest
import zigpy.types as t
import zigpy.zdo.types as zdo_t

from radios.coordinator_zdo import (
    EMBERZNET,
    SIM,
    ZSTACK,
    ChangeChannel,
    Coordinator,
    Endpoint,
    EnergyScan,
    Handling,
    MalformedZdo,
    PermitJoining,
    StackQuirks,
    answer,
    parse_request,
)

C = zdo_t.ZDOCmd
TSN = 0x42
OWN = t.EUI64.convert("00:0d:6f:ff:fe:00:5e:1d")
OTHER = t.EUI64.convert("00:11:22:33:44:55:66:77")
HA = Endpoint(1, 0x0104, 0x0005, 0, (0x0000, 0x0003, 0x000A, 0x0019), (0x0019,))
SE = Endpoint(2, 0x0109, 0x0500, 1, (0x0019, 0x000A), (0x0702,))
ALL = [EMBERZNET, ZSTACK, SIM]


def request(command: zdo_t.ZDOCmd, *fields: object) -> bytes:
    return bytes((TSN,)) + t.serialize(fields, zdo_t.CLUSTERS[command][1][: len(fields)])


def fields_of(reply_payload: bytes, command: zdo_t.ZDOCmd) -> list:
    assert reply_payload[0] == TSN
    values, rest = t.deserialize(reply_payload[1:], zdo_t.CLUSTERS[command][1])
    assert rest == b""
    return values


def coordinator(**changes: object) -> Coordinator:
    # SE registered before HA: registration order differs from endpoint order
    base = Coordinator(nwk=0x0000, ieee=OWN, endpoints={2: SE, 1: HA}, manufacturer_code=0x1049)
    return dataclasses.replace(base, **changes)


def match_desc(nwk: int, profile: int, inputs: list[int], outputs: list[int]) -> bytes:
    lv = t.LVList[t.uint8_t, t.uint16_t]
    return request(C.Match_Desc_req, t.NWK(nwk), t.uint16_t(profile), lv(inputs), lv(outputs))


# ------------------------------------------------------------------ parsing


def test_a_request_parses_into_typed_fields() -> None:
    req = parse_request(C.Simple_Desc_req, request(C.Simple_Desc_req, t.NWK(0x1234), t.uint8_t(7)))
    assert (req.command, req.tsn, req.args) == (C.Simple_Desc_req, TSN, (0x1234, 7))


@pytest.mark.parametrize(
    ("cluster", "payload", "message"),
    [
        (C.Node_Desc_req, b"", "Node_Desc_req: empty frame, no TSN at offset 0"),
        (C.Node_Desc_req, b"\x42\x00", "Node_Desc_req: field NWKAddrOfInterest at offset 1: Data is too short to contain 2 bytes"),
        (C.Simple_Desc_req, b"\x42\x00\x00", "Simple_Desc_req: field EndPoint at offset 3: Data is too short to contain 1 bytes"),
        (C.Complex_Desc_req, b"\x42\x00\x00", "Complex_Desc_req: no frame layout known (zigpy has no schema)"),
    ],
)
def test_an_unreadable_request_is_refused_naming_field_and_offset(cluster: int, payload: bytes, message: str) -> None:
    with pytest.raises(MalformedZdo) as err:
        parse_request(cluster, payload)
    assert str(err.value) == message


def test_a_response_is_not_a_request() -> None:
    with pytest.raises(ValueError, match="0x8002 is a response"):
        answer(C.Node_Desc_rsp, b"\x42\x00\x00\x00", coordinator(), ZSTACK)


# ------------------------------------------------------------------ descriptors


@pytest.mark.parametrize("quirks", ALL, ids=lambda q: q.name)
def test_node_descriptor_is_a_coordinators_with_the_stacks_sizes(quirks: StackQuirks) -> None:
    result = answer(C.Node_Desc_req, request(C.Node_Desc_req, t.NWK(0)), coordinator(), quirks)
    assert result.handling is Handling.HANDLED and result.reply is not None
    assert result.reply.cluster_id == C.Node_Desc_rsp
    status, nwk, desc = fields_of(result.reply.payload, C.Node_Desc_rsp)
    assert (status, nwk) == (zdo_t.Status.SUCCESS, 0x0000)
    assert desc.is_coordinator and desc.is_mains_powered and desc.is_receiver_on_when_idle
    assert desc.manufacturer_code == 0x1049
    assert (desc.maximum_buffer_size, desc.maximum_incoming_transfer_size) == (quirks.max_buffer_size, quirks.max_transfer_size)
    assert desc.server_mask == quirks.server_mask


@pytest.mark.parametrize("quirks", ALL, ids=lambda q: q.name)
def test_active_endpoints_are_listed_in_ascending_order(quirks: StackQuirks) -> None:
    result = answer(C.Active_EP_req, request(C.Active_EP_req, t.NWK(0)), coordinator(), quirks)
    assert result.reply is not None and result.reply.payload == bytes([TSN, 0x00, 0x00, 0x00, 2, 1, 2])


@pytest.mark.parametrize("quirks", ALL, ids=lambda q: q.name)
def test_simple_descriptor_of_a_registered_endpoint(quirks: StackQuirks) -> None:
    result = answer(C.Simple_Desc_req, request(C.Simple_Desc_req, t.NWK(0), t.uint8_t(2)), coordinator(), quirks)
    assert result.reply is not None
    status, _, desc = fields_of(result.reply.payload, C.Simple_Desc_rsp)
    assert status == zdo_t.Status.SUCCESS
    assert (desc.endpoint, desc.profile, desc.device_type, desc.device_version) == (2, 0x0109, 0x0500, 1)
    assert list(desc.input_clusters) == [0x0019, 0x000A] and list(desc.output_clusters) == [0x0702]


@pytest.mark.parametrize(("quirks", "payload"), [
    (EMBERZNET, bytes([TSN, 0x83, 0x00, 0x00])),  # status and address only
    (ZSTACK, bytes([TSN, 0x83, 0x00, 0x00, 0x00])),  # and Length = 0
    (SIM, bytes([TSN, 0x83, 0x00, 0x00, 0x00])),
], ids=lambda v: v.name if isinstance(v, StackQuirks) else "")
def test_simple_descriptor_of_an_unregistered_endpoint_is_not_active(quirks: StackQuirks, payload: bytes) -> None:
    result = answer(C.Simple_Desc_req, request(C.Simple_Desc_req, t.NWK(0), t.uint8_t(9)), coordinator(), quirks)
    assert result.reply is not None and result.reply.payload == payload


def test_emberznet_answers_descriptor_requests_about_others_with_device_not_found() -> None:
    body = request(C.Node_Desc_req, t.NWK(0x1234))
    unicast = answer(C.Node_Desc_req, body, coordinator(), EMBERZNET)
    assert unicast.reply is not None and unicast.reply.payload == bytes([TSN, 0x81, 0x34, 0x12])
    broadcast = answer(C.Node_Desc_req, body, coordinator(), EMBERZNET, broadcast=True)
    assert broadcast.handling is Handling.HANDLED and broadcast.reply is None


def test_zstack_answers_descriptor_requests_about_itself_whatever_they_name() -> None:
    result = answer(C.Node_Desc_req, request(C.Node_Desc_req, t.NWK(0x1234)), coordinator(), ZSTACK)
    assert result.reply is not None
    assert fields_of(result.reply.payload, C.Node_Desc_rsp)[:2] == [zdo_t.Status.SUCCESS, 0x0000]


# ------------------------------------------------------------------ Match_Desc


def test_match_desc_lists_endpoints_in_the_stacks_order() -> None:
    body = match_desc(0x0000, 0x0104, [0x0019], [])
    # only HA is on profile 0x0104; the wildcard picks SE too
    assert answer(C.Match_Desc_req, body, coordinator(), ZSTACK).reply.payload == bytes([TSN, 0, 0, 0, 1, 1])
    wildcard = match_desc(0x0000, 0xFFFF, [0x0019], [])
    assert answer(C.Match_Desc_req, wildcard, coordinator(), EMBERZNET).reply.payload == bytes([TSN, 0, 0, 0, 2, 1, 2])
    assert answer(C.Match_Desc_req, wildcard, coordinator(), ZSTACK).reply.payload == bytes([TSN, 0, 0, 0, 0])
    both = dataclasses.replace(ZSTACK, wildcard_profile=True)
    assert answer(C.Match_Desc_req, wildcard, coordinator(), both).reply.payload == bytes([TSN, 0, 0, 0, 2, 2, 1])


def test_match_desc_matches_input_lists_against_inputs_and_output_lists_against_outputs() -> None:
    # InClusterList is matched against our input clusters, OutClusterList against our outputs
    for inputs, outputs, found in (([0x000A], [], [2]), ([], [0x0702], [2]), ([0x0702], [], []), ([], [0x000A], [])):
        reply = answer(C.Match_Desc_req, match_desc(0, 0x0109, inputs, outputs), coordinator(), EMBERZNET).reply
        assert reply is not None and reply.payload == bytes([TSN, 0, 0, 0, len(found), *found])


def test_a_broadcast_match_desc_is_answered_only_with_a_match() -> None:
    hit = match_desc(0xFFFD, 0x0104, [0x0019], [])
    miss = match_desc(0xFFFD, 0x0104, [0x0006], [])
    assert answer(C.Match_Desc_req, hit, coordinator(), EMBERZNET, broadcast=True).reply.payload == bytes([TSN, 0, 0, 0, 1, 1])
    assert answer(C.Match_Desc_req, miss, coordinator(), EMBERZNET, broadcast=True).reply is None
    assert answer(C.Match_Desc_req, miss, coordinator(), EMBERZNET).reply.payload == bytes([TSN, 0, 0, 0, 0])
    # Z-Stack's ZDO leaves broadcasts (other than the address requests) to take effect only
    assert answer(C.Match_Desc_req, hit, coordinator(), ZSTACK, broadcast=True).reply is None


# ------------------------------------------------------------------ addresses


def test_address_requests_are_answered_by_the_owner_only() -> None:
    ours = request(C.NWK_addr_req, OWN, t.uint8_t(0), t.uint8_t(0))
    theirs = request(C.NWK_addr_req, OTHER, t.uint8_t(0), t.uint8_t(0))
    extended = bytes([TSN, 0x00]) + OWN.serialize() + bytes([0x00, 0x00, 0x00, 0x00])  # NWK, NumAssocDev, StartIndex
    for quirks in (EMBERZNET, ZSTACK):
        assert answer(C.NWK_addr_req, ours, coordinator(), quirks).reply.payload == extended
        assert answer(C.NWK_addr_req, theirs, coordinator(), quirks).reply is None
    # the sim answers with its own addresses, in the single-device form
    assert answer(C.NWK_addr_req, theirs, coordinator(), SIM).reply.payload == bytes([TSN, 0x00]) + OWN.serialize() + b"\x00\x00"


@pytest.mark.parametrize(("nwk", "ember", "zstack"), [(0x0000, True, True), (0xFFFD, True, True), (0xFFFB, True, False), (0x1234, False, False)])
def test_ieee_addr_req_takes_the_stacks_broadcast_addresses_as_ours(nwk: int, ember: bool, zstack: bool) -> None:
    body = request(C.IEEE_addr_req, t.NWK(nwk), t.uint8_t(0), t.uint8_t(0))
    assert (answer(C.IEEE_addr_req, body, coordinator(), EMBERZNET).reply is not None) is ember
    assert (answer(C.IEEE_addr_req, body, coordinator(), ZSTACK, broadcast=True).reply is not None) is zstack


# ------------------------------------------------------------------ refusals


def test_unsupported_requests_are_refused_or_left_to_the_host() -> None:
    body = request(C.Power_Desc_req, t.NWK(0))
    for quirks in (ZSTACK, SIM):
        refused = answer(C.Power_Desc_req, body, coordinator(), quirks)
        assert refused.handling is Handling.UNSUPPORTED and refused.command is C.Power_Desc_req
        assert refused.reply is not None and (refused.reply.cluster_id, refused.reply.payload) == (0x8003, bytes([TSN, 0x84]))
        assert answer(C.Power_Desc_req, body, coordinator(), quirks, broadcast=True).reply is None
    lqi = answer(C.Mgmt_Lqi_req, request(C.Mgmt_Lqi_req, t.uint8_t(0)), coordinator(), EMBERZNET)
    assert lqi.handling is Handling.UNSUPPORTED and lqi.reply is None


def test_malformed_requests_are_refused_only_where_the_stack_does() -> None:
    zstack = answer(C.Node_Desc_req, b"\x42\x00", coordinator(), ZSTACK)
    assert zstack.handling is Handling.MALFORMED and "offset 1" in (zstack.error or "")
    assert zstack.reply is not None and zstack.reply.payload == bytes([TSN, 0x84])
    assert answer(C.Node_Desc_req, b"\x42\x00", coordinator(), ZSTACK, broadcast=True).reply is None
    for quirks in (EMBERZNET, SIM):
        silent = answer(C.Node_Desc_req, b"\x42\x00", coordinator(), quirks)
        assert silent.handling is Handling.MALFORMED and silent.reply is None
    assert answer(C.Node_Desc_req, b"", coordinator(), ZSTACK).reply is None  # no TSN to answer


# ------------------------------------------------------------------ Mgmt_*


def neighbor(i: int) -> zdo_t.Neighbor:
    N = zdo_t.Neighbor
    return N(
        extended_pan_id=t.ExtendedPanId.convert("aa:bb:cc:dd:ee:ff:00:11"), ieee=t.EUI64(bytes([i] * 8)), nwk=t.NWK(0x1000 + i),
        device_type=N.DeviceType.Router, rx_on_when_idle=N.RxOnWhenIdle.On, relationship=N.Relationship.Child,
        reserved1=0, permit_joining=N.PermitJoins.Unknown, reserved2=0, depth=1, lqi=200,
    )


@pytest.mark.parametrize("quirks", [ZSTACK, SIM], ids=lambda q: q.name)
def test_mgmt_lqi_pages_the_neighbour_table(quirks: StackQuirks) -> None:
    me = coordinator(neighbors=lambda: [neighbor(i) for i in range(5)])
    seen: list[int] = []
    start = 0
    while start < 5:
        reply = answer(C.Mgmt_Lqi_req, request(C.Mgmt_Lqi_req, t.uint8_t(start)), me, quirks).reply
        status, table = fields_of(reply.payload, C.Mgmt_Lqi_rsp)
        assert status == zdo_t.Status.SUCCESS and table.Entries == 5 and table.StartIndex == start
        assert 0 < len(table.NeighborTableList) <= quirks.lqi_page
        seen += [n.nwk for n in table.NeighborTableList]
        start += len(table.NeighborTableList)
    assert seen == [0x1000 + i for i in range(5)]


def test_permit_joining_takes_effect_and_is_answered_unless_broadcast() -> None:
    body = request(C.Mgmt_Permit_Joining_req, t.uint8_t(60), t.Bool(1))
    unicast = answer(C.Mgmt_Permit_Joining_req, body, coordinator(), ZSTACK)
    assert unicast.effects == (PermitJoining(60),) and unicast.reply.payload == bytes([TSN, 0x00])
    broadcast = answer(C.Mgmt_Permit_Joining_req, body, coordinator(), ZSTACK, broadcast=True)
    assert broadcast.effects == (PermitJoining(60),) and broadcast.reply is None


def nwk_update(duration: int, channels: list[int], **extra: int) -> bytes:
    update = zdo_t.NwkUpdate(ScanChannels=t.Channels.from_channel_list(channels), ScanDuration=duration, **extra)
    return request(C.Mgmt_NWK_Update_req, update)


def test_nwk_update_changes_channel_only_to_a_single_named_channel() -> None:
    change = answer(C.Mgmt_NWK_Update_req, nwk_update(0xFE, [20], nwkUpdateId=3), coordinator(), ZSTACK)
    assert change.effects == (ChangeChannel(20),) and change.reply is None
    two = answer(C.Mgmt_NWK_Update_req, nwk_update(0xFE, [20, 21], nwkUpdateId=3), coordinator(), ZSTACK)
    assert two.effects == () and two.reply is None


def test_nwk_update_energy_scan_reports_the_stacks_scan_or_nothing() -> None:
    def scan(channels: t.Channels) -> EnergyScan:
        return EnergyScan(total_transmissions=0x2345, transmission_failures=1, energies=tuple(range(len(list(channels)))))

    body = nwk_update(2, [11, 15], ScanCount=1)
    reply = answer(C.Mgmt_NWK_Update_req, body, coordinator(energy_scan=scan), ZSTACK).reply
    status, channels, total, failures, energies = fields_of(reply.payload, C.Mgmt_NWK_Update_rsp)
    assert (status, list(channels), total, failures, list(energies)) == (zdo_t.Status.SUCCESS, [11, 15], 0x2345, 1, [0, 1])
    assert answer(C.Mgmt_NWK_Update_req, body, coordinator(), SIM).reply is None


def test_bind_requests_are_accepted_by_the_sim() -> None:
    dst = zdo_t.MultiAddress(addrmode=3, ieee=OTHER, endpoint=1)
    body = request(C.Bind_req, OWN, t.uint8_t(1), t.uint16_t(0x0019), dst)
    result = answer(C.Bind_req, body, coordinator(), SIM)
    assert result.reply is not None and (result.reply.cluster_id, result.reply.payload) == (0x8021, bytes([TSN, 0x00]))


def test_quirks_naming_a_request_nothing_answers_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="no answer is built for \\['Mgmt_Leave_req'\\]"):
        dataclasses.replace(ZSTACK, answers=ZSTACK.answers | {C.Mgmt_Leave_req})
    with pytest.raises(ValueError, match="subset"):
        dataclasses.replace(SIM, broadcast_answers=frozenset({C.Power_Desc_req}))
