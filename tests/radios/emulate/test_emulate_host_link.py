"""radios/emulate/host_link.py: the TCP listener and pty primitives both emulators use (issue 17)."""

from __future__ import annotations

import asyncio
import os
import select

from radios.emulate.host_link import listen_tcp, open_raw_pty, point_symlink


class Recorder:
    def __init__(self, write, abort, name: str) -> None:
        self.write, self.abort, self.name = write, abort, name
        self.data = bytearray()
        self.got_data = asyncio.Event()
        self.gone = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got_data.set()

    def lost(self) -> None:
        self.gone.set()


async def test_each_tcp_connection_reaches_the_emulator_as_a_session() -> None:
    sessions: list[Recorder] = []

    def on_connect(write, abort, name: str) -> Recorder:
        sessions.append(Recorder(write, abort, name))
        return sessions[-1]

    server, host, port = await listen_tcp("127.0.0.1", 0, on_connect)
    try:
        assert host == "127.0.0.1" and port > 0
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x1a\xc0")
        await writer.drain()
        async with asyncio.timeout(10):
            while not sessions:
                await asyncio.sleep(0.01)
            session = sessions[0]
            await session.got_data.wait()
        assert bytes(session.data) == b"\x1a\xc0" and session.name.startswith("tcp 127.0.0.1:")
        session.write(b"back")
        assert await asyncio.wait_for(reader.readexactly(4), 10) == b"back"
        session.abort()  # cut from our side: the host sees EOF, the session hears it is lost
        async with asyncio.timeout(10):
            await session.gone.wait()
            assert await reader.read() == b""
        session.write(b"ignored")  # writing to a cut link is a no-op, not an error
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_a_raw_pty_and_a_stable_link_to_it(tmp_path) -> None:
    master, slave, name = open_raw_pty()
    other_master, other_slave, other_name = open_raw_pty()
    try:
        assert not os.get_blocking(master) and name != other_name
        os.write(slave, b"\x7e\r\n")  # raw: bytes pass unchanged, no echo, no CR/LF mapping
        got = b""
        while len(got) < 3:  # the kernel hands pty bytes on asynchronously
            readable, _, _ = select.select([master], [], [], 10)
            assert readable, f"pty master never became readable (got {got!r})"
            got += os.read(master, 16)
        assert got == b"\x7e\r\n"
        link = str(tmp_path / "ttyEMU0")
        point_symlink(link, name)
        assert os.readlink(link) == name
        point_symlink(link, other_name)  # a replaced pty: same path, new target
        assert os.readlink(link) == other_name and not os.path.lexists(link + ".new")
    finally:
        for fd in (master, slave, other_master, other_slave):
            os.close(fd)
