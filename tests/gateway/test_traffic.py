"""Background traffic, sans-I/O: the sim's schedule, the bench report's bytes both ways, the hub's meter, [[sim_traffic]] (issue 15 part 2)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner
import zigpy.types as zt
from zigpy.zcl import foundation

from gateway.config import ConfigError, SimTrafficConfig, parse_config, parse_sim_traffic
from gateway.traffic import BackgroundFrameError, Sample, StampedReport, TrafficMeter, is_stamped_report, publish_price, tunnel_message
from radios.sim.traffic import METERING_MIN_SIZE, Flow, TrafficSchedule, metering_report

A = zt.EUI64.convert("00:11:22:33:44:55:66:77")
B = zt.EUI64.convert("00:11:22:33:44:55:66:88")


# --------------------------------------------------------------------------- the schedule


def test_flows_are_spread_over_their_period_then_keep_it() -> None:
    flows = [Flow(A, "metering", 3.0, 40), Flow(B, "price", 3.0, 40)]
    s = TrafficSchedule(flows, start=100.0)
    # Golden-ratio phases: A at 0.618 of its period, B at 0.236.
    assert s.get_timer() == pytest.approx(100.0 + 3 * 0.2360680)
    assert s.handle_timer(100.7) == []
    (first,) = s.handle_timer(100.71)
    assert (first.flow.ieee, first.seq, first.due) == (B, 0, pytest.approx(100.7082039))
    assert s.get_timer() == pytest.approx(100.0 + 3 * 0.6180340)
    (second,) = s.handle_timer(101.86)
    assert (second.flow.ieee, second.seq) == (A, 0)
    emitted = [(e.flow.ieee, e.seq) for now in (103.71, 104.86, 106.71, 107.86) for e in s.handle_timer(now)]
    assert emitted == [(B, 1), (A, 1), (B, 2), (A, 2)]
    assert s.skipped == 0


def test_phases_are_spread_for_any_number_of_flows() -> None:
    for n in (1, 2, 5, 20):
        s = TrafficSchedule([Flow(zt.EUI64(bytes([i] * 8)), "metering", 1.0, 40) for i in range(n)], start=0.0)
        phases = sorted(e.due for e in s.handle_timer(0.9999999))
        assert len(phases) == n and len(set(phases)) == n
        # No two flows closer than a third of an even spacing (golden-ratio sequence).
        assert all(b - a > 1 / (3 * n) for a, b in zip(phases, phases[1:]))


def test_a_late_driver_sends_once_and_skips_the_lost_slots() -> None:
    s = TrafficSchedule([Flow(A, "metering", 1.0, 40)], start=0.0)  # due at 0.618, 1.618, ...
    assert [e.seq for e in s.handle_timer(0.7)] == [0]
    # 2.4 s late: slots at 1.618, 2.618, 3.618 were due; one message goes, two are skipped.
    assert [e.seq for e in s.handle_timer(4.0)] == [1]
    assert s.skipped == 2
    assert s.get_timer() == pytest.approx(4.618034)
    assert [e.seq for e in s.handle_timer(4.7)] == [2]


def test_many_flows_fall_due_in_order_of_their_due_time() -> None:
    flows = [Flow(zt.EUI64(bytes([i] * 8)), "metering", 10.0, 40) for i in range(5)]
    s = TrafficSchedule(flows, start=0.0)
    due = s.handle_timer(60.0)
    assert [e.due for e in due] == sorted(e.due for e in due) and len(due) == 5


def test_no_flows_no_timer() -> None:
    assert TrafficSchedule([], start=0.0).get_timer() is None


@pytest.mark.parametrize(
    ("kind", "period", "size", "error"),
    [("voice", 1.0, 40, "kind='voice'"), ("metering", 0.0, 40, "period_s=0.0"), ("metering", 1.0, 24, "not 24"), ("metering", 1.0, 280, "not 280")],
)
def test_a_flow_refuses_what_cannot_be_sent(kind: str, period: float, size: int, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Flow(A, kind, period, size)


# --------------------------------------------------------------------------- the bytes


@pytest.mark.parametrize("size", [METERING_MIN_SIZE, 40, 82, 200, 279])
def test_the_sims_report_is_read_by_the_hub_and_by_zigpy(size: int) -> None:
    data = metering_report(7, 1_764_806_400_123, size, tsn=0x42, manufacturer=0x121D)
    assert len(data) == size
    assert is_stamped_report(0x0702, data) and not is_stamped_report(0x0019, data)
    assert StampedReport.parse(data) == StampedReport(7, 1_764_806_400_123)
    # An independent reader: zigpy's own ZCL header and attribute records.
    hdr, rest = foundation.ZCLHeader.deserialize(data)
    assert hdr.frame_control.is_manufacturer_specific and hdr.manufacturer == 0x121D and hdr.tsn == 0x42
    assert hdr.command_id == foundation.GeneralCommand.Report_Attributes and hdr.direction == foundation.Direction.Server_to_Client
    assert hdr.frame_control.disable_default_response
    records, tail = zt.List[foundation.Attribute].deserialize(rest)
    assert tail == b"" and [(r.attrid, r.value.value) for r in records[:2]] == [(0, 7), (1, 1_764_806_400_123)]


def test_a_standard_metering_report_is_not_the_benchs() -> None:
    # CurrentSummationDelivered, not manufacturer-specific: passes by to zigpy.
    data = bytes([0x18, 0x01, 0x0A]) + struct.pack("<HB", 0, 0x25) + bytes(6)
    assert not is_stamped_report(0x0702, data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x1c\x1d\x12", "ZCL header at offset 3: 3 bytes, expected 5"),
        (b"\x1c\x1d\x12\x01\x0a" + struct.pack("<HB", 0, 0x23) + b"\x01", "sequence at offset 5: truncated: 4 bytes left, expected 7"),
        (b"\x1c\x1d\x12\x01\x0a" + struct.pack("<HBI", 5, 0x23, 1), "sequence at offset 5: record 0x0005 type 0x23, expected 0x0000 type 0x23"),
        (metering_report(1, 2, 25, tsn=1, manufacturer=0)[:-4] + struct.pack("<HB", 0x0002, 0x42) + b"\x00", "padding at offset 21: expected record 0x0002 type 0x41 (octet string)"),
        (metering_report(1, 2, 30, tsn=1, manufacturer=0)[:-1], "padding at offset 24: length 5 leaves 4 bytes"),
    ],
)
def test_bad_report_bytes_are_refused_by_field_and_offset(data: bytes, message: str) -> None:
    with pytest.raises(BackgroundFrameError) as info:
        StampedReport.parse(data)
    assert str(info.value) == f"stamped Metering report: {message}"


@pytest.mark.parametrize("size", [31, 40, 43, 60])
def test_publish_price_is_its_size_and_reads_as_zigpy_reads_it(size: int) -> None:
    data = publish_price(0x33, 9, size, now_utc=1_764_806_400)
    assert len(data) == size
    hdr, rest = foundation.ZCLHeader.deserialize(data)
    assert (hdr.tsn, hdr.command_id, hdr.frame_control.is_cluster, hdr.direction) == (0x33, 0x00, True, foundation.Direction.Server_to_Client)
    provider, label_len = struct.unpack_from("<IB", rest)
    assert provider == 1 and label_len == min(size - 31, 12)
    issuer, zcl_time = struct.unpack_from("<II", rest, 5 + label_len)
    assert issuer == 9 and zcl_time == 1_764_806_400 - 946_684_800


@pytest.mark.parametrize("size", [16, 200, 1200])
def test_a_tunnel_message_is_its_size_and_names_its_sequence(size: int) -> None:
    data = tunnel_message(0x01020304, size)
    assert len(data) == size and data.startswith(b"BENCH-TUNNEL\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="size 15 outside 16..1200"):
        tunnel_message(1, 15)


def test_publish_price_refuses_a_size_it_cannot_fill() -> None:
    with pytest.raises(ValueError, match="size 30 outside 31..279"):
        publish_price(1, 1, 30, now_utc=0)


# --------------------------------------------------------------------------- the meter


def test_the_meter_times_reports_and_counts_skipped_sequences_as_lost() -> None:
    m = TrafficMeter()
    assert m.report("a", StampedReport(0, 1000), 1012.5) == [Sample("a", "metering", 12.5, 0)]
    assert m.report("a", StampedReport(3, 2000), 2040.0) == [
        Sample("a", "metering", None, 1),
        Sample("a", "metering", None, 2),
        Sample("a", "metering", 40.0, 3),
    ]
    # Another device has its own sequence; a restarted simulator starts again.
    assert m.report("b", StampedReport(5, 0), 1.0) == [Sample("b", "metering", 1.0, 5)]
    assert m.report("a", StampedReport(0, 3000), 3001.0) == [Sample("a", "metering", 1.0, 0)]


def test_a_clock_step_never_gives_a_negative_latency() -> None:
    assert TrafficMeter().report("a", StampedReport(0, 5000), 4990.0)[0].latency_ms == 0.0


def test_the_hubs_own_messages_are_timed_to_their_confirmation() -> None:
    assert TrafficMeter.confirmed("a", "price", 4, 100.0, 130.5, True) == Sample("a", "price", 30.5, 4)
    assert TrafficMeter.confirmed("a", "tunnel", 5, 100.0, 900.0, False) == Sample("a", "tunnel", None, 5)


# --------------------------------------------------------------------------- [[sim_traffic]]


def test_sim_traffic_tables() -> None:
    cfg = parse_config({"sim_traffic": [
        {"kind": "metering", "period": 5}, {"kind": "price", "period": 0.5, "device": "0011223344556677", "size": 60}, {"kind": "tunnel", "period": 30},
    ]})
    all_meters, one_price, tunnel = cfg.sim_traffic
    assert (tunnel.kind, tunnel.size, tunnel.device) == ("tunnel", 200, None)
    assert all_meters == SimTrafficConfig(device=None, kind="metering", period_s=5.0, size=40)
    assert str(one_price.device) == "00:11:22:33:44:55:66:77" and (one_price.kind, one_price.period_s, one_price.size) == ("price", 0.5, 60)
    assert parse_config({}).sim_traffic == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"kind": "voice", "period": 1}, "sim_traffic[0].kind = 'voice': expected \"metering\""),
        ({"kind": "tunnel", "period": 1, "size": 1201}, "sim_traffic[0].size = 1201: expected the GBCS message's length in bytes, 16..1200 for tunnel"),
        ({"kind": "metering"}, "sim_traffic[0].period = None: required"),
        ({"kind": "metering", "period": -1}, "sim_traffic[0].period = -1: expected a positive number"),
        ({"kind": "price", "period": 1, "size": 30}, "sim_traffic[0].size = 30: expected the message's APS payload in bytes, 31..279 for price"),
        ({"kind": "metering", "period": 1, "size": True}, "sim_traffic[0].size = True"),
        ({"kind": "metering", "period": 1, "device": "00:11"}, "sim_traffic[0].device = '00:11'"),
        ({"kind": "metering", "period": 1, "every": 2}, "sim_traffic[0].every = 2: unknown key"),
    ],
)
def test_sim_traffic_refusals_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sim_traffic": [table]})
    assert str(info.value).startswith(message)


# --------------------------------------------------------------------------- --sim-traffic


def test_sim_traffic_on_the_command_line_reads_as_its_table() -> None:
    assert parse_sim_traffic("metering:10") == SimTrafficConfig(device=None, kind="metering", period_s=10.0, size=40)
    one = parse_sim_traffic("price:2.5:size=43:device=00:11:22:33:44:55:66:77")
    assert (str(one.device), one.kind, one.period_s, one.size) == ("00:11:22:33:44:55:66:77", "price", 2.5, 43)
    assert parse_sim_traffic("tunnel:30:device=all:size=500") == SimTrafficConfig(device=None, kind="tunnel", period_s=30.0, size=500)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metering:x", "--sim-traffic.period = 'x': expected a positive number of seconds"),
        ("metering:1:size=9", "--sim-traffic.size = 9: expected the message's APS payload in bytes, 25..279 for metering"),
        ("metering:1:bogus", "--sim-traffic = 'metering:1:bogus': expected KIND:PERIOD[:size=N][:device=IEEE|all]"),
        ("metering:1:every=3", "--sim-traffic.every = '3': unknown key"),
    ],
)
def test_sim_traffic_text_refusals(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sim_traffic(text)
    assert str(info.value).startswith(message)


def test_han_ota_run_refuses_bad_sim_traffic_before_starting(tmp_path: Path) -> None:
    from han_ota.cli import _mount, app

    _mount()
    (tmp_path / "c.toml").write_text(f'state_dir = "{tmp_path}/state"\ncontrol_socket = "{tmp_path}/c.sock"\n')
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "c.toml"), "--sim-traffic", "voice:1"])
    assert result.exit_code == 1 and "--sim-traffic.kind = 'voice'" in result.output
    assert not (tmp_path / "state").exists()  # refused before the daemon made anything
