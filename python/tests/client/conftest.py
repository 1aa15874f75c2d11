"""A scripted in-process SODP server, to test the asyncio layer precisely.

Each test decides what the server says; the client under test is the real
``SodpClient`` over a real loopback WebSocket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from sodp.frames import Frame, FrameType, decode_frame, encode_frame


@dataclass
class Conn:
    ws: ServerConnection
    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    async def send(self, ftype: int, body: Any = None, stream_id: int = 0) -> None:
        await self.ws.send(encode_frame(ftype, stream_id, 0, body))

    async def expect(self, ftype: int, timeout: float = 5.0) -> Frame:
        """The next frame, skipping HEARTBEATs unless asked for; must be *ftype*."""
        while True:
            frame = await asyncio.wait_for(self.frames.get(), timeout)
            if frame.type == FrameType.HEARTBEAT and ftype != FrameType.HEARTBEAT:
                continue
            assert frame.type == ftype, f"expected {FrameType(ftype).name}, got {frame.name()}"
            return frame

    async def result(self, call: Frame, data: Any = None, **extra: Any) -> None:
        body = {"call_id": call.body["call_id"], "success": True, "data": data, **extra}
        await self.send(FrameType.RESULT, body)


class FakeServer:
    def __init__(self) -> None:
        self.auth = False
        self.capabilities: dict[str, Any] = {"multi_watch": True, "params": True, "resume": True}
        self.conns: asyncio.Queue[Conn] = asyncio.Queue()
        self.all: list[Conn] = []
        self.port = 0
        self.send_hello = True

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def handler(self, ws: ServerConnection) -> None:
        conn = Conn(ws)
        self.all.append(conn)
        if self.send_hello:
            hello = {
                "protocol": "sodp",
                "version": "1.0",
                "server": "fake",
                "auth": self.auth,
                "capabilities": self.capabilities,
            }
            await conn.send(FrameType.HELLO, hello)
        self.conns.put_nowait(conn)
        try:
            async for msg in ws:
                assert isinstance(msg, bytes)
                conn.frames.put_nowait(decode_frame(msg))
        except ConnectionClosed:
            pass
        finally:
            conn.close_code = ws.close_code
            conn.closed.set()

    async def accept(self, timeout: float = 5.0) -> Conn:
        return await asyncio.wait_for(self.conns.get(), timeout)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    async with serve(fake.handler, "127.0.0.1", 0, compression=None) as srv:
        fake.port = next(iter(srv.sockets)).getsockname()[1]
        yield fake
