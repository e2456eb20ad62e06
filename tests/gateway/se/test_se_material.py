"""gateway/se/material.py: key material as files and command lines carry it."""

from __future__ import annotations

import pytest

from gateway.se.errors import CertificateError, SeError
from gateway.se.material import decode_eui64, decode_material, parse_any_certificate, public_key, suite_of_certificate
from gateway.se.suites import SUITE_1, SUITE_2

# The suite-1 worked example's responder (07-5356 Annex C.5).
CERT_1 = bytes.fromhex("03045FDFC8D85FFB8B3993CB72DDCAA55F00B3E87D6D0000000000000001544553545345434101090006000000000000")
PRIVATE_1 = bytes.fromhex("00B8A900FCADEBABBFA383B540FCE9ED438395EAA7")
PUBLIC_1 = bytes.fromhex("030290A1F5C08DAD5F2945E335620C7A98FAC46666A1")


def test_raw_and_hex_text_give_the_same_bytes() -> None:
    assert decode_material(CERT_1, {48}, "cert") == CERT_1
    assert decode_material(CERT_1.hex().encode(), {48}, "cert") == CERT_1
    wrapped = b"  " + CERT_1.hex().upper()[:50].encode() + b"\r\n" + CERT_1.hex()[50:].encode() + b"\n"
    assert decode_material(wrapped, None, "cert") == CERT_1


def test_hex_text_of_a_point_is_not_taken_for_a_raw_suite2_certificate() -> None:
    point = bytes([2]) + bytes(range(36))
    text = point.hex().encode()
    assert len(text) == SUITE_2.certificate_length
    assert decode_material(text, {37, 74}, "value") == point


def test_refusals_say_what_and_never_show_the_bytes() -> None:
    with pytest.raises(SeError, match=r"^key: hex text of 20 bytes, needs 21 bytes \(raw, or 42 hex digits\)$"):
        decode_material(PRIVATE_1.hex()[:-2].encode(), {21}, "key")
    with pytest.raises(SeError, match=r"^key: 22 bytes, needs 21 or 36 bytes \(raw, or 42 or 72 hex digits\)$"):
        decode_material(b"\x01" * 22, {36, 21}, "key")
    with pytest.raises(SeError, match=r"^key: hex text with an odd number of digits \(3\)$") as info:
        decode_material(b"A1B", {21}, "key")
    assert "A1B" not in str(info.value)


def test_suite_told_by_length() -> None:
    assert suite_of_certificate(CERT_1) is SUITE_1
    assert suite_of_certificate(bytes(74)) is SUITE_2
    assert parse_any_certificate(CERT_1).subject_ieee == "00:00:00:00:00:00:00:01"
    with pytest.raises(CertificateError) as info:
        parse_any_certificate(CERT_1[:-1])
    assert (info.value.field, info.value.offset) == ("length", 0)


def test_public_key_of_the_worked_example() -> None:
    assert public_key(SUITE_1, PRIVATE_1) == PUBLIC_1
    with pytest.raises(SeError, match="21"):
        public_key(SUITE_1, PRIVATE_1[1:])


@pytest.mark.parametrize("text", ["00:0d:6f:00:0a:bc:de:f0", "000D6F000ABCDEF0", " 000d6f000abcdef0\n"])
def test_eui64_forms(text: str) -> None:
    assert decode_eui64(text) == bytes.fromhex("000d6f000abcdef0")


@pytest.mark.parametrize("text", ["00:0d:6f", "000D6F000ABCDEFG", "000D6F000ABCDEF0AA", "", "00-0d-6f-00-0a-bc-de-f0"])
def test_eui64_refused(text: str) -> None:
    with pytest.raises(SeError, match="16 hex digits"):
        decode_eui64(text)


def test_hex_text_may_carry_a_capture_tools_colons_and_text_that_is_not_hex_is_named_by_position() -> None:
    assert decode_material(PUBLIC_1.hex(":").encode(), {22}, "point") == PUBLIC_1
    with pytest.raises(SeError, match=r"'z' at hex digit 40 is not hex") as info:
        decode_material(b"00" * 20 + b"zz", {21}, "key")
    assert "0000" not in str(info.value)
