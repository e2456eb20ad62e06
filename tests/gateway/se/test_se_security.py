from __future__ import annotations

import zigpy.types as zt

from gateway.se.security import DeviceSecurity, KeyState, SecurityMode, SecurityRegistry

A = zt.EUI64.convert("00:0d:6f:00:00:00:00:01")
B = zt.EUI64.convert("00:0d:6f:00:00:00:00:02")


def test_an_se_device_gets_no_ota_until_its_key_is_established() -> None:
    reg = SecurityRegistry({A: SecurityMode.SE})
    assert not reg.get(A).ota_allowed and "security = \"se\"" in (reg.get(A).waiting_reason or "")
    reg.update(A, state=KeyState.ESTABLISHING)
    assert not reg.get(A).ota_allowed and not reg.get(A).aps
    reg.update(A, state=KeyState.ESTABLISHED, suite=2, seconds=1.5)
    assert reg.get(A).ota_allowed and reg.get(A).aps and reg.get(A).waiting_reason is None


def test_install_code_and_unset_devices_keep_todays_behaviour_until_they_start_key_establishment() -> None:
    reg = SecurityRegistry({A: SecurityMode.INSTALL_CODE})
    assert reg.get(A).ota_allowed and not reg.get(A).aps
    assert reg.get(B).mode is SecurityMode.AUTO and reg.get(B).ota_allowed
    reg.update(B, state=KeyState.ESTABLISHING)  # an unset device that initiates is held back
    assert not reg.get(B).ota_allowed


def test_a_failure_names_status_side_and_reason_and_listeners_hear_every_change() -> None:
    reg = SecurityRegistry({A: SecurityMode.SE})
    heard: list[tuple[zt.EUI64, DeviceSecurity]] = []
    remove = reg.listen(lambda ieee, sec: heard.append((ieee, sec)))
    reg.update(A, state=KeyState.FAILED, status="UNKNOWN_ISSUER", side="hub", why="issuer 5445535453454341 is not a configured CA")
    assert reg.get(A).waiting_reason == "key establishment failed: UNKNOWN_ISSUER (hub): issuer 5445535453454341 is not a configured CA"
    assert heard == [(A, reg.get(A))]
    assert reg.get(A).to_dict()["key_establishment"] == "failed" and reg.get(A).to_dict()["aps_security"] is False
    remove()
    reg.update(A, state=KeyState.ESTABLISHED)
    assert len(heard) == 1
    assert set(reg.known()) == {A}
