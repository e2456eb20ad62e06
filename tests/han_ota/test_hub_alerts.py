"""The hub's own CCS08 alerts: which job ends call for which alert, the persisted counter
(reserved before signing, committed with the message), recovery after a crash between
the two, the GFI feed, [hub] configuration, and a whole push on the simulated radio."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zigpy.types as zt

from gateway.config import Config, ConfigError, DeviceConfig, HubConfig, OtaConfig, parse_config, parse_eui64
from gateway.crashpoint import ENV as CRASH_ENV
from gateway.crashpoint import HUB_ALERT_POINTS
from gateway.gbcs.alerts import TransferResponse, decode_transfer_alert
from gateway.gbcs.apdu import decode_general_signing
from gateway.gbcs.ids import EntityId
from gateway.gbcs.sign import generate_supplier_identity, load_signing_key
from gateway.gbcs.trust import TrustStore, load_anchor
from gateway.ota import events as ev
from gateway.store import StateStore, StoreError
from han_ota.gfi_feed import gfi_line
from han_ota.hub_alerts import HubMessages, counter_floor, transfer_outcome
from han_ota.push import PushRequest, run_push

S = ev.SessionState
HUB_ID = "00DB1234567890A2"
DEVICE = "00:db:12:34:56:78:90:a4"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hub")
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse(HUB_ID), role="CHF")
    (root / "hub.key").write_bytes(key_pem)
    (root / "hub.pem").write_bytes(cert_pem)
    return root / "hub.key", root / "hub.pem"


def hub_config(hub_files: tuple[Path, Path], **extra: Any) -> Config:
    key, cert = hub_files
    return parse_config({"hub": {"signing_key": str(key), "certificate": str(cert), **extra}})


def fake_job(job_id: str = "7", version: int = 0x0123ABCD) -> Any:
    return SimpleNamespace(id=job_id, ieee=zt.EUI64.convert(DEVICE), image=SimpleNamespace(file_version=version))


def content_of(hex_text: str) -> Any:
    apdu, _ = decode_general_signing(bytes.fromhex(hex_text))
    return apdu, decode_transfer_alert(apdu.content)[0]


# ---------------------------------------------------------------- which ends call for which alert


@pytest.mark.parametrize(
    ("old", "new", "reason", "expected"),
    [
        (S.TRANSFERRING, S.HELD, None, TransferResponse.SUCCESS),
        (S.TRANSFERRING, S.ACTIVATED, None, TransferResponse.SUCCESS),
        (S.PENDING, S.HELD, None, TransferResponse.SUCCESS),
        (S.HELD, S.SCHEDULED, None, None),
        (S.HELD, S.ACTIVATED, None, None),
        (S.ACTIVATED, S.CONFIRMED, None, None),
        (S.TRANSFERRING, S.CANCELLED, "superseded", TransferResponse.IMAGE_DISCARDED),
        (S.HELD, S.CANCELLED, "cancelled by the user", TransferResponse.IMAGE_DISCARDED),
        (S.PENDING, S.FAILED, "device hardware version 0x0002 is outside image range 0x1111..any", TransferResponse.HARDWARE_VERSION_MISMATCH),
        (S.TRANSFERRING, S.FAILED, "stalled: no request for 120 s", TransferResponse.FILE_TRANSFER_FAILURE),
        (S.ACTIVATED, S.FAILED, "device reports the old version", None),
        (S.PENDING, S.TRANSFERRING, None, None),
    ],
)
def test_transfer_outcome(old: S, new: S, reason: str | None, expected: TransferResponse | None) -> None:
    assert transfer_outcome(ev.StateChanged(old, new, reason)) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (ev.QueryNextImageRequested(1, 0x121D, 1, 1, 0x0001), TransferResponse.HARDWARE_VERSION_MISMATCH),
        (ev.QueryNextImageRequested(1, 0x121D, 1, 2, 0x0003), TransferResponse.FILE_TRANSFER_FAILURE),  # runs the image's version
        (ev.QueryNextImageRequested(1, 0x9999, 1, 1, 0x0003), TransferResponse.FILE_TRANSFER_FAILURE),
    ],
)
def test_the_sessions_own_refusals_map_to_their_codes(query: ev.QueryNextImageRequested, expected: TransferResponse) -> None:
    """With the OTA session's own wording of its refusals, not a copy of it."""
    from gateway.ota.session import ImageInfo, OtaSession, SessionConfig

    session = OtaSession(DEVICE, ImageInfo(0x121D, 1, 2, bytes(100), min_hardware_version=2, max_hardware_version=5), SessionConfig())
    session.start(0.0)
    [change] = [a for a in session.handle(query, 1.0) if isinstance(a, ev.StateChanged)]
    assert transfer_outcome(change) is expected


