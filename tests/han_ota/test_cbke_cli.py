"""han_ota/cli_cbke.py: `han-ota cbke ca | issue | inspect | derive` (issue 12 item 6)."""

from __future__ import annotations

import datetime as dt

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.se.suites import SUITE_1, SUITE_2, Suite
from han_ota.cli import _mount
from han_ota.cli import app as root_app
from han_ota.cli_app import run as run_root
from han_ota.cli_cbke import app

VECTOR = json.loads((Path(__file__).parents[1] / "data" / "se_cbke" / "suite1_worked_example.json").read_text())
runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def ok_json(*args: str) -> dict:
    code, out, err = run(*args, "--json")
    assert code == 0, out + err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def refused(*args: str, code: int = 1) -> str:
    """The --json error object's message; the text run's stderr says the same."""
    got, out, err = run(*args, "--json")
    assert got == code, out + err
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report) == {"error"}
    got_text, _, err_text = run(*args)
    assert got_text == code and f"error: {report['error']}" in err_text
    return report["error"]


def public_of(suite: Suite, private_hex: str) -> str:
    """d*G by the curve directly, as the reference for what the tools print."""
    curve = suite.curve
    return curve.compress(curve.multiply_base(int(private_hex, 16))).hex().upper()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- the worked example


@pytest.fixture
def example(tmp_path: Path) -> dict[str, str]:
    """The suite-1 worked example as files, in every accepted form: raw, hex, hex with line breaks."""
    files: dict[str, str] = {}

    def put(name: str, content: bytes) -> None:
        (tmp_path / name).write_bytes(content)
        files[name] = str(tmp_path / name)

    put("ca.pub", VECTOR["ca_public_key"].encode() + b"\n")
    for side in ("responder", "initiator"):
        d = VECTOR[side]
        put(f"{side}.cert", bytes.fromhex(d["certificate"]))  # raw
        put(f"{side}.key", d["static_private_key"].lower().encode())
        key = d["ephemeral_private_key"]
        put(f"{side}.eph", (key[:20] + "\n" + key[20:] + "\n").encode())
        put(f"{side}.ephpub", d["ephemeral_public_key"].encode())
    return files


def derive_args(f: dict[str, str], own: str, peer: str) -> list[str]:
    return [
        "derive", "--suite", "1", "--ca", f["ca.pub"], "--cert", f[f"{own}.cert"], "--key", f[f"{own}.key"],
        "--ephemeral-key", f[f"{own}.eph"], "--peer-cert", f[f"{peer}.cert"],
        "--peer-ephemeral", f[f"{peer}.ephpub"], f"--{own}",
    ]  # fmt: skip


def test_worked_example_as_responder_and_initiator(example: dict[str, str]) -> None:
    v = ok_json(*derive_args(example, "responder", "initiator"))
    u = ok_json(*derive_args(example, "initiator", "responder"))
    assert set(v) == {
        "suite", "role", "own_ieee", "peer_ieee", "own_ephemeral_public_key", "peer_public_key",
        "z", "mac_key", "key_data", "macu", "macv",
    }  # fmt: skip
    assert (v["role"], u["role"]) == ("responder", "initiator")
    assert v["z"] == u["z"] == VECTOR["shared_secret_z"]
    assert v["mac_key"] == u["mac_key"] == VECTOR["mac_key"]
    assert v["macv"] == u["macv"] == VECTOR["macv"]
    assert v["macu"] == u["macu"] and len(v["macu"]) == 32
    assert v["key_data"] == u["key_data"] and len(v["key_data"]) == 32
    assert v["macu"] != v["macv"] and v["key_data"] != v["mac_key"]
    # Own IEEE from --cert's subject, the peer's from --peer-cert's; the peer's static key reconstructed.
    assert (v["own_ieee"], v["peer_ieee"]) == ("00:00:00:00:00:00:00:01", "00:00:00:00:00:00:00:02")
    assert v["peer_public_key"] == VECTOR["initiator"]["static_public_key"]
    assert u["peer_public_key"] == VECTOR["responder"]["static_public_key"]
    assert v["own_ephemeral_public_key"] == VECTOR["responder"]["ephemeral_public_key"]


