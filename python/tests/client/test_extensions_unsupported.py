"""Against a server that advertises no extension: every extension call raises
UnsupportedError and sends nothing; plain calls are unchanged."""

from __future__ import annotations

import asyncio

import pytest

from sodp import ConflictError, SodpClient, UnsupportedError
from sodp.frames import FrameType as T

from .conftest import FakeServer


async def test_extensions_raise_and_send_nothing(server: FakeServer) -> None:
    client = SodpClient(server.url)
    conn = await server.accept()
    await client.ready
    checks = [
        (client.set("k", 1, if_version=3), "conditional"),
        (client.patch("k", {"a": 1}, if_version=0), "conditional"),
        (client.set_in("k", "/a", 1, if_version=1), "conditional"),
        (client.delete("k", if_version=1), "conditional"),
        (client.set("k", 1, ttl=100), "ttl"),
        (client.fetch("k"), "read"),
        (client.keys("k"), "read"),
        (client.history("k"), "read"),
        (client.transact("k", lambda v: v), "read"),
        (client.transaction().set("k", 1).commit(), "transaction"),
        (client.set("k", 1, idempotency_key="once"), "idempotency"),
    ]
    for coro, cap in checks:
        with pytest.raises(UnsupportedError) as info:
            await coro
        assert info.value.capability == cap
        assert cap in str(info.value)
    with pytest.raises(UnsupportedError, match="prefix_watch"):
        client.watch("game.*", lambda v, m: None)
    with pytest.raises(UnsupportedError, match="prefix_watch"):
        client.watch_many(["a", "game.*"], lambda v, m: None)
    assert not client.is_watching("a")
    # nothing was sent: the next frame is this plain write, with no extra args
    call = asyncio.create_task(client.set("k", 1))
    frame = await conn.expect(T.CALL)
    assert frame.body["method"] == "state.set"
    assert frame.body["args"] == {"state": "k", "value": 1}
    assert "idempotency_key" not in frame.body  # no key without the capability
    await conn.result(frame, {"version": 1})
    assert await call == {"version": 1}
    client.close()


async def test_conditional_write_before_ready_waits_for_hello(server: FakeServer) -> None:
    server.capabilities["conditional"] = True
    client = SodpClient(server.url)
    call = asyncio.create_task(client.set("k", 1, if_version=0))
    conn = await server.accept()
    frame = await conn.expect(T.CALL)
    assert frame.body["args"] == {"state": "k", "value": 1, "if_version": 0}
    await conn.send(
        T.RESULT,
        {
            "call_id": frame.body["call_id"],
            "success": False,
            "code": 409,
            "version": 7,
            "data": "409 k: version is 7, not 0 as required by `if_version`",
        },
    )

    with pytest.raises(ConflictError) as info:
        await call
    assert info.value.version == 7
    client.close()


async def test_pattern_watch_before_hello_is_refused(server: FakeServer) -> None:
    server.send_hello = False
    client = SodpClient(server.url)
    await server.accept()
    with pytest.raises(UnsupportedError, match=r"await client\.ready"):
        client.watch("a.*", lambda v, m: None)
    client.close()
