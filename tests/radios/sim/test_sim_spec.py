"""`--sim-device KIND:IEEE[:key=value...]` and the TOML form of simulated devices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zigpy.types as t
from zigpy.ota.image import OTAImageHeader

from radios.sim.spec import PROFILE_HA, PROFILE_SE, SimDeviceSpec, SimSpecError, allowed_keys, parse_sim_device

IEEE = t.EUI64.convert("00:11:22:33:44:55:66:77")
DATA = Path(__file__).parents[2] / "data" / "gbcs"
_WE = json.loads((Path(__file__).parents[2] / "data" / "se_cbke" / "suite1_worked_example.json").read_text())
_WE_CERT = _WE["initiator"]["certificate"]
_WE_KEY = _WE["initiator"]["static_private_key"]
_WE_CA = _WE["ca_public_key"]


@pytest.mark.parametrize(
    "text",
    [
        "ppmid:0011223344556677",
        "ppmid:00:11:22:33:44:55:66:77",
        "PPMID:00:11:22:33:44:55:66:77",
        "ppmid:00:11:22:33:44:55:66:77:",
    ],
)
def test_both_ieee_forms(text: str) -> None:
    spec = parse_sim_device(text)
    assert spec.kind == "ppmid" and spec.ieee == IEEE


def test_colon_ieee_then_keys() -> None:
    spec = parse_sim_device("hcalcs:00:11:22:33:44:55:66:77:loss=0.25:nwk=0x1234")
    assert spec.ieee == IEEE and spec.loss == 0.25 and spec.nwk == 0x1234


def test_kind_defaults_match_the_gbcs_sample_images() -> None:
    for kind, name, image_type in (("ppmid", "sr11.4-ppmid-firmware-image.bin", 0x0084), ("hcalcs", "sr11.1-firmware-image.bin", 0x0000)):
        spec = parse_sim_device(f"{kind}:0011223344556677")
        hdr, _ = OTAImageHeader.deserialize((DATA / name).read_bytes())
        assert (spec.manufacturer_code, spec.image_type) == (hdr.manufacturer_id, hdr.image_type) == (0x121D, image_type)
        assert spec.file_version < hdr.file_version  # the sample is an upgrade
        assert hdr.minimum_hardware_version <= spec.hardware_version <= hdr.maximum_hardware_version
    assert parse_sim_device("hcalcs:0011223344556677").is_router
    ppmid = parse_sim_device("ppmid:0011223344556677")
    assert not ppmid.is_router and not ppmid.is_sleepy
    assert parse_sim_device("ppmid:0011223344556677:sleepy_poll=7.5").is_sleepy


EVERY_KEY = {
    "manufacturer_code": ("0x1234", 0x1234),
    "image_type": ("0x0085", 0x0085),
    "file_version": ("0xACDCACDB", 0xACDCACDB),
    "hardware_version": ("4609", 0x1201),
    "model": ("PPMID-X", "PPMID-X"),
    "manufacturer_name": ("Acme", "Acme"),
    "profile": ("se", PROFILE_SE),
    "max_data_size": ("82", 82),
    "page_requests": ("true", True),
    "page_size": ("0x400", 1024),
    "response_spacing_ms": ("50", 50),
    "min_block_period_ms": ("250", 250),
    "corrupt": ("1", True),
    "supplier_key": (str(DATA / "supplier-90b3d51f30010000-ds.pem"), str(DATA / "supplier-90b3d51f30010000-ds.pem")),
    "query_delay": ("0.5", 0.5),
    "query_interval": ("30", 30.0),
    "notify_delay": ("0", 0.0),
    "response_timeout": ("2.5", 2.5),
    "max_retries": ("7", 7),
    "wait_interval": ("5", 5.0),
    "reboot_time": ("0.1", 0.1),
    "self_activate_after": ("10", 10),
    "timeout_policy": ("1", 1),
    "activation_policy": ("1", 1),
    "activation_fails": ("false", False),
    # The SE worked example's initiator: its subject is not this IEEE, hence the fault.
    "security": ("se", "se"),
    "cbke_suite": ("1", 1),
    "cbke_cert": (_WE_CERT, _WE_CERT),
    "cbke_key": (_WE_KEY, _WE_KEY),
    "cbke_ca": (_WE_CA, _WE_CA),
    "cbke_fail": ("bad-certificate", "bad-certificate"),
    "ke_server_wait": ("0.5", 0.5),
    "ke_attempts": ("2", 2),
    "ke_retry_delay": ("0", 0.0),
    "ke_timeout": ("30", 30.0),
    "entity_id": ("00db1234567890b7", "00DB1234567890B7"),
    "gbcs_key": (str(DATA / "sim-00db1234567890b7-ds.key"), str(DATA / "sim-00db1234567890b7-ds.key")),
    "gbcs_cert": (str(DATA / "sim-00db1234567890b7-ds.pem"), str(DATA / "sim-00db1234567890b7-ds.pem")),
    "supplier_id": ("90B3D51F30010000", "90B3D51F30010000"),
    "acb_id": ("90B3D51F30000002", "90B3D51F30000002"),
    "tunnel_busy": ("2", 2),
    "tunnel_no_ids": ("1", 1),
    "tunnel_drop": ("3", 3),
    "tunnel_refuse": ("flow-control", "flow-control"),
    "sleepy_poll": ("7.5", 7.5),
    "fast_poll": ("0.25", 0.25),
    "join_fast_poll": ("10", 10.0),
    "loss": ("0.1", 0.1),
    "hops": ("2", 2),
    "link": ("realistic", "realistic"),
    "nwk": ("0xBEEF", 0xBEEF),
    "seed": ("42", 42),
}


def test_every_key_parses() -> None:
    assert set(EVERY_KEY) == set(allowed_keys())
    text = "ppmid:0011223344556677:" + ":".join(f"{k}={v}" for k, (v, _) in EVERY_KEY.items())
    spec = parse_sim_device(text)
    for key, (_, want) in EVERY_KEY.items():
        assert getattr(spec, key) == want, key


@pytest.mark.parametrize(
    ("text", "key", "value", "allowed"),
    [
        ("meter:0011223344556677", "kind", "meter", "ppmid, hcalcs"),
        ("ppmid", "ieee", "", "16 hex digits"),
        ("ppmid:00112233", "ieee", "00112233", "8 colon-separated hex pairs"),
        ("ppmid:00:11:22:33:44:55:66", "ieee", "00:11:22:33:44:55:66", "8 colon-separated hex pairs"),
        ("ppmid:00:11:22:33:44:55:66:zz", "ieee", "00:11:22:33:44:55:66:zz", "16 hex digits"),
        ("ppmid:0000000000000000", "ieee", "0000000000000000", "not all zeros"),
        ("ppmid:0011223344556677:colour=red", "colour", "red", "a known key"),
        ("ppmid:0011223344556677:loss", "loss", None, "key=value"),
        ("ppmid:0011223344556677:loss=1.5", "loss", "1.5", ">= 0 and <= 1"),
        ("ppmid:0011223344556677:loss=x", "loss", "x", ">= 0 and <= 1"),
        ("ppmid:0011223344556677:manufacturer_code=0x10000", "manufacturer_code", "0x10000", "0..65535"),
        ("ppmid:0011223344556677:image_type=-1", "image_type", "-1", "0..65535"),
        ("ppmid:0011223344556677:file_version=0x100000000", "file_version", "0x100000000", "0..4294967295"),
        ("ppmid:0011223344556677:hardware_version=abc", "hardware_version", "abc", "decimal or 0x hex"),
        ("ppmid:0011223344556677:max_data_size=0", "max_data_size", "0", "1..255"),
        ("ppmid:0011223344556677:page_requests=maybe", "page_requests", "maybe", "0, 1, true or false"),
        ("ppmid:0011223344556677:page_size=0", "page_size", "0", "1..65535"),
        ("ppmid:0011223344556677:sleepy_poll=-1", "sleepy_poll", "-1", ">= 0"),
        ("ppmid:0011223344556677:fast_poll=0", "fast_poll", "0", "> 0"),
        ("ppmid:0011223344556677:link=fast", "link", "fast", "instant, realistic"),
        ("ppmid:0011223344556677:self_activate_after=-2", "self_activate_after", "-2", "0..1000"),
        ("ppmid:0011223344556677:min_block_period_ms=70000", "min_block_period_ms", "70000", "0..65535"),
        ("ppmid:0011223344556677:timeout_policy=2", "timeout_policy", "2", "0 or 1"),
        ("ppmid:0011223344556677:activation_policy=yes", "activation_policy", "yes", "0 or 1"),
        ("ppmid:0011223344556677:activation_fails=2", "activation_fails", "2", "0, 1, true or false"),
        ("ppmid:0011223344556677:corrupt=nope", "corrupt", "nope", "0, 1, true or false"),
        ("ppmid:0011223344556677:nwk=0", "nwk", "0", "1..65527"),
        ("ppmid:0011223344556677:nwk=0xFFFC", "nwk", "0xFFFC", "0xFFF7"),
        ("ppmid:0011223344556677:seed=-1", "seed", "-1", "0.."),
        ("ppmid:0011223344556677:profile=zll", "profile", "zll", "ha (0x0104) or se (0x0109)"),
        ("ppmid:0011223344556677:query_interval=0", "query_interval", "0", "> 0"),
        ("ppmid:0011223344556677:response_timeout=inf", "response_timeout", "inf", "> 0"),
        ("ppmid:0011223344556677:loss=0.1:loss=0.2", "loss", "0.2", "given once"),
        ("hcalcs:0011223344556677:sleepy_poll=5", "sleepy_poll", 5.0, "0 for hcalcs"),
        ("ppmid:0011223344556677:security=zigbee", "security", "zigbee", "install-code, se"),
        ("ppmid:0011223344556677:cbke_fail=bad-mac", "cbke_fail", "bad-mac", "only with security=se"),
        ("ppmid:0011223344556677:cbke_cert=abc", "cbke_cert", "abc", "hex digits, or a file"),
        ("ppmid:0011223344556677:security=se", "cbke_cert", None, "required with security=se"),
        ("ppmid:0011223344556677:cbke_suite=3", "cbke_suite", "3", "1 (sect163k1) or 2 (sect283k1)"),
        ("ppmid:0011223344556677:security=se:cbke_fail=loud", "cbke_fail", "loud", "bad-mac, silent"),
        (
            f"ppmid:0011223344556677:security=se:cbke_cert={_WE_CERT}:cbke_key={_WE_KEY}:cbke_ca={_WE_CA}",
            "cbke_cert",
            _WE_CERT,
            "subject 0000000000000002 is not the device 0011223344556677",
        ),
        (
            f"ppmid:0000000000000002:security=se:cbke_cert={_WE_CERT}:cbke_key={_WE_KEY}:cbke_ca={_WE_CA}:cbke_suite=2",
            "cbke_cert",
            _WE_CERT,
            "suite 2 certificate is 74 bytes, got 48",
        ),
        (
            f"ppmid:0000000000000002:security=se:cbke_cert={_WE_CERT}:cbke_key={_WE_KEY}00:cbke_ca={_WE_CA}",
            "cbke_cert",
            _WE_CERT,
            "cbke_key is 22 bytes",
        ),
    ],
)
def test_errors_name_key_value_and_allowed(text: str, key: str, value: object, allowed: str | None) -> None:
    with pytest.raises(SimSpecError) as info:
        parse_sim_device(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.key == key
    if value is not None:
        assert err.value == value
        assert repr(value) in str(err)
    assert key in str(err)
    if allowed is not None:
        assert allowed in err.allowed and allowed in str(err)


def test_model_with_colon_is_refused() -> None:
    # "a b" is accepted as a model; the ":c" that follows is a token without "=".
    with pytest.raises(SimSpecError) as info:
        parse_sim_device("ppmid:0011223344556677:model=a b:c")
    assert info.value.key == "c"


def test_dict_round_trip_and_toml_values() -> None:
    spec = parse_sim_device("ppmid:0011223344556677:loss=0.1:page_requests=1:nwk=0x0101:profile=se")
    data = spec.to_dict()
    assert data["ieee"] == "00:11:22:33:44:55:66:77" and data["kind"] == "ppmid"
    assert all(isinstance(v, str | int | float | bool) for v in data.values())
    assert "seed" not in data  # None is omitted (TOML has no null)
    assert SimDeviceSpec.from_dict(data) == spec
    # TOML gives native types; strings as on the CLI work too.
    native = SimDeviceSpec.from_dict({"kind": "hcalcs", "ieee": "0011223344556677", "loss": 0.5, "page_requests": True, "nwk": 4660})
    assert native.loss == 0.5 and native.page_requests and native.nwk == 0x1234
    assert native.profile == PROFILE_HA


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"ieee": "0011223344556677"}, "kind"),
        ({"kind": "ppmid"}, "ieee"),
        ({"kind": "ppmid", "ieee": "0011223344556677", "speed": 3}, "speed"),
        ({"kind": "ppmid", "ieee": "0011223344556677", "loss": True}, "loss"),
        ({"kind": "ppmid", "ieee": "0011223344556677", "max_data_size": 300}, "max_data_size"),
        ({"kind": "ppmid", "ieee": "00-11-22-33-44-55-66-77"}, "ieee"),
    ],
)
def test_from_dict_errors(data: dict[str, object], key: str) -> None:
    with pytest.raises(SimSpecError) as info:
        SimDeviceSpec.from_dict(data)
    assert info.value.key == key


def test_dataclass_validates_direct_construction() -> None:
    with pytest.raises(SimSpecError) as info:
        SimDeviceSpec(kind="ppmid", ieee=IEEE, loss=2.0)
    assert info.value.key == "loss"
    spec = SimDeviceSpec(kind="hcalcs", ieee="00:11:22:33:44:55:66:77", max_data_size=50)
    assert spec.max_data_size == 50 and spec.model == "HCALCS"
    assert spec.replace(loss=0.5).loss == 0.5
    with pytest.raises(SimSpecError):
        spec.replace(loss=-0.5)
    assert hash(spec) == hash(SimDeviceSpec(kind="hcalcs", ieee=IEEE, max_data_size=50))


# -- property: the CLI text and the TOML dict describe the same spec ----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = {
    "manufacturer_code": st.integers(0, 0xFFFF),
    "image_type": st.integers(0, 0xFFFF),
    "file_version": st.integers(0, 0xFFFFFFFF),
    "hardware_version": st.integers(0, 0xFFFF),
    "max_data_size": st.integers(1, 255),
    "page_requests": st.booleans(),
    "page_size": st.integers(1, 0xFFFF),
    "min_block_period_ms": st.integers(0, 0xFFFF),
    "self_activate_after": st.integers(0, 1000),
    "timeout_policy": st.integers(0, 1),
    "activation_policy": st.integers(0, 1),
    "activation_fails": st.booleans(),
    "corrupt": st.booleans(),
    "sleepy_poll": st.floats(0, 1e6, allow_nan=False),
    "loss": st.floats(0, 1),
    "link": st.sampled_from(["instant", "realistic"]),
    "nwk": st.integers(1, 0xFFF7),
    "seed": st.integers(0, 2**63 - 1),
}


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["ppmid", "hcalcs"]),
    ieee=st.binary(min_size=8, max_size=8).filter(lambda b: b not in (b"\x00" * 8, b"\xff" * 8)),
    colon=st.booleans(),
    hex_ints=st.booleans(),
    chosen=st.fixed_dictionaries({}, optional=_values),
)
def test_cli_text_and_dict_agree(kind: str, ieee: bytes, colon: bool, hex_ints: bool, chosen: dict[str, object]) -> None:
    if kind == "hcalcs":
        chosen.pop("sleepy_poll", None)
    ieee_text = ":".join(f"{b:02x}" for b in ieee) if colon else ieee.hex().upper()

    def text(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "0"
        if isinstance(v, int) and hex_ints:
            return hex(v)
        return repr(v) if isinstance(v, float) else str(v)

    cli = f"{kind}:{ieee_text}" + "".join(f":{k}={text(v)}" for k, v in chosen.items())
    spec = parse_sim_device(cli)
    assert spec.ieee == t.EUI64.convert(":".join(f"{b:02x}" for b in ieee))
    for key, value in chosen.items():
        assert getattr(spec, key) == value, key
    assert SimDeviceSpec.from_dict(spec.to_dict()) == spec
    assert SimDeviceSpec.from_dict({"kind": kind, "ieee": ieee_text, **chosen}) == spec


def test_the_network_names_where_a_twice_given_device_came_from() -> None:
    from radios.sim.spec import SimNetworkError, sim_network

    ieee = "00:11:22:33:44:55:66:77"
    with pytest.raises(SimNetworkError) as err:
        sim_network([f"hcalcs:{ieee}"], [{"kind": "hcalcs", "ieee": ieee}], "/etc/han-ota/lab.toml")
    assert str(err.value) == f"simulated device {ieee} is given twice, by --sim-device and by /etc/han-ota/lab.toml: [[sim_device]] #1: give it once"
    with pytest.raises(SimNetworkError, match=r"^--sim-device #2: sim device: kind="):
        sim_network([f"hcalcs:{ieee}", "fridge:0011223344556688"], [])
    assert [str(s.ieee) for s in sim_network([f"ppmid:{ieee}"], [{"kind": "hcalcs", "ieee": "0011223344556688"}])] == [ieee, "00:11:22:33:44:55:66:88"]


def test_push_with_a_device_twice_names_no_internal_class(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from typer.testing import CliRunner

    from han_ota.cli import _mount, app

    _mount()
    config = tmp_path / "lab.toml"
    config.write_text('[[sim_device]]\nkind = "hcalcs"\nieee = "00:11:22:33:44:55:66:77"\n')
    image = Path(__file__).parents[2] / "data" / "gbcs" / "sr11.1-firmware-image.bin"
    result = CliRunner().invoke(app, ["push", str(image), "--device", "00:11:22:33:44:55:66:77", "--sim-device", "hcalcs:00:11:22:33:44:55:66:77", "--config", str(config)])
    assert result.exit_code == 1
    assert f"by --sim-device and by {config}: [[sim_device]] #1" in result.output and "SimHan" not in result.output