def test_worked_example_from_hex_on_the_command_line() -> None:
    r, i = VECTOR["responder"], VECTOR["initiator"]
    code, out, err = run(
        "derive", "--suite", "1", "--ca", VECTOR["ca_public_key"], "--cert", r["certificate"],
        "--key", r["static_private_key"], "--ephemeral-key", r["ephemeral_private_key"],
        "--peer-cert", i["certificate"], "--peer-ephemeral", i["ephemeral_public_key"], "--responder",
    )  # fmt: skip
    assert code == 0, out + err
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["Z"].strip() == VECTOR["shared_secret_z"]
    assert lines["MacKey"].strip() == VECTOR["mac_key"]
    assert lines["MACV"].strip() == VECTOR["macv"]
    assert {"KeyData", "MACU", "own IEEE", "peer IEEE"} <= set(lines)
    # Keys given on the command line are the user's; derive echoes none of them.
    assert r["static_private_key"] not in out and r["ephemeral_private_key"] not in out


def test_derive_refuses_a_certificate_that_is_not_the_keys(example: dict[str, str]) -> None:
    args = derive_args(example, "responder", "initiator")
    args[args.index("--key") + 1] = example["initiator.key"]
    message = refused(*args)
    assert "--cert does not carry --key's public key" in message
    assert VECTOR["initiator"]["static_private_key"] not in message


def test_derive_needs_exactly_one_role(example: dict[str, str]) -> None:
    args = derive_args(example, "responder", "initiator")
    assert "exactly one of --initiator and --responder" in refused(*args, "--initiator", code=2)
    assert "exactly one of --initiator and --responder" in refused(*args[:-1], code=2)


def test_derive_refuses_bad_inputs_naming_the_option(example: dict[str, str], tmp_path: Path) -> None:
    args = derive_args(example, "responder", "initiator")

    def with_(option: str, value: str) -> list[str]:
        out = list(args)
        out[out.index(option) + 1] = value
        return out

    short = tmp_path / "short.key"
    short.write_text(VECTOR["responder"]["static_private_key"][:-2])
    assert "--key" in (m := refused(*with_("--key", str(short)))) and "20 bytes, needs 21" in m
    odd = tmp_path / "odd.eph"
    odd.write_text("ABC")
    assert "--ephemeral-key" in (m := refused(*with_("--ephemeral-key", str(odd)))) and "odd number of digits" in m
    m = refused(*with_("--peer-ephemeral", str(tmp_path / "missing.pub")))
    assert "--peer-ephemeral: no file" in m and "missing.pub" in m
    # Hex on the command line that is no key: refused without echoing it.
    m = refused(*with_("--key", "not-a-key!"))
    assert "--key: the value given names no file" in m and "not-a-key!" not in m
    # A suite-2 certificate where suite 1 is asked for: the length, at its offset.
    m = refused(*with_("--peer-cert", "00" * 74))
    assert "--peer-cert: certificate length at offset 48: 74 bytes, suite 1 certificates are 48" in m
    # A point that is not one (prefix 0x04).
    bad_point = "04" + VECTOR["initiator"]["ephemeral_public_key"][2:]
    assert "prefix 0x04" in refused(*with_("--peer-ephemeral", bad_point))
    assert "--suite 3" in refused(*with_("--suite", "3"), code=2)


# --------------------------------------------------------------------------- ca, issue, inspect


