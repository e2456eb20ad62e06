"""What a Communications Hub offers the HAN, as far as zigpy allows: an SE endpoint, time,
install-code joining.

GBCS HAN devices (PPMID, HCALCS) speak the Smart Energy profile (0x0109) and look for
the hub's services on it. With zigpy 2.4 and its radio libraries we can give them:

* **An SE endpoint** (``HAN_ENDPOINT``, profile 0x0109, device type 0x0500 Energy
  Service Interface) with the server clusters Basic 0x0000, Time 0x000A and OTA Upgrade
  0x0019. The coordinator firmware (Z-Stack, EmberZNet) answers ZDO Match_Desc_req
  and Simple_Desc_req from its registered endpoints, so a device looking for an OTA
  server on 0x0109 finds this endpoint. Register it through the zigpy config
  (``han_zigpy_config()``, merged into the config handed to the driver): EmberZNet only
  takes ``addEndpoint`` before the stack starts, and both drivers register config
  endpoints at the right moment. ``setup_han_services`` registers it at run time when
  it is missing and the firmware allows it (Z-Stack's AF.Register does).
  Caveat, not fixable without patching zigpy: zigpy *also* answers every Match_Desc_req
  that reaches the host (both drivers pass them up), with endpoint 1 for the HA profile
  and an empty list for any other profile. A device asking on 0x0109 therefore gets the
  firmware's answer (our endpoint) *and* zigpy's empty one.
* **A Time cluster server** (HAN devices take UTC from the hub): zigpy answers Time
  reads itself only for frames on the HA/ZLL profiles (it does not parse other
  profiles' ZCL). ``TimeServer`` answers Read Attributes on 0x000A for every other
  profile (SE) from the raw frames zigpy hands its listeners: Time (UTC seconds since
  2000-01-01), TimeStatus Master|Superseding, TimeZone 0, StandardTime and LocalTime
  (UTC), LastSetTime, ValidUntilTime, ClusterRevision; UNSUPPORTED_ATTRIBUTE otherwise.
* **Joining with an install code** per device: ``permit_with_install_code`` derives the
  link key from the code with zigpy's ``convert_install_code`` (CRC check, AES-MMO
  hash) and calls ``app.permit_with_link_key(ieee, key, time_s)``.

What zigpy cannot do: Smart Energy Key Establishment (CBKE, cluster 0x0800), so the
APS link keys GBCS devices expect after joining; devices whose firmware insists on
CBKE leave a network whose trust center never starts it. The gateway runs it itself
(gateway/se/service.py) when configured with the hub's SE certificates: the endpoint
then offers the Key Establishment server cluster too (``key_establishment=True``),
so the firmware's Match_Desc answer names it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import zigpy.endpoint
import zigpy.types as t
import zigpy.util
import zigpy.zdo.types as zdo_t
from zigpy.zcl import foundation

LOGGER = logging.getLogger(__name__)

SE_PROFILE = 0x0109
HA_PROFILE = 0x0104
ZLL_PROFILE = 0xC05E
#: Our Smart Energy endpoint on the coordinator. zigpy's drivers take 1 (HA), 2 (ZLL)
#: and 242 (Green Power); 10 is free on both.
HAN_ENDPOINT = 10
ESI_DEVICE_TYPE = 0x0500  # Smart Energy: Energy Service Interface
CLUSTER_BASIC = 0x0000
CLUSTER_TIME = 0x000A
CLUSTER_OTA = 0x0019
CLUSTER_KEY_ESTABLISHMENT = 0x0800
HAN_SERVER_CLUSTERS = (CLUSTER_BASIC, CLUSTER_TIME, CLUSTER_OTA)
ZIGBEE_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
TIME_CLUSTER_REVISION = 2

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def han_server_clusters(key_establishment: bool = False) -> tuple[int, ...]:
    """The SE endpoint's server clusters: Basic, Time, OTA Upgrade, and Key Establishment
    when the hub is configured to run it (a device that finds the cluster starts CBKE)."""
    return HAN_SERVER_CLUSTERS + ((CLUSTER_KEY_ESTABLISHMENT,) if key_establishment else ())


def han_endpoint_descriptor(endpoint: int = HAN_ENDPOINT, *, key_establishment: bool = False) -> zdo_t.SimpleDescriptor:
    """The SE endpoint: ESI device type, server clusters Basic, Time and OTA Upgrade
    (and Key Establishment 0x0800 with ``key_establishment``)."""
    return zdo_t.SimpleDescriptor(
        endpoint=endpoint,
        profile=SE_PROFILE,
        device_type=ESI_DEVICE_TYPE,
        device_version=0,
        input_clusters=list(han_server_clusters(key_establishment)),
        output_clusters=[],
    )


def han_zigpy_config(kind: str | None = None, endpoint: int = HAN_ENDPOINT, *, key_establishment: bool = False) -> dict[str, Any]:
    """zigpy config keys for the HAN services; merge with ``apply_han_config``.

    * ``additional_endpoints``: the SE endpoint, registered by the driver at start-up
      (before EmberZNet's stack runs, as it requires);
    * for ``kind="znp"``, ``znp_config.prefer_endpoint_1 = False``: zigpy-znp otherwise
      sends every frame from endpoint 1, whose registered profile (HA, 0x0104) Z-Stack
      puts on the air, so an SE device would get our OTA and Time answers on the wrong
      profile. With it off, zigpy-znp picks the registered endpoint that matches the
      frame's profile and cluster (ours, for 0x0109).

    ``key_establishment`` adds the Key Establishment server cluster to the endpoint, so
    the firmware's (or the simulated coordinator's) Match_Desc answer names it.
    """
    d = han_endpoint_descriptor(endpoint, key_establishment=key_establishment)
    config: dict[str, Any] = {
        "additional_endpoints": [
            {
                "endpoint": d.endpoint,
                "profile": d.profile,
                "device_type": d.device_type,
                "device_version": d.device_version,
                "input_clusters": list(d.input_clusters),
                "output_clusters": list(d.output_clusters),
            }
        ]
    }
    if kind == "znp":
        config["znp_config"] = {"prefer_endpoint_1": False}
    return config


def apply_han_config(
    config: dict[str, Any], kind: str | None = None, endpoint: int = HAN_ENDPOINT, *, key_establishment: bool = False
) -> dict[str, Any]:
    """A copy of a zigpy config with ``han_zigpy_config(kind)`` merged in (lists appended,
    the ``znp_config`` table updated)."""
    merged = dict(config)
    extra = han_zigpy_config(kind, endpoint, key_establishment=key_establishment)
    merged["additional_endpoints"] = [e for e in merged.get("additional_endpoints", []) if _ep_number(e) != endpoint] + extra["additional_endpoints"]
    if "znp_config" in extra:
        merged["znp_config"] = {**merged.get("znp_config", {}), **extra["znp_config"]}
    return merged


def _ep_number(entry: Any) -> int | None:
    return entry.get("endpoint") if isinstance(entry, dict) else getattr(entry, "endpoint", None)


def zigbee_time(now: dt.datetime) -> int:
    """ZCL UTCTime: whole seconds since 2000-01-01 00:00:00 UTC."""
    if now.utcoffset() is None:
        raise ValueError(f"time must be timezone-aware UTC, not naive {now!r}")
    return int((now - ZIGBEE_EPOCH).total_seconds())


# ------------------------------------------------------------------------- Time server


@dataclass
class TimeServer:
    """Answers Time cluster Read Attributes that zigpy does not (non-HA/ZLL profiles).

    A zigpy application listener (``app.add_listener(server)``): zigpy calls
    ``handle_message`` with the raw APS payload of every frame from a known device.
    """

    app: Any
    clock: Clock = utc_now
    #: when the hub's clock was last set (LastSetTime); the start of this server by default
    last_set: dt.datetime | None = None
    answered: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.last_set is None:
            self.last_set = self.clock()

    def attributes(self) -> dict[int, foundation.TypeValue]:
        now = zigbee_time(self.clock())
        assert self.last_set is not None
        D = foundation.DataTypeId

        def tv(type_id: foundation.DataTypeId, value: Any) -> foundation.TypeValue:
            return foundation.TypeValue(type=type_id, value=value)

        return {
            0x0000: tv(D.UTC, t.UTCTime(now)),
            # Master: our clock is the network's; Superseding: prefer us over other servers
            0x0001: tv(D.map8, t.bitmap8(0b0000_1001)),
            0x0002: tv(D.int32, t.int32s(0)),
            0x0006: tv(D.uint32, t.uint32_t(now)),
            0x0007: tv(D.uint32, t.uint32_t(now)),
            0x0008: tv(D.UTC, t.UTCTime(zigbee_time(self.last_set))),
            0x0009: tv(D.UTC, t.UTCTime(0xFFFFFFFF)),
            0xFFFD: tv(D.uint16, t.uint16_t(TIME_CLUSTER_REVISION)),
        }

    def response(self, tsn: int, attribute_ids: list[int]) -> bytes:
        """A Read Attributes Response frame (server to client) for these ids."""
        values = self.attributes()
        records = []
        for attrid in attribute_ids:
            if attrid in values:
                records.append(foundation.ReadAttributeRecord(attrid=attrid, status=foundation.Status.SUCCESS, value=values[attrid]))
            else:
                records.append(foundation.ReadAttributeRecord(attrid=attrid, status=foundation.Status.UNSUPPORTED_ATTRIBUTE))
        hdr = foundation.ZCLHeader.general(tsn, foundation.GeneralCommand.Read_Attributes_rsp, direction=foundation.Direction.Server_to_Client)
        hdr.frame_control = hdr.frame_control.replace(disable_default_response=True)
        schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand.Read_Attributes_rsp].schema
        return hdr.serialize() + schema(status_records=records).serialize()

    def handle_message(self, device: Any, profile: int, cluster: int, src_ep: int, dst_ep: int, message: bytes) -> None:
        if cluster != CLUSTER_TIME or profile in (HA_PROFILE, ZLL_PROFILE, 0):
            return  # zigpy's own Time cluster handler answers HA/ZLL frames
        try:
            hdr, payload = foundation.ZCLHeader.deserialize(bytes(message))
        except ValueError:
            return
        fc = hdr.frame_control
        if not fc.is_general or fc.is_manufacturer_specific or hdr.direction != foundation.Direction.Client_to_Server:
            return
        if hdr.command_id != foundation.GeneralCommand.Read_Attributes:
            return
        try:
            ids, _rest = t.List[t.uint16_t].deserialize(payload)
        except ValueError:
            return
        data = self.response(hdr.tsn, [int(i) for i in ids])
        task = asyncio.get_running_loop().create_task(self._send(device, profile, src_ep, dst_ep, hdr.tsn, data), name=f"time-rsp-{device.ieee}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, device: Any, profile: int, device_ep: int, our_ep: int, tsn: int, data: bytes) -> None:
        try:
            await self.app.request(device, profile, CLUSTER_TIME, our_ep, device_ep, tsn, data, expect_reply=False)
            self.answered += 1
        except Exception as exc:  # the device retries its read
            LOGGER.info("%s: Time read response not delivered: %s", device.ieee, exc)


# ------------------------------------------------------------------------- install codes


def link_key_from_install_code(code: bytes | str) -> t.KeyData:
    """The link key an install code stands for (zigpy's CRC check and AES-MMO hash).

    ``code`` is raw bytes or hex text (spaces, colons and dashes allowed): 6, 8, 12
    or 16 bytes of code plus the 2-byte CRC.
    """
    if isinstance(code, str):
        cleaned = "".join(ch for ch in code if ch not in " :-")
        try:
            code = bytes.fromhex(cleaned)
        except ValueError:
            raise ValueError(f"install code {code!r} is not hex") from None
    return zigpy.util.convert_install_code(bytes(code))


async def permit_with_install_code(app: Any, ieee: t.EUI64, code: bytes | str, time_s: int = 60) -> t.KeyData:
    """Let one device join with its install code; returns the derived link key.

    zigpy-znp returns when the window (``time_s``) has closed: it allows install-code
    joins only for that long and then reverts; bellows returns at once.
    """
    key = link_key_from_install_code(code)
    await app.permit_with_link_key(ieee, key, time_s=time_s)
    LOGGER.info("permitting %s to join for %d s with its install-code key", ieee, time_s)
    return key


# ------------------------------------------------------------------------- set-up


@dataclass
class HanServices:
    """What ``setup_han_services`` put in place on one application object."""

    app: Any
    endpoint: int
    endpoint_status: str  # "registered" | "added" | "unavailable: ..."
    time_server: TimeServer | None
    listener_id: Any = None
    warnings: list[str] = field(default_factory=list)
    missing: tuple[str, ...] = (
        "Smart Energy Key Establishment (CBKE, cluster 0x0800) and SE certificates: zigpy has neither",
    )

    async def permit(self, ieee: t.EUI64, install_code: bytes | str, time_s: int = 60) -> t.KeyData:
        return await permit_with_install_code(self.app, ieee, install_code, time_s)

    def close(self) -> None:
        if self.listener_id is not None:
            try:
                self.app.remove_listener(self.listener_id)
            except Exception:  # the app may be gone already
                pass
            self.listener_id = None
        if self.time_server is not None:
            for task in list(self.time_server.tasks):
                task.cancel()

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "profile": f"0x{SE_PROFILE:04X}",
            "server_clusters": [f"0x{c:04X}" for c in HAN_SERVER_CLUSTERS],
            "endpoint_status": self.endpoint_status,
            "time_server": self.time_server is not None,
            "warnings": list(self.warnings),
            "missing": list(self.missing),
        }


def _coordinator_device(app: Any) -> Any:
    try:
        return app.get_device(nwk=app.state.node_info.nwk)
    except KeyError:
        return None


async def setup_han_services(app: Any, *, endpoint: int = HAN_ENDPOINT, time_server: bool = True, clock: Clock = utc_now,
                             install_codes: Mapping[t.EUI64, bytes | str] | None = None, permit_s: int = 60,
                             key_establishment: bool = False) -> HanServices:
    """Put the hub's HAN services on a started application (call again after every reconnect).

    * makes sure the SE endpoint exists: already registered through ``han_zigpy_config()``
      ("registered"), or added now with ``app.add_endpoint`` ("added"; Z-Stack allows it
      at any time), or not possible on this firmware once started ("unavailable: ...",
      logged as a warning: EmberZNet; use ``han_zigpy_config()``);
    * starts the Time server for SE-profile reads (unless ``time_server=False``);
    * with ``install_codes`` {ieee: code}, permits each device to join with its code for
      ``permit_s`` seconds (one at a time: each call replaces the previous permit's key
      on some firmware, so pass one device per call in practice).
    """
    descriptor = han_endpoint_descriptor(endpoint, key_establishment=key_establishment)
    coordinator = _coordinator_device(app)
    status: str
    if coordinator is not None and endpoint in coordinator.endpoints and getattr(coordinator.endpoints[endpoint], "profile_id", None) == SE_PROFILE:
        status = "registered"
    else:
        try:
            await app.add_endpoint(descriptor)
        except Exception as exc:
            status = f"unavailable: {type(exc).__name__}: {exc}; register it at start-up with han_zigpy_config()"
            LOGGER.warning("SE endpoint %d could not be added to the running coordinator (%s)", endpoint, status)
        else:
            status = "added"
            if coordinator is not None and endpoint not in coordinator.endpoints:
                # zigpy's copy of the coordinator, so the driver picks this endpoint for SE sends
                ep = coordinator.add_endpoint(endpoint)
                ep.profile_id = SE_PROFILE
                ep.device_type = ESI_DEVICE_TYPE
                for cluster_id in han_server_clusters(key_establishment):
                    ep.add_input_cluster(cluster_id)
                ep.status = zigpy.endpoint.Status.ZDO_INIT
    server = TimeServer(app, clock) if time_server else None
    services = HanServices(app, endpoint, status, server)
    znp_config = getattr(app, "znp_config", None)
    if isinstance(znp_config, Mapping) and znp_config.get("prefer_endpoint_1", False):
        services.warnings.append(
            "zigpy-znp sends every frame from endpoint 1 (HA profile on the air): start the radio with "
            "han_zigpy_config('znp') so SE frames leave from the SE endpoint"
        )
    for warning in services.warnings:
        LOGGER.warning("HAN services: %s", warning)
    if server is not None:
        services.listener_id = app.add_listener(server)
    for ieee, code in (install_codes or {}).items():
        await permit_with_install_code(app, ieee, code, permit_s)
    LOGGER.info("HAN services: SE endpoint %d %s; time server %s", endpoint, status, "on" if server else "off")
    return services


__all__ = [
    "CLUSTER_KEY_ESTABLISHMENT",
    "HAN_ENDPOINT",
    "HAN_SERVER_CLUSTERS",
    "HanServices",
    "SE_PROFILE",
    "TimeServer",
    "han_endpoint_descriptor",
    "han_server_clusters",
    "apply_han_config",
    "han_zigpy_config",
    "link_key_from_install_code",
    "permit_with_install_code",
    "setup_han_services",
    "zigbee_time",
]
