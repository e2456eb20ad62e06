"""gateway/gbcs/ids.py: entity ids in both written forms."""

from __future__ import annotations

import pytest

from gateway.gbcs import EntityId, GbcsUsageError


def test_parse_forms_agree() -> None:
    a = EntityId.parse("00DB1234567890A0")
    b = EntityId.parse("00:db:12:34:56:78:90:a0")
    assert a == b
    assert a.raw == bytes.fromhex("00DB1234567890A0")
    assert str(a) == "00DB1234567890A0"
    assert a.colon() == "00:db:12:34:56:78:90:a0"


@pytest.mark.parametrize("text", ["00DB1234567890A", "00DB1234567890A0A0", "00:db:12:34:56:78:90", "0:db:12:34:56:78:90:a0a",
                                  "00DB1234567890AG", "", "00-db-12-34-56-78-90-a0"])
def test_bad_ids_refused(text: str) -> None:
    with pytest.raises(GbcsUsageError):
        EntityId.parse(text)


def test_raw_length_checked() -> None:
    with pytest.raises(GbcsUsageError):
        EntityId(b"\x00" * 7)