@pytest.mark.parametrize(
    ("suite", "subject", "shown"),
    [(SUITE_1, "00:0d:6f:00:0a:bc:de:f0", "00:0d:6f:00:0a:bc:de:f0"), (SUITE_2, "000D6F000ABCDEF1", "00:0d:6f:00:0a:bc:de:f1")],
    ids=["suite1", "suite2"],
)
def test_ca_issue_inspect_round_trip(tmp_path: Path, suite: Suite, subject: str, shown: str) -> None:
    ca_prefix, hub_prefix = str(tmp_path / "lab-ca"), str(tmp_path / "hub")
    made = ok_json("ca", "--suite", str(suite.number), "-o", ca_prefix, "--issuer", "54:45:53:54:53:45:43:41")
    assert made == {
        "suite": suite.number,
        "curve": suite.curve.name,
        "issuer": "5445535453454341",
        "public_key": made["public_key"],
        "private_key_file": ca_prefix + ".key",
        "public_key_file": ca_prefix + ".pub",
        "ca_file": ca_prefix + ".ca.json",
    }
    ca_private = Path(ca_prefix + ".key").read_text().strip()
    assert mode(Path(ca_prefix + ".key")) == 0o600
    assert len(ca_private) == 2 * suite.private_key_length
    assert Path(ca_prefix + ".pub").read_text().strip() == made["public_key"] == public_of(suite, ca_private)
    assert json.loads(Path(ca_prefix + ".ca.json").read_text()) == {"suite": suite.number, "issuer": "5445535453454341"}

    issued = ok_json("issue", "--ca", ca_prefix, "--subject", subject, "--suite", str(suite.number), "-o", hub_prefix)
    cert_hex = Path(hub_prefix + ".cert").read_text().strip()
    key_hex = Path(hub_prefix + ".key").read_text().strip()
    assert mode(Path(hub_prefix + ".key")) == 0o600
    assert len(cert_hex) == 2 * suite.certificate_length and len(key_hex) == 2 * suite.private_key_length
    assert issued["certificate"] == cert_hex and issued["subject"] == shown
    assert issued["public_key"] == public_of(suite, key_hex)
    assert issued["certificate_file"] == hub_prefix + ".cert" and issued["private_key_file"] == hub_prefix + ".key"

    # inspect: suite told by length, every field, and the reconstruction gives the issued key's public point.
    for ca_form in (ca_prefix, ca_prefix + ".pub", made["public_key"]):
        seen = ok_json("inspect", hub_prefix + ".cert", "--ca", ca_form)
        assert seen["suite"] == suite.number and seen["length"] == suite.certificate_length
        assert seen["subject"] == shown and seen["issuer"] == "5445535453454341"
        assert seen["public_key"] == public_of(suite, key_hex)
        assert seen["ca_public_key"] == made["public_key"]
    if suite.number == 2:
        assert (seen["type"], seen["curve_id"], seen["hash_id"], seen["key_usage"]) == ("0x00", "0x0D", "0x08", "0x08")
        assert seen["valid_to"] == 0xFFFFFFFF and seen["valid_until_utc"] is None and seen["key_agreement"] is True
        assert len(seen["serial"]) == 16
    else:
        assert seen["profile_attributes"] == "00" * 10
    # Without --ca no key; the hex itself works as CERT.
    bare = ok_json("inspect", cert_hex)
    assert bare["public_key"] is None and bare["certificate"] == cert_hex

    # Neither command prints a private key: not the CA's, not the one it writes.
    other, dev = str(tmp_path / "other"), str(tmp_path / "dev")
    for args, written in (
        (("ca", "--suite", str(suite.number), "-o", other), other + ".key"),
        (("issue", "--ca", ca_prefix, "--subject", subject, "--suite", str(suite.number), "-o", dev), dev + ".key"),
    ):
        code, out, err = run(*args)
        assert code == 0, out + err
        for secret in (ca_private, key_hex, Path(written).read_text().strip()):
            assert secret.upper() not in (out + err).upper()


