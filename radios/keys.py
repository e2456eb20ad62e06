"""Installing a device's APS link key on the coordinator, whatever the radio family.

zigpy has no runtime API for a device's APS link key (``write_network_info`` rewrites
the whole network), so `install_link_key` speaks each family's own command:

* EmberZNet through bellows, EZSP 13 and later: ``importLinkKey(index, address, key)``
  writes the key table entry at ``index`` (sl_zb_sec_man_import_link_key ->
  zb_sec_man_store_in_link_key_table -> emSetKeyTableEntry, gecko_sdk
  protocol/zigbee/stack/security/zigbee-security-manager{,-no-vault}.c). The index is
  the host's to choose: the entry ``findKeyTableEntry(address, linkKey=True)`` finds for
  the device (a key renewed in place), else the first index below
  ``CONFIG_KEY_TABLE_SIZE`` that ``exportLinkKeyByIndex`` reports empty. bellows'
  ``write_link_keys`` is not used: it imports at 0, 1, 2... and would overwrite another
  device's key.
* EmberZNet before EZSP 13: ``addOrUpdateKeyTableEntry(address, linkKey=True, keyData)``
  (the stack picks the entry: the device's own, else a free one).
* Z-Stack through zigpy-znp: ``ZDO.SetLinkKey(NWK, IEEE, key)`` (MT_ZDO_SET_LINK_KEY ->
  MT_ZdoSetLinkKey -> ZDSecMgrAddLinkKey, Z-Stack mt/MT_ZDO.c and zd_sec_mgr.c), which
  returns ZFailure when the address manager cannot hold the device and ZBufferFull
  when its security manager entries (ZDSECMGR_ENTRY_MAX) are all taken.
* the simulated radio: ``SimControllerApplication.install_link_key`` (the SimHan's key
  table).

A refusal raises `LinkKeyError`, naming the radio, the device and the firmware status.
The key itself is never logged nor put in an error.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import zigpy.types as t

__all__ = ["LinkKeyError", "install_link_key", "radio_family"]

LOGGER = logging.getLogger(__name__)

EMPTY_EUI64: Final = t.EUI64(bytes(8))
NO_ENTRY: Final = 0xFF  # findKeyTableEntry: no matching entry


class LinkKeyError(RuntimeError):
    """The coordinator did not take a device's APS link key."""

    def __init__(self, radio: str, ieee: t.EUI64, reason: str, status: object | None = None) -> None:
        self.radio = radio
        self.ieee = ieee
        self.reason = reason
        self.status = status
        text = f"{radio}: the coordinator did not take the APS link key for {ieee}: {reason}"
        if status is not None:
            text += f" (firmware status {status})"
        super().__init__(text)


def radio_family(app: Any) -> str:
    """``"ezsp"``, ``"znp"`` or ``"sim"``; ValueError for anything else."""
    module = type(app).__module__
    if module.startswith("bellows."):
        return "ezsp"
    if module.startswith("zigpy_znp."):
        return "znp"
    if callable(getattr(app, "install_link_key", None)):
        return "sim"
    raise ValueError(f"install_link_key: no way to install an APS link key on a {type(app).__qualname__}")


async def install_link_key(app: Any, ieee: t.EUI64, key: t.KeyData) -> None:
    """Give the coordinator ``key`` as its APS link key with ``ieee`` (replacing an older one)."""
    ieee = t.EUI64(ieee)
    key = t.KeyData(key)
    family = radio_family(app)
    if family == "ezsp":
        await _install_ezsp(app, ieee, key)
    elif family == "znp":
        await _install_znp(app, ieee, key)
    else:
        await app.install_link_key(ieee, key)
    LOGGER.info("%s: APS link key installed for %s", family, ieee)


# -- EmberZNet (bellows) ------------------------------------------------------------------


def _fields(ezsp: Any, command: str, response: Any) -> dict[str, Any]:
    """A response by field name: the field order changed between EZSP versions."""
    names = list(ezsp._protocol.COMMANDS[command][2])
    return dict(zip(names, response))


async def _install_ezsp(app: Any, ieee: t.EUI64, key: t.KeyData) -> None:
    import bellows.types as bt
    from bellows.exception import InvalidCommandError

    ezsp = app._ezsp
    try:
        if ezsp.ezsp_version < 13:
            (status,) = await ezsp.addOrUpdateKeyTableEntry(address=ieee, linkKey=True, keyData=key)
            if bt.sl_Status.from_ember_status(status) != bt.sl_Status.OK:
                raise LinkKeyError("ezsp", ieee, "addOrUpdateKeyTableEntry refused (key table full?)", _name(status))
            return
        (index,) = await ezsp.findKeyTableEntry(address=ieee, linkKey=True)
        if index == NO_ENTRY:
            index = await _free_key_index(ezsp, ieee)
        (status,) = await ezsp.importLinkKey(index=index, address=ieee, key=key)
    except InvalidCommandError as exc:
        raise LinkKeyError("ezsp", ieee, f"the NCP refused the command ({exc})") from exc
    if bt.sl_Status.from_ember_status(status) != bt.sl_Status.OK:
        raise LinkKeyError("ezsp", ieee, f"importLinkKey at key table index {index} refused", _name(status))
    LOGGER.debug("ezsp: link key for %s at key table index %d", ieee, index)


async def _free_key_index(ezsp: Any, ieee: t.EUI64) -> int:
    import bellows.types as bt

    status, size = await ezsp.getConfigurationValue(configId=bt.EzspConfigId.CONFIG_KEY_TABLE_SIZE)
    if bt.sl_Status.from_ember_status(status) != bt.sl_Status.OK:
        raise LinkKeyError("ezsp", ieee, "the NCP did not say its key table size", _name(status))
    if size == 0:
        raise LinkKeyError("ezsp", ieee, "the NCP has no key table (CONFIG_KEY_TABLE_SIZE is 0)")
    for index in range(size):
        entry = _fields(ezsp, "exportLinkKeyByIndex", await ezsp.exportLinkKeyByIndex(index=index))
        if bt.sl_Status.from_ember_status(entry["status"]) != bt.sl_Status.OK:
            return index
    raise LinkKeyError("ezsp", ieee, f"the key table is full ({size} entries, all in use)")


# -- Z-Stack (zigpy-znp) ------------------------------------------------------------------


async def _install_znp(app: Any, ieee: t.EUI64, key: t.KeyData) -> None:
    import zigpy_znp.commands as c
    from zigpy_znp.exceptions import CommandNotRecognized
    import zigpy_znp.types as zt

    try:
        nwk = app.get_device(ieee=ieee).nwk
    except KeyError:
        raise LinkKeyError("znp", ieee, "unknown device: zigpy has no NWK address for it") from None
    try:
        rsp = await app._znp.request(c.ZDO.SetLinkKey.Req(NWK=nwk, IEEE=ieee, LinkKeyData=key))
    except CommandNotRecognized as exc:
        raise LinkKeyError("znp", ieee, "the coordinator does not know ZDO.SetLinkKey (MT_SYS_KEY_MANAGEMENT off?)") from exc
    if rsp.Status != zt.Status.SUCCESS:
        reasons = {
            zt.Status.BUFFER_FULL: "its security manager's link key entries are all taken",
            zt.Status.FAILURE: "its address manager could not hold the device",
        }
        raise LinkKeyError("znp", ieee, reasons.get(rsp.Status, "ZDO.SetLinkKey refused"), _name(rsp.Status))


def _name(status: Any) -> str:
    name = getattr(status, "name", None)
    return f"{name} (0x{int(status):02X})" if name else str(status)
