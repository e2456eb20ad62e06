"""The GFI text feed (`[hub] gfi_feed = "HOST:PORT"`, off by default).

Every GBCS message the hub keeps goes to each connected TCP client as one line,
``GBCS:DATA#0:<length>:<HEX>\\r\\n`` (length: the byte count in decimal; hex upper
case), the form DCC's GFI tool reads and HenryGiraldo/gbcs (c/gfi.c) writes. The feed
only writes: what a client sends is read and dropped. A client too slow to keep up is
dropped rather than let it hold the hub's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

LOGGER = logging.getLogger("han_ota.gfi_feed")
MAX_BUFFERED = 1 << 20  # bytes queued for one client before it is dropped


def gfi_line(data: bytes) -> bytes:
    """One message in the GFI text form."""
    return f"GBCS:DATA#0:{len(data)}:{data.hex().upper()}\r\n".encode("ascii")


class GfiFeed:
    """A TCP listener that writes each message to every client connected at the time."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # port 0: the one chosen
        LOGGER.info("GFI feed listening on %s:%d", self.host, self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while await reader.read(4096):
                pass  # the feed is one-way
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(writer)

    def _drop(self, writer: asyncio.StreamWriter) -> None:
        self._clients.discard(writer)
        writer.close()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, data: bytes) -> None:
        line = gfi_line(data)
        for writer in list(self._clients):
            if writer.transport.get_write_buffer_size() > MAX_BUFFERED:
                LOGGER.warning("GFI feed client %s is not reading: dropped", writer.get_extra_info("peername"))
                self._drop(writer)
                continue
            writer.write(line)

    async def close(self) -> None:
        for writer in list(self._clients):
            self._drop(writer)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
