"""The EZSP emulator's failure timing on a timed link (issue 14: failures arrive in
milliseconds where a real stack needs seconds).

radios/emulate/ezsp/failure_timing.py: EmberZNet reports a lost unicast after three APS
transmissions 1.6 s apart (emberApsAckTimeoutMs) and a route discovery before each
retry; the emulator waits that long (at the link's scale) before messageSentHandler.
"""

from __future__ import annotations

import math

import pytest
import zigpy.exceptions
import zigpy.types as zt

from radios.emulate.ezsp import EmberNcp, FailureTiming, NetworkSettings, running_ezsp_emulator
from radios.emulate.ezsp.failure_timing import APS_ACK_TIMEOUT_S, ROUTE_DISCOVERY_S
from radios.select import open_app
from radios.sim.han import SimHan
from radios.sim.link import LinkModel

import driver_test_support as support

HCALCS = "00:db:12:34:56:78:90:b1"
HCALCS_IEEE = zt.EUI64.convert(HCALCS)


def test_emberznet_numbers() -> None:
    assert APS_ACK_TIMEOUT_S == 1.6  # (50 ms x EMBER_MAX_HOPS 30) + 100 ms
    assert ROUTE_DISCOVERY_S == pytest.approx(0.762)  # 3 route requests 254 ms apart
    assert FailureTiming().failure_delay_s == pytest.approx(3 * 1.6 + 2 * 0.762)
    assert FailureTiming(scale=0.1).failure_delay_s == pytest.approx(0.6324)
    assert FailureTiming.instant().failure_delay_s == 0.0


def test_configurable() -> None:
    timing = FailureTiming().replace(aps_transmissions=1, route_discovery_s=5.0)
    assert timing.failure_delay_s == pytest.approx(1.6)  # no retry: no rediscovery
    assert FailureTiming(aps_ack_timeout_s=0.5, aps_transmissions=4, route_discovery_s=0.0).failure_delay_s == 2.0


@pytest.mark.parametrize(("field", "value"), [
    ("aps_ack_timeout_s", -1.0), ("route_discovery_s", math.nan), ("scale", math.inf), ("aps_transmissions", 0),
])
def test_refuses_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        FailureTiming(**{field: value})


def test_from_the_han_link() -> None:
    assert FailureTiming.for_link(LinkModel.instant()) == FailureTiming.instant()
    assert FailureTiming.for_link(None) == FailureTiming.instant()
    assert FailureTiming.for_link(LinkModel.realistic(scale=0.25)) == FailureTiming(scale=0.25)


def test_the_ncp_takes_it_from_its_han_unless_given() -> None:
    # What `han-ota emulate ezsp --link realistic` builds: a SimHan on LinkModel.realistic().
    assert EmberNcp(SimHan([], LinkModel.realistic())).failure_timing == FailureTiming()
    assert EmberNcp(SimHan([], LinkModel.realistic(scale=0.5))).failure_timing.scale == 0.5
    assert EmberNcp(SimHan([], LinkModel.instant())).failure_timing == FailureTiming.instant()
    assert EmberNcp(None).failure_timing == FailureTiming.instant()
    given = FailureTiming(scale=2.0, aps_transmissions=1)
    assert EmberNcp(SimHan([], LinkModel.realistic()), failure_timing=given).failure_timing is given


@pytest.mark.parametrize("ezsp_version", [13, 14], ids=lambda v: f"ezsp{v}")
async def test_a_lost_unicast_is_reported_after_the_stacks_retries(ezsp_version: int) -> None:
    """Through bellows: the DeliveryError comes only once the (scaled) APS retries and
    route discoveries are spent; on an instant link it would come at once."""
    link = LinkModel.realistic(scale=0.1, uart_baud=None)
    spec = support.hcalcs_spec(HCALCS)
    async with running_ezsp_emulator([spec], link, network=NetworkSettings(channel=20, pan_id=0x4D2B),
                                     protocol_version=ezsp_version) as (path, server):
        app = await open_app("ezsp", path=path)
        try:
            await app.permit(60)
            device = await support.wait_known(app, HCALCS_IEEE, timeout=30)
            # a cluster nothing else uses: the device's own OTA queries must not take the failure
            server.faults.fail_next_deliveries(1, nwk=device.nwk, cluster=0xFC00)
            packet = zt.ZigbeePacket(
                src=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=0x0000), src_ep=1,
                dst=zt.AddrModeAddress(addr_mode=zt.AddrMode.NWK, address=device.nwk), dst_ep=1,
                tsn=0x21, profile_id=0x0104, cluster_id=0xFC00, data=zt.SerializableBytes(bytes(20)),
                tx_options=zt.TransmitOptions.ACK, radius=0,
            )
            with pytest.raises(zigpy.exceptions.DeliveryError):
                await app.send_packet(packet)
            [(nwk, after)] = server.ncp.failed_unicasts
            assert nwk == device.nwk and after >= FailureTiming(scale=0.1).failure_delay_s
        finally:
            await app.shutdown()


