"""The simulated device's Tunneling server (radios/sim/tunnel_server.py), sans-I/O: what
a GBCS device answers, and its faults."""

from __future__ import annotations

import struct

import pytest

from radios.sim import tunnel_server as ts

HUB, OTHER = 0x0000, 0x1234
REQUEST = bytes.fromhex("06ffff00dc05")


def server(**faults: object) -> tuple[ts.TunnelServer, list[bytes]]:
    got: list[bytes] = []

    def handler(data: bytes) -> list[bytes]:
        got.append(data)
        return [b"\xdf" + data[1:]] if data[:1] == b"\xdd" else []

    return ts.TunnelServer(handler, ts.TunnelFaults(**faults)), got  # type: ignore[arg-type]


def status_of(out: list[ts.Out]) -> tuple[int, int, int]:
    (send,) = out
    assert isinstance(send, ts.TunnelServerSend) and send.command_id == 0x00
    return struct.unpack("<HBH", send.payload)  # type: ignore[return-value]


def test_request_opens_one_tunnel_and_asking_again_gets_the_same() -> None:
    srv, _ = server()
    assert status_of(srv.receive(HUB, 1, 0x00, REQUEST, False)) == (1, 0, 1500)
    assert status_of(srv.receive(HUB, 2, 0x00, REQUEST, False)) == (1, 0, 1500)
    assert status_of(srv.receive(OTHER, 3, 0x00, REQUEST, False)) == (0xFFFF, ts.NO_MORE_TUNNEL_IDS, 1500)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [("05ffff00dc05", ts.PROTOCOL_NOT_SUPPORTED), ("06341200dc05", ts.PROTOCOL_NOT_SUPPORTED), ("06ffff01dc05", ts.FLOW_CONTROL_NOT_SUPPORTED)],
)
def test_what_a_gbcs_device_does_not_serve(request_bytes: str, status: int) -> None:
    srv, _ = server()
    assert status_of(srv.receive(HUB, 1, 0x00, bytes.fromhex(request_bytes), False))[1] == status


def test_faults_busy_and_no_ids_then_success() -> None:
    srv, _ = server(busy=2, no_ids=1)
    statuses = [status_of(srv.receive(HUB, n, 0x00, REQUEST, False))[1] for n in range(4)]
    assert statuses == [ts.BUSY, ts.BUSY, ts.NO_MORE_TUNNEL_IDS, ts.SUCCESS]


@pytest.mark.parametrize(("refuse", "status"), [("protocol", ts.PROTOCOL_NOT_SUPPORTED), ("flow-control", ts.FLOW_CONTROL_NOT_SUPPORTED)])
def test_fault_refuse(refuse: str, status: int) -> None:
    srv, _ = server(refuse=refuse)
    assert status_of(srv.receive(HUB, 1, 0x00, REQUEST, False))[1] == status


def test_transfer_data_reaches_the_handler_then_replies_go_back() -> None:
    srv, got = server()
    srv.receive(HUB, 1, 0x00, REQUEST, False)
    out = srv.receive(HUB, 9, 0x02, b"\x01\x00\xdd\x01\x02", True)
    assert got == [b"\xdd\x01\x02"]
    assert out[0] == ts.Answer(HUB, 9, 0x02, ts.ZCL_SUCCESS)
    assert out[1] == ts.TunnelServerSend(HUB, 0x01, b"\x01\x00\xdf\x01\x02", wants_default_response=True)


@pytest.mark.parametrize(
    ("client", "payload", "status"),
    [(HUB, b"\x07\x00\xdd", ts.NO_SUCH_TUNNEL), (OTHER, b"\x01\x00\xdd", ts.WRONG_DEVICE), (HUB, b"\x01\x00" + bytes(1501), ts.DATA_OVERFLOW)],
)
def test_transfer_data_errors(client: int, payload: bytes, status: int) -> None:
    srv, got = server()
    srv.receive(HUB, 1, 0x00, REQUEST, False)
    (error,) = srv.receive(client, 9, 0x02, payload, True)
    assert error == ts.TunnelServerSend(client, 0x02, payload[:2] + bytes([status]))
    assert got == []


def test_fault_drop_forgets_the_tunnel_at_that_transfer() -> None:
    srv, got = server(drop=2)
    srv.receive(HUB, 1, 0x00, REQUEST, False)
    srv.receive(HUB, 2, 0x02, b"\x01\x00\xdd", True)
    (error,) = srv.receive(HUB, 3, 0x02, b"\x01\x00\xdd", True)
    assert isinstance(error, ts.TunnelServerSend) and error.payload == b"\x01\x00\x00"
    assert status_of(srv.receive(HUB, 4, 0x00, REQUEST, False)) == (2, 0, 1500)  # a new id
    assert srv.receive(HUB, 5, 0x02, b"\x02\x00\xdd", True)[0] == ts.Answer(HUB, 5, 0x02, 0)
    assert len(got) == 2


def test_close_tunnel_and_originated_messages_wait_for_a_tunnel() -> None:
    srv, _ = server()
    assert srv.originate(b"\xdf\xca") == []
    out = srv.receive(HUB, 1, 0x00, REQUEST, False)
    assert out[1] == ts.TunnelServerSend(HUB, 0x01, b"\x01\x00\xdf\xca", wants_default_response=True)
    assert srv.receive(HUB, 2, 0x01, b"\x01\x00", False) == []
    assert srv.tunnel is None
    assert srv.originate(b"\xdf") == []
    srv.forget()
    assert srv.receive(HUB, 3, 0x00, REQUEST, False)[1:] == []  # forgotten with the power


@pytest.mark.parametrize(("command_id", "payload"), [(0x00, b"\x06"), (0x01, b""), (0x02, b"\x01"), (0x03, b"\x01\x00")])
def test_malformed_commands_get_malformed_command_even_unasked(command_id: int, payload: bytes) -> None:
    srv, _ = server()
    assert srv.receive(HUB, 4, command_id, payload, False) == [ts.Answer(HUB, 4, command_id, ts.ZCL_MALFORMED_COMMAND)]


def test_unknown_command_is_unsupported() -> None:
    srv, _ = server()
    assert srv.receive(HUB, 4, 0x04, b"", False) == [ts.Answer(HUB, 4, 0x04, ts.ZCL_UNSUP_CLUSTER_COMMAND)]
