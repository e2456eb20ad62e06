"""Status codes as each EZSP version puts them on the wire.

The NCP's handlers decide in ``sl_status_t`` terms (what EmberZNet 8 returns, EZSP 14
and later). EZSP 13 and older carry two other enums instead, field by field as the
version's command table types them:

* ``EmberStatus`` (one byte) for stack results: EmberZNet 7.4's
  ``stack/include/error-def.h`` (gecko_sdk 4.4), e.g. ``EMBER_INVALID_CALL`` 0x70 where 8.x
  says ``SL_STATUS_INVALID_STATE``;
* ``EzspStatus`` (one byte) for the EZSP layer's own answers (values, configuration,
  policies, endpoints): ``EZSP_ERROR_INVALID_ID`` for an id the NCP does not know,
  ``EZSP_ERROR_INVALID_CALL`` once the stack runs (``app/util/ezsp/ezsp-enum.h``).

The tables map each ``sl_status_t`` the handlers use to the code EmberZNet 7.4 returns
for the same condition; a status with no entry is an emulator bug (`KeyError`), so a
handler cannot put a code on the wire that v13 never sends. (bellows maps the other way,
many codes to one, with ``sl_Status.from_ember_status``; these tables are ours, from the
firmware's headers. A test holds them inverse to bellows' reading but for the codes
listed in ``BELLOWS_READS_OTHERWISE``, and checks that every status the handlers use
has an entry.)
"""

from __future__ import annotations

import bellows.types as t

S = t.sl_Status
E = t.EmberStatus
Z = t.EzspStatus

EMBER_STATUS: dict[t.sl_Status, t.EmberStatus] = {
    S.OK: E.SUCCESS,
    S.FAIL: E.ERR_FATAL,
    S.INVALID_PARAMETER: E.BAD_ARGUMENT,
    S.INVALID_STATE: E.INVALID_CALL,
    S.INVALID_INDEX: E.INDEX_OUT_OF_RANGE,
    S.NOT_FOUND: E.NOT_FOUND,
    S.NOT_JOINED: E.NOT_JOINED,
    S.NETWORK_UP: E.NETWORK_UP,
    S.NETWORK_DOWN: E.NETWORK_DOWN,
    S.MESSAGE_TOO_LONG: E.MESSAGE_TOO_LONG,
    S.ZIGBEE_DELIVERY_FAILED: E.DELIVERY_FAILED,
    S.TRANSMIT_INVALID_POWER: E.PHY_INVALID_POWER,
    # customFrame without an XNCP handler: the WEAK default of
    # emberAfPluginXncpIncomingCustomFrameCallback (7.x app/framework) answers this
    S.NOT_SUPPORTED: E.LIBRARY_NOT_PRESENT,
}

EZSP_STATUS: dict[t.sl_Status, t.EzspStatus] = {
    S.OK: Z.SUCCESS,
    S.INVALID_PARAMETER: Z.ERROR_INVALID_ID,
    S.INVALID_STATE: Z.ERROR_INVALID_CALL,
}


def on_wire(value: object, field_type: type) -> object:
    """``value`` as a field of ``field_type`` carries it: an ``sl_Status`` in an
    ``EmberStatus`` or ``EzspStatus`` field becomes that version's code."""
    if not isinstance(value, t.sl_Status):
        return value
    if field_type is t.EmberStatus:
        return EMBER_STATUS[value]
    if field_type is t.EzspStatus:
        return EZSP_STATUS[value]
    return value


# Where bellows' from_ember_status reads our code back as another sl_Status (its table
# is many-to-one): what the handler meant -> what bellows makes of it
BELLOWS_READS_OTHERWISE: dict[tuple[type, t.sl_Status], t.sl_Status] = {
    (t.EmberStatus, S.NOT_SUPPORTED): S.NOT_AVAILABLE,  # LIBRARY_NOT_PRESENT
    (t.EzspStatus, S.INVALID_STATE): S.INVALID_PARAMETER,  # ERROR_INVALID_CALL
}