def test_issued_suite2_pair_agrees_with_derive(tmp_path: Path) -> None:
    """A hub and a device certificate from one lab CA: both sides of derive reach one key."""
    ca = str(tmp_path / "ca")
    ok_json("ca", "--suite", "2", "-o", ca)
    for name, ieee in (("hub", "00:0d:6f:00:00:00:00:01"), ("dev", "00:0d:6f:00:00:00:00:02")):
        ok_json("issue", "--ca", ca, "--subject", ieee, "--suite", "2", "-o", str(tmp_path / name), "--valid-days", "30")
        ok_json("issue", "--ca", ca, "--subject", ieee, "--suite", "2", "-o", str(tmp_path / f"{name}-eph"))
    p = {name: str(tmp_path / name) for name in ("hub", "dev", "hub-eph", "dev-eph")}
    hub_eph_pub = ok_json("inspect", p["hub-eph"] + ".cert", "--ca", ca)["public_key"]
    dev_eph_pub = ok_json("inspect", p["dev-eph"] + ".cert", "--ca", ca)["public_key"]
    v = ok_json(
        "derive", "--suite", "2", "--ca", ca, "--cert", p["hub"] + ".cert", "--key", p["hub"] + ".key",
        "--ephemeral-key", p["hub-eph"] + ".key", "--peer-cert", p["dev"] + ".cert", "--peer-ephemeral", dev_eph_pub, "--responder",
    )  # fmt: skip
    u = ok_json(
        "derive", "--suite", "2", "--ca", ca, "--cert", p["dev"] + ".cert", "--key", p["dev"] + ".key",
        "--ephemeral-key", p["dev-eph"] + ".key", "--peer-cert", p["hub"] + ".cert", "--peer-ephemeral", hub_eph_pub, "--initiator",
    )  # fmt: skip
    assert len(v["z"]) == 2 * 36
    assert {k: v[k] for k in ("z", "mac_key", "key_data", "macu", "macv")} == {k: u[k] for k in ("z", "mac_key", "key_data", "macu", "macv")}
    seen = ok_json("inspect", p["hub"] + ".cert")
    assert seen["valid_to"] == 30 * 86400 and seen["valid_until_utc"] is not None
    # Valid-from counts seconds from 2000-01-01 UTC (the Zigbee epoch): issued now, it
    # reads as today; valid-to counts from valid-from.
    start = dt.datetime.fromisoformat(seen["valid_from_utc"].replace("Z", "+00:00"))
    until = dt.datetime.fromisoformat(seen["valid_until_utc"].replace("Z", "+00:00"))
    assert abs((start - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 600
    assert until - start == dt.timedelta(days=30)
    assert seen["valid_from"] == int(start.timestamp()) - 946_684_800
    code, out, err = run("inspect", p["hub"] + ".cert")
    assert code == 0, out + err
    assert f"{seen['valid_from']} ({seen['valid_from_utc']})" in out
    assert f"2592000 s after valid from (until {seen['valid_until_utc']})" in out


def test_existing_output_needs_force(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca")
    ok_json("ca", "--suite", "1", "-o", ca)
    first = Path(ca + ".key").read_text()
    assert "ca.key exists; use --force" in refused("ca", "--suite", "1", "-o", ca, code=2)
    assert Path(ca + ".key").read_text() == first
    Path(ca + ".key").chmod(0o644)
    ok_json("ca", "--suite", "1", "-o", ca, "--force")
    assert Path(ca + ".key").read_text() != first and mode(Path(ca + ".key")) == 0o600

    dev = str(tmp_path / "dev")
    ok_json("issue", "--ca", ca, "--subject", "0000000000000001", "--suite", "1", "-o", dev)
    cert = Path(dev + ".cert").read_text()
    assert "dev.cert exists; use --force" in refused("issue", "--ca", ca, "--subject", "0000000000000001", "--suite", "1", "-o", dev, code=2)
    assert Path(dev + ".cert").read_text() == cert
    ok_json("issue", "--ca", ca, "--subject", "0000000000000001", "--suite", "1", "-o", dev, "--force")
    assert Path(dev + ".cert").read_text() != cert

    # Only some of the outputs existing still writes none of them.
    Path(str(tmp_path / "half") + ".pub").write_text("x")
    refused("ca", "--suite", "1", "-o", str(tmp_path / "half"), code=2)
    assert not Path(str(tmp_path / "half") + ".key").exists()


def test_issue_refusals(tmp_path: Path) -> None:
    ca = str(tmp_path / "ca")
    ok_json("ca", "--suite", "1", "-o", ca)
    out = str(tmp_path / "dev")
    args = ["issue", "--ca", ca, "--subject", "0000000000000001", "--suite", "1", "-o", out]
    m = refused(*["issue", "--ca", str(tmp_path / "none"), *args[3:]])
    assert "none.ca.json is missing" in m and "han-ota cbke ca --suite N" in m
    assert "suite 1 CA, not suite 2" in refused(*[*args[:5], "--suite", "2", *args[7:]], code=2)
    assert "--subject" in refused(*[*args[:3], "--subject", "00:0d:6f", *args[5:]], code=2)
    assert "suite 1 certificates carry no validity" in refused(*args, "--valid-days", "3", code=2)
    Path(ca + ".pub").write_text(public_of(SUITE_1, "01") + "\n")
    assert "ca.pub is not the public key of" in refused(*args)
    assert not Path(out + ".key").exists() and not Path(out + ".cert").exists()


def test_ca_refusals(tmp_path: Path) -> None:
    assert "--issuer" in refused("ca", "--suite", "2", "-o", str(tmp_path / "c"), "--issuer", "1234", code=2)
    assert "--issuer" in refused("ca", "--suite", "2", "-o", str(tmp_path / "c"), "--issuer", "12345678 9ABCDEF", code=2)
    assert "--suite 0" in refused("ca", "--suite", "0", "-o", str(tmp_path / "c"), code=2)
    assert "cannot write" in refused("ca", "--suite", "1", "-o", str(tmp_path / "no-dir" / "c"), code=2)
    assert not list(tmp_path.iterdir())


def test_inspect_refusals_name_field_and_offset(tmp_path: Path) -> None:
    good1 = VECTOR["responder"]["certificate"]
    assert refused("inspect", good1[:-2]) == "CERT: certificate length at offset 0: 47 bytes, which is no suite's certificate (suite 1 48, suite 2 74)"
    assert refused("inspect", "04" + good1[2:]) == "CERT: certificate reconstruction point at offset 0: prefix 0x04, must be 0x02 or 0x03 (compressed)"
    s2 = bytearray(74)
    s2[9], s2[10], s2[37] = 0x0E, 0x08, 0x02
    assert refused("inspect", s2.hex()) == "CERT: certificate curve at offset 9: 0x0E, must be 0x0D (sect283k1)"
    # Hex too long for a file name is still read as hex (and refused for its length).
    assert "300 bytes" in refused("inspect", "AB" * 300)
    raw = tmp_path / "c.bin"
    raw.write_bytes(bytes.fromhex(good1)[:40])
    assert "40 bytes" in refused("inspect", str(raw))
    assert "no file" in refused("inspect", str(tmp_path / "missing.cert"))
    assert "is not a regular file" in refused("inspect", str(tmp_path))
    # A CA key of the other suite's length, or not on the curve.
    assert "--ca" in (m := refused("inspect", good1, "--ca", "02" + "00" * 36)) and "37 bytes, needs 22" in m
    assert "reconstruction with --ca" in refused("inspect", good1, "--ca", "03" + "FF" * 21)


def test_inspect_text_shows_every_field_with_its_offset() -> None:
    code, out, err = run("inspect", VECTOR["initiator"]["certificate"], "--ca", VECTOR["ca_public_key"])
    assert code == 0, out + err
    assert "suite 1" in out and "48 bytes" in out
    for label in ("reconstruction point @0:", "subject @22:", "issuer @30:", "profile attributes @38:"):
        assert label in out
    assert "00:00:00:00:00:00:00:02" in out and "5445535453454341" in out
    assert VECTOR["initiator"]["static_public_key"] in out


def test_usage_errors_through_the_root_cli_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    _mount()
    code = run_root(root_app, ["cbke", "derive", "--suite", "1", "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2 and "--ca" in report["error"]
