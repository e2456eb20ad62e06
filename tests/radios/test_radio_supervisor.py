"""radios/supervisor.py: reconnect with backoff, hooks, stale events, and the real zigpy-znp
driver losing its link (the emulator drops it, or its firmware resets)."""

from __future__ import annotations

import asyncio
import itertools

import pytest
import zigpy.types as zt

from radios.emulate.znp import running_znp_emulator
from radios.select import open_app
from radios.sim.spec import parse_sim_device
from radios.supervisor import RadioSupervisor

HCALCS = zt.EUI64.convert("00:0d:6f:00:0b:12:34:56")


class FakeApp:
    """Just the zigpy application surface the supervisor uses: listeners and shutdown."""

    ids = itertools.count()

    def __init__(self, name: str) -> None:
        self.name = name
        self.listeners: dict[int, object] = {}
        self.shutdowns = 0

    def add_listener(self, listener: object) -> int:
        n = next(self.ids)
        self.listeners[n] = listener
        return n

    def remove_listener(self, n: int) -> None:
        self.listeners.pop(n, None)

    def connection_lost(self, exc: Exception) -> None:  # what zigpy's does: tell the listeners
        for listener in list(self.listeners.values()):
            listener.connection_lost(exc)

    async def shutdown(self) -> None:
        self.shutdowns += 1


class Factory:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.apps: list[FakeApp] = []

    async def __call__(self) -> FakeApp:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError(111, f"attempt {self.calls} refused")
        app = FakeApp(f"app{len(self.apps)}")
        self.apps.append(app)
        return app


async def test_first_start_retries_with_backoff_when_asked():
    factory = Factory(failures=3)
    sup = RadioSupervisor(factory, backoff=(0.01, 0.02, 0.05))
    app = await sup.start(retry=True)
    assert app is factory.apps[0] and sup.up and sup.reconnects == 0
    failed = [e.detail for e in sup.events if e.kind == "attempt_failed"]
    assert [d.rsplit("next in ", 1)[1] for d in failed] == ["0.01 s", "0.02 s", "0.05 s"]
    assert "attempt 1 refused" in failed[0]
    await sup.close()
    assert app.shutdowns == 1 and not sup.up


async def test_first_start_without_retry_raises_the_factory_error():
    sup = RadioSupervisor(Factory(failures=1))
    with pytest.raises(ConnectionRefusedError):
        await sup.start()


async def test_lost_calls_hooks_in_order_reopens_and_ignores_stale_apps():
    factory = Factory()
    calls: list[str] = []

    async def async_reconnected(app):
        await asyncio.sleep(0)
        calls.append(f"reconnected:{app.name}")

    def broken_hook(reason):
        raise RuntimeError("an owner's bug must not stop the recovery")

    sup = RadioSupervisor(factory, on_lost=lambda reason: calls.append(f"lost:{reason}"), on_reconnected=async_reconnected, backoff=(0.01,))
    sup.add_hooks(on_lost=broken_hook, on_reconnected=lambda app: calls.append(f"second:{app.name}"))
    first = await sup.start()
    first.connection_lost(OSError(5, "Input/output error"))
    first.connection_lost(OSError(5, "again"))  # one recovery at a time
    app = await sup.reconnected(1, timeout=5)
    assert app is factory.apps[1] and first.shutdowns == 1 and first.listeners == {}
    assert calls == ["lost:connection lost: OSError: [Errno 5] Input/output error", "reconnected:app1", "second:app1"]
    first.connection_lost(OSError(5, "stale"))  # the old object's late news changes nothing
    await asyncio.sleep(0.05)
    assert sup.reconnects == 1 and sup.app is app and sup.up
    assert [e.kind for e in sup.events] == ["up", "lost", "reconnected"]
    await sup.close()


async def test_close_during_recovery_stops_it():
    gate = asyncio.Event()
    factory = Factory()

    async def slow_factory():
        if factory.calls >= 1:
            await gate.wait()  # the dongle never comes back
        return await factory()

    sup = RadioSupervisor(slow_factory, backoff=(0.01,))
    app = await sup.start()
    sup.report_lost("watchdog: no answer")
    await asyncio.sleep(0.05)
    assert not sup.up and sup.last_error == "watchdog: no answer"
    await sup.close()
    assert sup.app is None and sup.events[-1].kind == "closed" and app.shutdowns == 1


async def test_znp_link_dropped_while_dongle_is_away_then_back(tmp_path):
    """The real driver: the link drops, the first two reopen attempts fail (the dongle is
    still away), the third succeeds; the new application knows the HCALCS from the database."""
    spec = parse_sim_device(f"hcalcs:{HCALCS}:query_delay=3600")
    async with running_znp_emulator([spec]) as (path, server):
        attempts = 0

        initialized = asyncio.Event()

        class Listener:
            def device_initialized(self, device: object) -> None:
                if getattr(device, "ieee", None) == HCALCS:
                    initialized.set()

        async def factory():
            nonlocal attempts
            attempts += 1
            if 2 <= attempts <= 3:
                raise ConnectionRefusedError(111, "Connection refused")
            app = await open_app("znp", path=path, database=tmp_path / "zigbee.db")
            app.add_listener(Listener())
            known = app.devices.get(HCALCS)
            if known is not None and known.original_signature is not None:  # finalized already
                initialized.set()
            return app

        sup = RadioSupervisor(factory, name="znp", backoff=(0.05, 0.1))
        first = await sup.start()
        # zigpy saves the device when its interview ends (device_initialized), which is
        # after is_initialized turns true: drop the link before it and nothing is saved.
        async with asyncio.timeout(30):
            await initialized.wait()
        server.drop_connection()
        app = await sup.reconnected(1, timeout=30)
        try:
            assert app is not first and attempts == 4
            assert [e.kind for e in sup.events] == ["up", "lost", "attempt_failed", "attempt_failed", "reconnected"]
            assert "connection lost" in sup.events[1].detail
            assert HCALCS in app.devices and app.devices[HCALCS].nwk == server.coordinator.han.devices[HCALCS].nwk
            assert server.connections_made == 2
        finally:
            await sup.close()
        # Our own shutdown resets the coordinator (SYS.ResetInd): not mistaken for a fault.
        assert [e.kind for e in sup.events][-1] == "closed" and sup.reconnects == 1