# ---------------------------------------------------------------- the counter in the store


def test_counter_is_reserved_then_committed_and_never_reused(tmp_path: Path) -> None:
    with StateStore.in_state_dir(tmp_path) as store:
        assert store.hub_counter() is None
        first = store.reserve_hub_message(DEVICE, None, {"x": 1}, floor=10)
        assert (first.counter, first.status, first.data) == (10, "reserved", None)
        second = store.reserve_hub_message(DEVICE, None, {"x": 2}, floor=5)  # a lower floor: still above
        assert second.counter == 11
        assert store.hub_counter() == (11, None)
        assert [m.counter for m in store.pending_hub_messages()] == [10, 11]
        assert store.list_messages() == []  # reserved rows are not shown as messages
    with StateStore.in_state_dir(tmp_path) as store:  # reopened: as after a crash
        assert store.reserve_hub_message(DEVICE, None, {}, floor=1).counter == 12


def test_complete_refuses_bytes_with_another_counter(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    cfg = hub_config(hub_files)
    with StateStore.in_state_dir(tmp_path) as store:
        hub = HubMessages(cfg, store, trust=TrustStore())
        row = store.reserve_hub_message(DEVICE, None, {}, floor=100)
        details = _details(cfg)
        with pytest.raises(StoreError, match="reserved counter 100, its bytes carry 101"):
            store.complete_hub_message(row.message_id, hub._build(details, 101))
        done = store.complete_hub_message(row.message_id, hub._build(details, 100), known=hub.known)
        assert (done.status, done.counter, done.signature) == ("recorded", 100, "valid")
        assert store.hub_counter() == (100, 100)
        with pytest.raises(StoreError, match="is not reserved"):
            store.complete_hub_message(row.message_id, hub._build(details, 100))


def _details(cfg: Config) -> dict[str, Any]:
    return {
        "response_code": 0, "entity_id": "00DB1234567890A4", "firmware_version": 1,
        "execution_time": "2026-12-04T00:00:00+00:00", "originator": cfg.hub.entity_id, "recipient": cfg.hub.acb_id,
    }


# ---------------------------------------------------------------- emission


def test_a_held_job_emits_one_signed_8f8a_that_verifies(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    cfg = hub_config(hub_files)
    audited: list[tuple[str, Any, dict[str, Any]]] = []
    with StateStore.in_state_dir(tmp_path) as store:
        hub = HubMessages(cfg, store, trust=TrustStore(), audit=lambda e, d=None, **f: audited.append((e, d, f)), durable_job_id=lambda j: int(j.id))
        job = fake_job()
        hub.observer(job, ev.StateChanged(S.TRANSFERRING, S.HELD))
        hub.observer(job, ev.StateChanged(S.PENDING, S.HELD))  # resumed and held again: no second alert
        hub.observer(job, ev.Progress(1, 2))
        [row] = store.list_messages(job_id=7)
        assert (row.direction.value, row.message_code, row.cra, row.signature) == ("hub", 0x0128, "alert", "valid")
        assert (row.originator, row.recipient, row.device) == (HUB_ID, "90B3D51F30000002", DEVICE)
        apdu, alert = content_of(row.to_dict()["hex"])
        assert alert.alert_code == 0x8F8A and alert.response_code == 0 and alert.firmware_version == 0x0123ABCD
        assert str(alert.entity_id) == "00DB1234567890A4"
        assert apdu.counter == row.counter and row.counter >= counter_floor(dt.datetime.now(dt.timezone.utc)) - 60_000
        assert hub.job_messages(job, 7) == [row.to_dict()]
        [(event, device, fields)] = audited
        assert event == "gbcs.message" and str(device) == DEVICE and fields["job"] == 7
        assert fields["code_hex"] == "0x0128" and fields["signature"] == "valid" and fields["hex"] == row.to_dict()["hex"]
        # Then cancelled: the image is discarded, a second alert with a higher counter.
        hub.observer(job, ev.StateChanged(S.HELD, S.CANCELLED, "cancelled by the user"))
        first, second = store.list_messages(job_id=7)
        assert second.counter > first.counter
        assert content_of(second.to_dict()["hex"])[1].response_code == TransferResponse.IMAGE_DISCARDED


def test_without_a_key_alerts_are_unsigned_from_the_coordinator(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with StateStore.in_state_dir(tmp_path) as store:
        hub = HubMessages(Config(), store, trust=TrustStore())
        asyncio.run(hub.start())
        assert "recorded unsigned" in caplog.text
        hub.engine = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(node_info=SimpleNamespace(ieee=zt.EUI64.convert("00:0d:6f:00:00:00:00:01")))))
        hub.observer(fake_job(), ev.StateChanged(S.TRANSFERRING, S.FAILED, "stalled"))
        [row] = store.list_messages()
        assert (row.signature, row.originator, row.recipient) == ("unsigned", "000D6F0000000001", "90B3D51F30000002")
        assert row.data is not None and row.data.endswith(b"\x00")
        assert content_of(row.to_dict()["hex"])[1].response_code == TransferResponse.FILE_TRANSFER_FAILURE


def test_device_keys_are_known_too(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    key_pem, cert_pem = generate_supplier_identity(EntityId.parse("00DB1234567890A4"))
    from gateway.gbcs.alerts import FirmwareTransferAlert, build_transfer_alert

    device_id = EntityId.parse("00DB1234567890A4")
    signed = build_transfer_alert(
        load_signing_key(key_pem), originator=device_id, recipient=EntityId.parse(HUB_ID), counter=3,
        alert=FirmwareTransferAlert.ended(TransferResponse.SUCCESS, device=device_id, firmware_version=1, at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
    )
    with StateStore.in_state_dir(tmp_path) as store:
        plain = HubMessages(hub_config(hub_files), store, trust=TrustStore())
        assert plain.record("in", DEVICE, signed)["signature"] == "unknown signer"
        hub = HubMessages(hub_config(hub_files), store, trust=TrustStore(), device_keys={device_id: load_anchor(cert_pem).public_key})
        assert hub.record("in", DEVICE, signed)["signature"] == "valid"
        assert HUB_ID in {str(e) for e in hub.known}


def test_without_a_store_alerts_are_kept_for_the_job_in_memory(hub_files: tuple[Path, Path]) -> None:
    hub = HubMessages(hub_config(hub_files), None, trust=TrustStore())
    job = fake_job("1")
    hub.observer(job, ev.StateChanged(S.TRANSFERRING, S.HELD))
    hub.observer(job, ev.StateChanged(S.TRANSFERRING, S.HELD))
    [view] = hub.job_messages(job)
    assert (view["direction"], view["code"], view["signature"], view["device"]) == ("hub", 0x0128, "valid", DEVICE)


def test_recover_finishes_a_reservation_with_its_counter(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    cfg = hub_config(hub_files)
    with StateStore.in_state_dir(tmp_path) as store:
        row = store.reserve_hub_message(DEVICE, 3, {**_details(cfg), "engine_job": "3"}, floor=500)
        hub = HubMessages(cfg, store, trust=TrustStore())
        assert hub.recover() == 1 and hub.recover() == 0
        [done] = store.list_messages(job_id=3)
        assert (done.message_id, done.counter, done.signature) == (row.message_id, 500, "valid")


CHILD = """
import sys, types, zigpy.types as zt
from gateway.config import parse_config
from gateway.gbcs.trust import TrustStore
from gateway.ota import events as ev
from gateway.store import StateStore
from han_ota.hub_alerts import HubMessages
cfg = parse_config({"hub": {"signing_key": sys.argv[2], "certificate": sys.argv[3]}})
store = StateStore.in_state_dir(sys.argv[1])
hub = HubMessages(cfg, store, trust=TrustStore(), durable_job_id=lambda j: int(j.id))
job = types.SimpleNamespace(id="9", ieee=zt.EUI64.convert("%s"), image=types.SimpleNamespace(file_version=5))
hub.observer(job, ev.StateChanged(ev.SessionState.TRANSFERRING, ev.SessionState.HELD))
print("no crash")
""" % DEVICE


@pytest.mark.parametrize("point", HUB_ALERT_POINTS)
def test_killed_during_signing_nothing_lost_no_counter_reused(tmp_path: Path, hub_files: tuple[Path, Path], point: str) -> None:
    """The kill-test pattern (tests/system/test_daemon_kill.py): a process killed at the crash
    point, then the state reopened as the next start would."""
    key, cert = hub_files
    with StateStore.in_state_dir(tmp_path) as store:  # an earlier alert, for another job
        HubMessages(hub_config(hub_files), store, trust=TrustStore()).observer(fake_job("8"), ev.StateChanged(S.TRANSFERRING, S.HELD))
        [earlier] = store.list_messages()
        before = earlier.counter
    env = {"PYTHONPATH": str(ROOT), CRASH_ENV: point, "PATH": "/usr/bin:/bin"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(key), str(cert)], env=env, capture_output=True, text=True, timeout=120)
    assert child.returncode == 137, child.stderr
    assert "no crash" not in child.stdout
    with StateStore.in_state_dir(tmp_path) as store:
        [pending] = [m for m in store.pending_hub_messages() if m.job_id == 9]
        assert pending.counter is not None and before is not None and pending.counter > before
        hub = HubMessages(hub_config(hub_files), store, trust=TrustStore(), durable_job_id=lambda j: int(j.id))
        hub.recover()
        [alert] = store.list_messages(job_id=9)
        assert (alert.counter, alert.signature) == (pending.counter, "valid")
        # The job is seen held again after the restart: no second alert, and the next
        # alert's counter is above every one handed out.
        hub.observer(SimpleNamespace(id="9", ieee=zt.EUI64.convert(DEVICE), image=SimpleNamespace(file_version=5)), ev.StateChanged(S.TRANSFERRING, S.HELD))
        assert len(store.list_messages(job_id=9)) == 1
        hub.observer(fake_job("10"), ev.StateChanged(S.TRANSFERRING, S.HELD))
        assert [m.counter for m in store.list_messages()] == sorted({before, pending.counter, store.list_messages()[-1].counter})
        assert store.pending_hub_messages() == []


# ---------------------------------------------------------------- [hub] configuration


def test_hub_config(hub_files: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = hub_config(hub_files, gfi_feed="127.0.0.1:23456")
    assert (cfg.hub.entity_id, cfg.hub.acb_id, cfg.hub.gfi_feed, cfg.hub.signed) == (HUB_ID, "90B3D51F30000002", "127.0.0.1:23456", True)
    assert Config().hub == HubConfig() and not Config().hub.signed
    key, cert = hub_files
    with pytest.raises(ConfigError, match="names entity 00DB1234567890A2, not hub.entity_id 1122334455667788"):
        hub_config(hub_files, entity_id="1122334455667788")
    with pytest.raises(ConfigError, match="hub.gfi_feed"):
        hub_config(hub_files, gfi_feed="23456")
    with pytest.raises(ConfigError, match="a certificate needs its signing_key"):
        parse_config({"hub": {"certificate": str(cert)}})
    other_key, _ = generate_supplier_identity(EntityId.parse(HUB_ID))
    (tmp_path / "other.key").write_bytes(other_key)
    with pytest.raises(ConfigError, match="not the public half of hub.signing_key"):
        parse_config({"hub": {"signing_key": str(tmp_path / "other.key"), "certificate": str(cert)}})
    with pytest.raises(ConfigError, match="hub.unknown"):
        parse_config({"hub": {"unknown": 1}})
    assert load_signing_key(key.read_bytes()).public_key().public_numbers() == load_anchor(cert.read_bytes()).public_key.public_numbers()


def test_keygen_makes_a_hub_identity_the_config_takes(tmp_path: Path) -> None:
    prefix = str(tmp_path / "hub-ds")
    out = subprocess.run([sys.executable, "-m", "han_ota.cli", "gbcs", "keygen", "-o", prefix], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f'entity_id = "{HUB_ID}"' in out.stdout
    cfg = parse_config({"hub": {"signing_key": prefix + ".key", "certificate": prefix + ".pem"}})
    assert cfg.hub.entity_id == HUB_ID and cfg.hub.signed
    assert load_anchor(Path(prefix + ".pem").read_bytes()).role == "CHF"


def test_config_check_shows_the_hub(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    key, cert = hub_files
    path = tmp_path / "config.toml"
    path.write_text(f'state_dir = "{tmp_path}"\n[hub]\nsigning_key = "{key}"\ncertificate = "{cert}"\ngfi_feed = "127.0.0.1:23456"\n')
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "han_ota.cli", "config", "check", str(path), "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    hub = json.loads(out.stdout)["hub"]
    assert hub == {"entity_id": HUB_ID, "signing_key": str(key), "certificate": str(cert), "acb_id": "90B3D51F30000002", "gfi_feed": "127.0.0.1:23456", "alerts": "signed"}
    text = subprocess.run([sys.executable, "-m", "han_ota.cli", "config", "check", str(path)], env=env, capture_output=True, text=True, timeout=120)
    assert f"hub             entity {HUB_ID}, alerts to 90B3D51F30000002 signed, GFI feed on 127.0.0.1:23456" in text.stdout


def test_a_store_failure_is_logged_and_the_observer_carries_on(tmp_path: Path, hub_files: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    def full(*args: Any, **kwargs: Any) -> Any:
        raise StoreError("database or disk is full")

    with StateStore.in_state_dir(tmp_path) as store:
        hub = HubMessages(hub_config(hub_files), store, trust=TrustStore())
        store.reserve_hub_message = full  # type: ignore[method-assign]
        hub.observer(fake_job(), ev.StateChanged(S.TRANSFERRING, S.HELD))
        assert "CCS08 0x8F8A not recorded: database or disk is full" in caplog.text
        assert store.hub_counter() is None and store.list_messages(status=None) == []


# ---------------------------------------------------------------- the GFI feed


def test_gfi_line_form() -> None:
    assert gfi_line(bytes.fromhex("df0102")) == b"GBCS:DATA#0:3:DF0102\r\n"


async def test_gfi_feed_writes_each_message_to_each_client(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    hub = HubMessages(hub_config(hub_files, gfi_feed="127.0.0.1:0"), None, trust=TrustStore())
    await hub.start()
    assert hub.feed is not None
    try:
        readers = [await asyncio.open_connection("127.0.0.1", hub.feed.port) for _ in range(2)]
        async with asyncio.timeout(30):
            while hub.feed.clients < 2:
                await asyncio.sleep(0.01)
        view = hub.record("in", zt.EUI64.convert(DEVICE), bytes.fromhex((ROOT / "tests/data/gbcs/cs09-8f8b-alert.hex").read_text()))
        for reader, writer in readers:
            line = await asyncio.wait_for(reader.readline(), 30)
            length = len(bytes.fromhex(view["hex"]))
            assert line == f"GBCS:DATA#0:{length}:{view['hex']}\r\n".encode()
            writer.close()
    finally:
        await hub.close()


# ---------------------------------------------------------------- a whole push


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hoalert", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_push_to_a_simulated_device_emits_8f8a_in_its_json(short_dir: Path, hub_files: tuple[Path, Path]) -> None:
    from gateway.image_build import build_image

    image = short_dir / "fw.ota"
    image.write_bytes(build_image(b"\x5a" * 3000, manufacturer_code=0x1234, image_type=0x0084, file_version=2))
    key, cert = hub_files
    cfg = parse_config({"state_dir": str(short_dir), "hub": {"signing_key": str(key), "certificate": str(cert)}})
    cfg = Config(**{**cfg.__dict__, "ota": OtaConfig(rate_bytes_per_s=10_000_000, burst_bytes=1_000_000, stall_timeout_s=20),
                    "devices": (DeviceConfig(ieee=parse_eui64(DEVICE), kind="ppmid"),)})
    with StateStore.in_state_dir(short_dir) as store:
        req = PushRequest(image=image, device=DEVICE, sim_devices=(f"ppmid:{DEVICE}:manufacturer_code=0x1234:image_type=0x0084:file_version=1",),
                          config=cfg, progress=False, timeout_s=60, counters=store)
        outcome = await run_push(req)
        assert outcome.reached and outcome.summary["state"] == "held"
        [msg] = outcome.summary["messages"]
        assert (msg["direction"], msg["code"], msg["signature"], msg["originator"]) == ("hub", 0x0128, "valid", HUB_ID)
        apdu, alert = content_of(msg["hex"])
        assert (alert.alert_code, alert.response_code, alert.firmware_version) == (0x8F8A, 0, 2)
        [kept] = store.list_messages(device=DEVICE)
        assert kept.to_dict()["hex"] == msg["hex"] and kept.job_id is None  # a push's job is not the store's


def test_unanswered_forwards_are_those_no_response_of_their_device_answers_and_never_reforwarded(tmp_path: Path, hub_files: tuple[Path, Path]) -> None:
    """Issue 13: what a restart forwards again (han_ota/tunnels.py ``reforward``)."""
    from eui64 import Eui64
    from gateway.gbcs.sign import sign_activation
    from han_ota.hub_alerts import REFORWARDED
    from radios.sim.gbcs.signer import signed_message

    supplier = EntityId.parse("90B3D51F30010000")
    key = load_signing_key(generate_supplier_identity(supplier)[0])
    commands = [
        sign_activation(key, originator=supplier, device=EntityId.parse("00DB1234567890A4"), image_hash=b"\x11" * 32, counter=n) for n in (1, 2, 3, 4)
    ]

    def response(counter: int) -> bytes:
        return signed_message(
            cra_flag=0x02, counter=counter, originator=Eui64.parse(DEVICE), recipient=Eui64.parse("90B3D51F30010000"),
            message_code=0x0012, content=bytes.fromhex("300902010004040000000A"), key=None,
        )

    other = "00:db:12:34:56:78:90:a0"
    with StateStore.in_state_dir(tmp_path) as store:
        hub = HubMessages(hub_config(hub_files), store, trust=TrustStore())
        ids = [hub.record("out", DEVICE, command)["id"] for command in commands]
        hub.record("in", DEVICE, response(1))  # answers command 1
        hub.record("in", other, response(3))  # another device's: answers nothing of this one
        hub.record("in", DEVICE, commands[3])  # not a response
        assert [m.message_id for m in hub.unanswered_forwards()] == ids[1:]
        hub.mark_reforwarded(ids[1])
        assert [m.message_id for m in hub.unanswered_forwards()] == ids[2:]
        marked = store.get_message(ids[1])
        assert REFORWARDED in (marked.details or {}) and marked.data == commands[1]  # the row's bytes untouched
        assert [m.message_id for m in hub.unanswered_forwards()] == ids[2:]
    assert HubMessages(hub_config(hub_files), None, trust=TrustStore()).unanswered_forwards() == []