# ------------------------------------------------ --failure-timing (one parser) ----


def test_the_option_sets_emberznets_own_fields_at_the_links_scale() -> None:
    parsed = FailureTiming.parse(["aps_ack_timeout_s=0.5", "aps-transmissions=2,route_discovery_s=0.25"], scale=0.5)
    assert parsed == FailureTiming(aps_ack_timeout_s=0.5, aps_transmissions=2, route_discovery_s=0.25, scale=0.5)
    assert parsed.failure_delay_s == pytest.approx(0.5 * (2 * 0.5 + 1 * 0.25))
    assert FailureTiming.parse(None) == FailureTiming()


@pytest.mark.parametrize(
    ("spec", "message"),
    [("aps_ack_timeout_s", r"'aps_ack_timeout_s': no '='.*one of aps_ack_timeout_s, aps_transmissions, route_discovery_s$"),
     ("aps_ack_wait=1", r"unknown key 'aps_ack_wait'; give NAME=VALUE with NAME one of aps_ack_timeout_s, aps_transmissions"),
     ("scale=2", r"unknown key 'scale'"),
     ("aps_transmissions=1.5", r"aps_transmissions: '1.5' is not a number \(a whole number\)"),
     ("route_discovery_s=x", r"route_discovery_s: 'x' is not a number"),
     ("route_discovery_s=-1", r"route_discovery_s must not be negative"),
     ("aps_transmissions=0", r"aps_transmissions must be at least 1")],
)
def test_refusals_name_the_key_and_the_allowed_names(spec: str, message: str) -> None:
    from radios.emulate.ezsp import TimingSpecError

    with pytest.raises(TimingSpecError, match=message):
        FailureTiming.parse(spec)


def test_both_emulators_share_the_parser_and_keep_their_own_names() -> None:
    from radios.emulate import failure_timing
    from radios.emulate.ezsp import TimingSpecError as EzspError
    from radios.emulate.znp import FailureTiming as ZnpTiming, TimingSpecError as ZnpError

    assert EzspError is ZnpError is failure_timing.TimingSpecError
    with pytest.raises(ZnpError, match="unknown key 'aps_ack_timeout_s'.*one of mac_attempt, "):
        ZnpTiming.parse("aps_ack_timeout_s=1")
    with pytest.raises(EzspError, match="unknown key 'aps_ack_wait'"):
        FailureTiming.parse("aps_ack_wait=1")


@pytest.mark.parametrize("kind", ["ezsp", "znp"])
def test_emulate_failure_timing_reaches_each_emulator(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from han_ota import cli_radio

    seen: dict[str, object] = {}

    async def serve(*args: object, ncp_options: dict[str, object], znp_options: dict[str, object], **kw: object) -> None:
        seen.update(ncp=ncp_options, znp=znp_options)

    monkeypatch.setattr(cli_radio, "serve_emulator", serve)
    spec = "aps_transmissions=2" if kind == "ezsp" else "aps_retries=1"
    result = CliRunner().invoke(cli_radio.standalone, ["emulate", kind, "--link", "realistic", "--failure-timing", spec])
    assert result.exit_code == 0, result.output
    if kind == "ezsp":
        assert seen["ncp"] == {"failure_timing": FailureTiming(aps_transmissions=2)}
        assert seen["znp"] == {}
    else:
        from radios.emulate.znp import FailureTiming as ZnpTiming

        assert seen["znp"] == {"failure_timing": ZnpTiming(aps_retries=1)}


def test_emulate_ezsp_failure_timing_refusal_is_a_usage_error() -> None:
    from typer.testing import CliRunner

    from han_ota import cli_radio

    result = CliRunner().invoke(cli_radio.standalone, ["emulate", "ezsp", "--failure-timing", "bogus=1"])
    assert result.exit_code == 2
    assert "--failure-timing: failure timing 'bogus=1': unknown key 'bogus'" in result.output
    assert "aps_ack_timeout_s, aps_transmissions, route_discovery_s" in result.output
