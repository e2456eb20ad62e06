"""han_ota/cli_gbcs.py: `han-ota gbcs verify | keygen | sign-activation`."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from typer.testing import CliRunner

from han_ota.cli_gbcs import app

DATA = Path(__file__).parents[1] / "data" / "gbcs"
CERT = str(DATA / "supplier-90b3d51f30010000-ds.pem")
KEY = str(DATA / "supplier-90b3d51f30010000-ds.key")
HASH = "AA758690730934FF0685AA758690730934FF0685657788990011223344556677"
IMAGE_HASH = "7542f475e3f12eae887d81e32c46d313741d67076b13caec2f82e00ba5e1bb36"
runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def flat(output: str) -> str:
    """Usage errors come in a rich box: drop the frame and re-join the wrapped lines."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def fields(output: str) -> dict[str, str]:
    """`label: value` lines; the first of each label."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        label, sep, value = line.partition(":")
        if sep and label not in out:
            out[label.strip()] = value.strip()
    return out


def public_pem(path: Path) -> Path:
    key = serialization.load_pem_private_key(Path(KEY).read_bytes(), None)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path.write_bytes(pem)
    return path


@pytest.mark.parametrize(
    ("name", "counter", "when"),
    [
        ("cs06-immediate-success-command.hex", "1000", "none (activate immediately)"),
        ("cs06-future-dated-success-command.hex", "1001", "2030-01-15T09:00:00Z"),
        ("cs06-cancellation-success-command.hex", "1002", "9999-12-31T23:59:59Z (cancellation)"),
    ],
)
def test_verify_prints_every_field(name: str, counter: str, when: str) -> None:
    code, output = run("verify", str(DATA / name), "--trust", CERT)
    assert code == 0, output
    f = fields(output)
    assert f["CRA flag"] == "command"
    assert f["counter"] == counter
    assert f["content counter"] == counter
    assert f["originator"] == "90B3D51F30010000"
    assert f["recipient"] == "00DB1234567890A0"
    assert f["date-time"] == "absent"
    assert f["message code"] == "0x0012 (CS06 Activate Firmware)"
    assert f["image hash"] == HASH
    assert f["execution time"] == when
    assert len(f["signature"]) == 128
    assert f["form"].startswith("general-ciphering (MAC ")
    assert f["verdict"].startswith("VALID: verified")
    assert f["reason"] == "OK (ok)"
    assert f["response code"] == "0"
    assert "recipient check skipped (no --device)" in output
    assert "image hash check skipped (no --hash)" in output


@pytest.mark.parametrize(
    ("name", "counter", "when", "cancellation"),
    [
        ("cs06-immediate-success-command.hex", 1000, None, False),
        ("cs06-future-dated-success-command.hex", 1001, "2030-01-15T09:00:00Z", False),
        ("cs06-cancellation-success-command.hex", 1002, "9999-12-31T23:59:59Z", True),
    ],
)
def test_verify_json_is_one_object(name: str, counter: int, when: str | None, cancellation: bool) -> None:
    code, output = run("verify", str(DATA / name), "--trust", CERT, "--device", "00:db:12:34:56:78:90:a0",
                       "--hash", HASH.lower(), "--last-counter", str(counter - 1), "--supplier", "90B3D51F30010000", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["valid"] is True
    assert report["reason"] == "OK"
    assert report["originator"] == "90B3D51F30010000"
    assert report["recipient"] == "00DB1234567890A0"
    assert report["counter"] == counter
    assert report["message_code"] == "0x0012"
    assert report["hash"] == HASH
    assert report["execution_time"] == when
    assert report["cancellation"] is cancellation
    assert report["skipped_checks"] == []
    assert report["response_code"] == 0
    assert report["alert_code"] is None
    assert report["trust"][0]["entity_id"] == "90B3D51F30010000"


@pytest.mark.parametrize(
    ("extra", "reason", "alert"),
    [
        (["--device", "00DB1234567890A9"], "WRONG_RECIPIENT", None),
        (["--hash", IMAGE_HASH], "HASH_MISMATCH", "0x8F1C"),
        (["--last-counter", "1000"], "REPLAYED_COUNTER", "0x8F3D"),
        (["--supplier", "90B3D51F30020000"], "NO_AUTHORITY", "0x8F30"),
    ],
)
def test_verify_refusals_exit_1(extra: list[str], reason: str, alert: str | None) -> None:
    code, output = run("verify", str(DATA / "cs06-immediate-success-command.hex"), "--trust", CERT, "--json", *extra)
    assert code == 1
    report = json.loads(output)
    assert report["valid"] is False
    assert report["reason"] == reason
    assert report["alert_code"] == alert


def test_verify_text_refusal() -> None:
    code, output = run("verify", str(DATA / "cs06-future-dated-success-command.hex"), "--trust", CERT, "--hash", IMAGE_HASH)
    assert code == 1
    f = fields(output)
    assert f["verdict"].startswith("REFUSED: hash mismatch: command names AA7586")
    assert f["reason"] == "HASH_MISMATCH (hash mismatch)"
    assert f["response code"] == "2"
    assert f["alert code"] == "0x8F1C"


def test_verify_device_messages_show_raw_content() -> None:
    code, output = run("verify", str(DATA / "cs06-immediate-success-response.hex"), "--trust", CERT)
    assert code == 1
    f = fields(output)
    assert f["CRA flag"] == "response"
    assert f["date-time"] == "2015-01-01T00:00:00Z"
    assert f["content"] == "300902010004040123ABCE"
    # A response is "not a command", not "no trust anchor" for its signer (issue 11 item 18d).
    assert f["reason"] == "NOT_A_COMMAND (not a command)"
    assert f["verdict"] == "REFUSED: CRA flag is response, not command"


def test_verify_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "short.hex"
    bad.write_text((DATA / "cs06-immediate-success-command.hex").read_text()[:-2])
    code, output = run("verify", str(bad), "--trust", CERT, "--json")
    assert code == 1
    report = json.loads(output)
    assert report["valid"] is False
    assert report["reason"] == "MALFORMED"
    assert report["error"] == {"offset": 9, "field": "ciphered content", "detail": "truncated: needs 156 bytes, 155 left"}
    assert report["originator"] is None
    code, output = run("verify", str(bad), "--trust", CERT)
    assert code == 1
    assert output.strip() == "REFUSED: malformed command: offset 9: ciphered content: truncated: needs 156 bytes, 155 left"


def test_verify_raw_binary_file(tmp_path: Path) -> None:
    raw = tmp_path / "cmd.bin"
    raw.write_bytes(bytes.fromhex((DATA / "cs06-future-dated-success-command.hex").read_text()))
    code, output = run("verify", str(raw), "--trust", CERT, "--json")
    assert code == 0
    assert json.loads(output)["counter"] == 1001


def test_trust_forms(tmp_path: Path) -> None:
    cmd = str(DATA / "cs06-immediate-success-command.hex")
    pub = public_pem(tmp_path / "pub.pem")
    # A lone public key applies to the originator.
    code, output = run("verify", cmd, "--trust", str(pub), "--json")
    assert code == 0
    assert json.loads(output)["trust"][0]["source"].startswith("applied to the command's originator")
    # ID=PATH names the entity.
    code, output = run("verify", cmd, "--trust", f"90B3D51F30010000={pub}", "--json")
    assert code == 0
    # A key for another entity leaves the originator unknown.
    code, output = run("verify", cmd, "--trust", f"90B3D51F30020000={pub}", "--json")
    assert code == 1 and json.loads(output)["reason"] == "UNKNOWN_SUPPLIER"
    # Two anchors that name no entity are ambiguous.
    code, output = run("verify", cmd, "--trust", str(pub), "--trust", str(pub))
    assert code == 2 and "give it as ID=PATH" in flat(output)
    # An ID contradicting the certificate is refused.
    code, output = run("verify", cmd, "--trust", f"90B3D51F30020000={CERT}")
    assert code == 2 and "names entity 90B3D51F30010000, not 90B3D51F30020000" in flat(output)
    # Unreadable anchors are usage errors.
    code, output = run("verify", cmd, "--trust", str(tmp_path / "missing.pem"))
    assert code == 2


def test_bad_options_are_usage_errors() -> None:
    cmd = str(DATA / "cs06-immediate-success-command.hex")
    assert run("verify", cmd, "--trust", CERT, "--device", "00DB")[0] == 2
    assert run("verify", cmd, "--trust", CERT, "--hash", "AA75")[0] == 2
    assert run("verify", cmd, "--trust", CERT, "--last-counter", "-1")[0] == 2
    assert run("verify", cmd)[0] == 2  # --trust is required


def test_keygen(tmp_path: Path) -> None:
    prefix = str(tmp_path / "bench")
    code, output = run("keygen", "--entity-id", "11:22:33:44:55:66:77:88", "-o", prefix)
    assert code == 0, output
    key_path, cert_path = Path(prefix + ".key"), Path(prefix + ".pem")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    before = key_path.read_bytes()
    code, output = run("keygen", "--entity-id", "1122334455667788", "-o", prefix)
    assert code == 2 and "exists; use --force to overwrite" in flat(output)
    assert key_path.read_bytes() == before
    key_path.chmod(0o644)
    code, _ = run("keygen", "--entity-id", "1122334455667788", "-o", prefix, "--force")
    assert code == 0
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert run("keygen", "--entity-id", "nope", "-o", str(tmp_path / "x"))[0] == 2


def independent_check(apdu: bytes, cert_path: Path) -> None:
    public = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_key()
    assert apdu[0] == 0xDF and apdu[-65] == 0x40
    sig = encode_dss_signature(int.from_bytes(apdu[-64:-32], "big"), int.from_bytes(apdu[-32:], "big"))
    public.verify(sig, apdu[1:-65], ec.ECDSA(hashes.SHA256()))


def test_sign_then_verify_round_trip(tmp_path: Path) -> None:
    prefix = str(tmp_path / "sup")
    assert run("keygen", "--entity-id", "1122334455667788", "-o", prefix)[0] == 0
    out = tmp_path / "cmd.hex"
    code, output = run("sign-activation", "--key", prefix + ".key", "--originator", "1122334455667788",
                       "--device", "00DB1234567890A0", "--hash", IMAGE_HASH, "--counter", "42",
                       "--at", "2030-01-15T09:00:00Z", "-o", str(out))
    assert code == 0, output
    text = out.read_text()
    assert text == text.upper().strip() and not text.endswith("\n")
    apdu = bytes.fromhex(text)
    independent_check(apdu, Path(prefix + ".pem"))
    assert b"20300115090000Z" in apdu
    code, output = run("verify", str(out), "--trust", prefix + ".pem", "--device", "00DB1234567890A0",
                       "--hash", IMAGE_HASH, "--last-counter", "41", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["valid"] and report["counter"] == 42 and report["execution_time"] == "2030-01-15T09:00:00Z"
    assert report["originator"] == "1122334455667788" and report["form"] == "general-signing"


def test_sign_variants(tmp_path: Path) -> None:
    base = ["sign-activation", "--key", KEY, "--originator", "90B3D51F30010000", "--device", "00DB1234567890A0",
            "--hash", HASH]
    # Re-signing the cancellation vector's fields reproduces it but for signature and MAC.
    out = tmp_path / "cancel.hex"
    assert run(*base, "--counter", "1002", "--cancel", "--ciphered", "-o", str(out))[0] == 0
    ref = (DATA / "cs06-cancellation-success-command.hex").read_text()
    got = out.read_text()
    assert len(got) == len(ref)
    assert got[: -(76 * 2)] == ref[: -(76 * 2)]
    assert got[-24:] == "0" * 24
    independent_check(bytes.fromhex(got)[14:-12], Path(CERT))
    # Binary output.
    raw = tmp_path / "cmd.bin"
    assert run(*base, "--counter", "7", "--binary", "-o", str(raw))[0] == 0
    independent_check(raw.read_bytes(), Path(CERT))
    # Standard output.
    result = runner.invoke(app, [*base, "--counter", "8", "-o", "-"])
    assert result.exit_code == 0
    independent_check(bytes.fromhex(result.stdout), Path(CERT))


@pytest.mark.parametrize(
    "extra",
    [
        ["--counter", "1", "--at", "2030-01-15T09:00:00Z", "--cancel"],
        ["--counter", "1", "--at", "2030-01-15T09:00:00"],  # no zone
        ["--counter", "1", "--at", "2030-01-15T09:00:00+01:00"],
        ["--counter", "1", "--at", "2030-01-15T09:00:00.5Z"],
        ["--counter", "1", "--at", "tomorrow"],
        ["--counter", "-1"],
    ],
)
def test_sign_usage_errors(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "x.hex"
    code, _ = run("sign-activation", "--key", KEY, "--originator", "90B3D51F30010000", "--device", "00DB1234567890A0",
                  "--hash", HASH, *extra, "-o", str(out))
    assert code == 2
    assert not out.exists()


def test_sign_with_a_certificate_as_key_is_a_usage_error(tmp_path: Path) -> None:
    code, output = run("sign-activation", "--key", CERT, "--originator", "90B3D51F30010000", "--device",
                       "00DB1234567890A0", "--hash", HASH, "--counter", "1", "-o", str(tmp_path / "x"))
    assert code == 2


# ------------------------------------------------------------------ base64 (issue 11 item 18)


def test_verify_reads_a_base64_command(tmp_path: Path) -> None:
    raw = bytes.fromhex((DATA / "cs06-immediate-success-command.hex").read_text())
    path = tmp_path / "cmd.b64"
    path.write_bytes(base64.b64encode(raw) + b"\n")
    code, out = run("verify", str(path), "--trust", CERT, "--json")
    report = json.loads(out.splitlines()[-1])
    assert (code, report["valid"], report["counter"]) == (0, True, 1000)


def test_read_command_takes_raw_hex_and_base64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from han_ota.cli import read_command

    raw = bytes.fromhex((DATA / "cs06-future-dated-success-command.hex").read_text())
    for name, data in [("raw", raw), ("hex", raw.hex().encode()), ("b64", base64.encodebytes(raw))]:
        (tmp_path / name).write_bytes(data)
        assert read_command(tmp_path / name) == raw
    (tmp_path / "bad").write_bytes(b"not a command!")
    with pytest.raises(typer.Exit):
        read_command(tmp_path / "bad")
    assert "expected raw GBCS (first byte 0xDD or 0xDF), hex text or base64 text" in capsys.readouterr().err


def test_verify_json_code_is_the_one_push_json_uses() -> None:
    code, out = run("verify", str(DATA / "cs06-immediate-success-command.hex"), "--trust", CERT, "--hash", IMAGE_HASH, "--json")
    report = json.loads(out.splitlines()[-1])
    assert (code, report["reason"], report["code"], report["reason_text"]) == (1, "HASH_MISMATCH", "HASH_MISMATCH", "hash mismatch")


def test_activate_of_a_truncated_command_names_no_none_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 11 item 18: "None: refused: ..." when the command named no device.
    from gateway.activation import SubmitResult
    from han_ota import cli

    raw = bytes.fromhex((DATA / "cs06-immediate-success-command.hex").read_text())[:-1]
    path = tmp_path / "short.hex"
    path.write_text(raw.hex())
    message = "refused: offset 9: ciphered content: truncated: needs 156 bytes, 155 left"

    class Daemon:
        def activate(self, command: str, device: str | None) -> dict[str, object]:
            assert (command, device) == (raw.hex().upper(), None)
            return SubmitResult(False, "refuse", "malformed command", message, None, None, None, None).to_dict()

    monkeypatch.setattr("han_ota.client.find_daemon", lambda cfg: Daemon())
    result = runner.invoke(cli.app, ["activate", str(path)])
    assert (result.exit_code, result.output) == (1, message + "\n")


def test_sign_with_a_past_time_warns(tmp_path: Path) -> None:
    base = ["sign-activation", "--key", KEY, "--originator", "90B3D51F30010000", "--device", "00DB1234567890A0", "--hash", HASH, "--counter", "9"]
    code, output = run(*base, "--at", "2020-01-01T00:00:00Z", "-o", str(tmp_path / "past.hex"))
    assert code == 0 and "warning: --at 2020-01-01T00:00:00Z is not in the future: a hub that accepts this command activates at once" in output
    code, output = run(*base, "--at", "2099-01-01T00:00:00Z", "-o", str(tmp_path / "future.hex"))
    assert code == 0 and "warning" not in output
