"""radios/network.py through the real drivers: info, form, backup, restore on the emulated
coordinators (zigpy-znp against the Z-Stack emulator; bellows against the EZSP NCP)."""

from __future__ import annotations

import json

import pytest
import zigpy.types as zt

from radios.emulate.znp import running_znp_emulator, serve_znp
from radios.network import RadioTarget, backup, backup_from_json, backup_to_json, form, read_info, restore
from radios.select import RadioError, open_app
from radios.sim.spec import parse_sim_device

HCALCS = "00:0d:6f:00:0b:12:34:56"


async def test_znp_info_form_backup_restore(tmp_path):
    server = await serve_znp("127.0.0.1", 0, None)
    target = RadioTarget("znp", server.url)
    try:
        blank = await read_info(target)
        assert blank["formed"] is False and "network" not in blank

        formed = await form(target, channel=20, pan_id=0x1A62)
        net = formed["network"]
        assert formed["formed"] and net["channel"] == 20 and net["pan_id"] == "0x1A62"
        assert formed["coordinator"]["model"] == "CC2652" and formed["coordinator"]["nwk"] == "0x0000"
        assert net["tc_link_key"].startswith("ZigBeeAlliance09")
        assert len(net["network_key"]["fingerprint"]) == 16  # never the key itself
        assert server.coordinator.nib.nwkLogicalChannel == 20

        with pytest.raises(RadioError) as refused:
            await form(target)
        assert "already has a network" in str(refused.value) and "--force" in str(refused.value) and "backup" in str(refused.value)

        saved = await backup(target)
        text = backup_to_json(saved)
        (tmp_path / "backup.json").write_text(text)
        assert json.loads(text)["network_info"]["channel"] == 20
        assert backup_from_json(backup_to_json(saved, "open-coordinator")).is_compatible_with(saved)

        other = await form(target, channel=25, force=True)
        assert other["network"]["extended_pan_id"] != net["extended_pan_id"]

        again = backup_from_json((tmp_path / "backup.json").read_text(), "backup.json")
        with pytest.raises(RadioError) as refused:
            await restore(target, again)
        assert "another network" in str(refused.value) and "--force" in str(refused.value)

        restored = await restore(target, again, force=True)
        assert restored["network"]["extended_pan_id"] == net["extended_pan_id"]
        assert restored["network"]["channel"] == 20 and restored["network"]["pan_id"] == "0x1A62"
        assert restored["network"]["network_key"]["fingerprint"] == net["network_key"]["fingerprint"]
        assert server.coordinator.unimplemented == []
    finally:
        await server.close()


async def test_znp_restore_moves_the_frame_counter_ahead():
    server = await serve_znp("127.0.0.1", 0, None)
    target = RadioTarget("znp", server.url)
    try:
        await form(target)
        saved = await backup(target)
        restored = await restore(target, saved, force=True)
        assert restored["network"]["network_key"]["tx_counter"] >= saved.network_info.network_key.tx_counter + 10000
    finally:
        await server.close()


async def test_znp_info_lists_devices_that_joined_and_backup_carries_their_keys():
    spec = parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")
    async with running_znp_emulator([spec]) as (path, server):
        app = await open_app("znp", path=path)  # the HAN powers up and the HCALCS joins
        nwk = server.coordinator.han.devices[zt.EUI64.convert(HCALCS)].nwk
        try:
            await server.coordinator.han.devices[zt.EUI64.convert(HCALCS)].wait_for(lambda d: d.online, timeout=10)
        finally:
            await app.shutdown()
        target = RadioTarget("znp", path)
        report = await read_info(target)
        assert report["devices"]["addresses"] == {HCALCS: f"0x{int(nwk):04X}"}
        assert report["devices"]["link_keys"] == [HCALCS]
        saved = await backup(target)
        assert [str(k.partner_ieee) for k in saved.network_info.key_table] == [HCALCS]


async def test_sim_radio_and_unknown_backup_are_refused_with_reasons(tmp_path):
    with pytest.raises(RadioError) as exc:
        await read_info(RadioTarget("sim", "x"))
    assert "ezsp or znp" in str(exc.value)
    with pytest.raises(RadioError) as exc:
        backup_from_json("[1, 2]", "b.json")
    assert "b.json" in str(exc.value) and "JSON object" in str(exc.value)
    with pytest.raises(RadioError) as exc:
        backup_from_json('{"hello": 1}', "b.json")
    assert "not a zigpy network backup" in str(exc.value)
    with pytest.raises(RadioError) as exc:
        await read_info(RadioTarget("znp", str(tmp_path / "ttyNONE")))
    assert "no such device" in str(exc.value) and "han-ota radio detect" in str(exc.value)


async def test_ezsp_info_and_backup_of_a_formed_ncp():
    from radios.emulate.ezsp import NetworkSettings, serve_ezsp

    settings = NetworkSettings(channel=25, pan_id=0x2B7C)
    server = await serve_ezsp("127.0.0.1", 0, None, network=settings)
    target = RadioTarget("ezsp", server.path)
    try:
        report = await read_info(target)
        assert report["formed"] and report["network"]["channel"] == 25 and report["network"]["pan_id"] == "0x2B7C"
        assert report["network"]["extended_pan_id"] == str(zt.ExtendedPanId(settings.extended_pan_id))
        saved = await backup(target)
        assert saved.network_info.network_key.key == settings.network_key
        assert saved.is_complete()
    finally:
        await server.close()
