"""Where EZSP 13's frames differ from 14's, beyond the status codes (``status.py``).

The NCP's handlers take and return fields by their EZSPv14 names. EmberZNet 7.4 (EZSP
13) lays some frames out otherwise: the messaging commands and callbacks kept their
EmberZNet 6/7 layouts (``sendUnicast(type, indexOrDestination, apsFrame, messageTag,
messageContents)``, ``messageSentHandler`` with the status after the tag,
``incomingMessageHandler`` without the sender's EUI64 or a timestamp), and a few
answers carry a value where 14 carries a status (``getExtendedTimeout`` -> bool,
``lookupNodeIdByEui64`` -> node id only, ``exportLinkKeyByIndex`` -> EUI64 instead of
the key context). The byte layouts themselves are bellows' v13 and v14 command tables,
which the frame codec reads (``frames.command_table``): this module only renames
between the two, so a layout bellows has wrong for 13 would be wrong here too (the
same honest cost as for 14, see frames.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

NULL_NODE_ID = 0xFFFF
BROADCAST_RX_ON_WHEN_IDLE = 0xFFFD

# Command parameters: {v13 name: handler (v14) name}, then defaults for v14-only ones
_PARAMS_13: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "sendUnicast": (
        {"type": "message_type", "indexOrDestination": "nwk", "apsFrame": "aps_frame",
         "messageTag": "message_tag", "messageContents": "message"},
        {},
    ),
    "sendBroadcast": (
        {"apsFrame": "aps_frame", "messageTag": "message_tag", "messageContents": "message"},
        {"alias": NULL_NODE_ID, "sequence": 0},  # no aliases before 14
    ),
    "sendMulticast": (
        {"apsFrame": "aps_frame", "messageTag": "message_tag", "messageContents": "message"},
        # nonmemberRadius is gone in 14; the broadcast address was fixed before it
        {"broadcast_addr": BROADCAST_RX_ON_WHEN_IDLE, "alias": NULL_NODE_ID, "sequence": 0},
    ),
}
_DROPPED_PARAMS_13 = {"sendMulticast": ("nonmemberRadius",)}

# Response and callback fields: {v13 name: v14 name} or a function of the v14 fields
_FIELDS_13: dict[str, dict[str, str | Callable[[Mapping[str, Any]], Any]]] = {
    "messageSentHandler": {
        "type": "message_type", "indexOrDestination": "nwk", "apsFrame": "aps_frame",
        "messageTag": "message_tag", "messageContents": "message",
    },
    "incomingMessageHandler": {
        "type": "message_type", "apsFrame": "aps_frame", "lastHopLqi": "lqi",
        "lastHopRssi": "rssi", "sender": "nwk", "bindingIndex": "binding_index",
        "addressIndex": "address_index", "messageContents": "message",
    },
    "exportLinkKeyByIndex": {"eui64": lambda f: f["context"].eui64},
    # EZSPv13 answers whether the extended timeout is set; 14 answers OK or FAIL
    "getExtendedTimeout": {"extendedTimeout": lambda f: int(f["status"]) == 0},
}


def handler_params(version: int, command: str, params: dict[str, Any]) -> dict[str, Any]:
    """The command's parameters under the handler's (EZSPv14) names."""
    if version >= 14 or command not in _PARAMS_13:
        return params
    names, defaults = _PARAMS_13[command]
    dropped = _DROPPED_PARAMS_13.get(command, ())
    out = dict(defaults)
    for name, value in params.items():
        if name not in dropped:
            out[names.get(name, name)] = value
    return out


def wire_fields(version: int, command: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The handler's (EZSPv14) response or callback fields under ``version``'s names."""
    if version >= 14 or command not in _FIELDS_13:
        return fields
    out = dict(fields)
    for name, source in _FIELDS_13[command].items():
        out[name] = source(fields) if callable(source) else fields[source]
    return out
