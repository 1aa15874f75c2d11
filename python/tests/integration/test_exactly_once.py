"""Exactly-once writes (extension ``idempotency``) against the real server.

A frame-reading proxy (:class:`ResultDroppingProxy`) lets a write reach the
server and be applied, then cuts the connection before its RESULT reaches
the client. The client resends it with the same idempotency key after
reconnecting; the server answers with the original RESULT. Each write is
conditional on the version before it (``if_version``), so a second
application could not succeed silently: it would be a 409 to the caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from sodp import SodpClient, WriteResult

from ..support import ResultDroppingProxy, ServerProcess, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def proxy(sodp_server: ServerProcess) -> AsyncIterator[ResultDroppingProxy]:
    p = ResultDroppingProxy(sodp_server.port)
    await p.start()
    yield p
    await p.close()


def cut_client(proxy: ResultDroppingProxy) -> SodpClient:
    return SodpClient(proxy.url, reconnect_delay=0.05, max_reconnect_delay=0.1)


Write = Callable[[SodpClient, int], Awaitable[WriteResult]]

WRITES: dict[str, tuple[str, Write]] = {
    "patch": ("state.patch", lambda c, v: c.patch("acct.a", {"n": 1}, if_version=v)),
    "set": ("state.set", lambda c, v: c.set("acct.a", {"n": 1}, if_version=v)),
    "set_in": ("state.set_in", lambda c, v: c.set_in("acct.a", "/n", 1, if_version=v)),
    "transaction": (
        "state.transaction",
        lambda c, v: c.transaction().set_in("acct.a", "/n", 1, if_version=v).commit(),
    ),
    "explicit key": (
        "state.patch",
        lambda c, v: c.patch("acct.a", {"n": 1}, if_version=v, idempotency_key="order-17"),
    ),
}


@pytest.mark.parametrize("name", list(WRITES))
async def test_a_write_whose_result_was_lost_is_applied_once(
    sodp_server: ServerProcess, proxy: ResultDroppingProxy, name: str
) -> None:
    method, write = WRITES[name]
    async with SodpClient(sodp_server.url) as observer:
        client = cut_client(proxy)
        try:
            await client.ready
            assert client.capabilities.get("idempotency") is True
            v0 = (await client.set("acct.a", {"n": 0}))["version"]
            before = len(proxy.calls)
            proxy.drop_result_of(lambda body: body["method"] == method)
            result = await asyncio.wait_for(write(client, v0), 10)
        finally:
            await client.aclose()
        # The first attempt was applied and its RESULT cut off; the caller got
        # the original RESULT, from the resend on the second connection.
        (lost,) = proxy.dropped
        assert lost["success"] is True
        assert result == lost["data"]
        assert proxy.accepted == 2
        first, resend = proxy.calls[before:]
        assert first["method"] == method and "idempotency_key" in first
        assert resend == first, "the same CALL again, key included"
        if name == "explicit key":
            assert first["idempotency_key"] == "order-17"
        # applied once: one change after v0, with the caller's version
        history = await observer.history("acct.a", since_version=v0)
        assert [e["version"] for e in history["entries"]] == [result["version"]]
        assert (await observer.fetch("acct.a"))["value"] == {"n": 1}


async def test_every_write_carries_a_key_and_reads_do_not(
    proxy: ResultDroppingProxy,
) -> None:
    client = cut_client(proxy)
    try:
        await client.ready
        await client.set("k.a", 1)
        await client.patch("k.b", {"x": 1})
        await client.set_in("k.b", "/y", 2)
        await client.presence("k.b", "/me", True)
        await client.transaction().set("k.c", 1).delete("k.a").commit()
        await client.delete("k.c")
        await client.fetch("k.b")
        await client.keys("k")
        await client.history("k.b")
        await client.call("state.set", {"state": "k.d", "value": 1})  # raw call() too
    finally:
        await client.aclose()
    keyed = {c["method"]: "idempotency_key" in c for c in proxy.calls}
    assert keyed == {
        "state.set": True,
        "state.patch": True,
        "state.set_in": True,
        "state.presence": True,
        "state.transaction": True,
        "state.delete": True,
        "state.get": False,
        "state.keys": False,
        "state.history": False,
    }
    keys = [c["idempotency_key"] for c in proxy.calls if "idempotency_key" in c]
    assert len(set(keys)) == len(keys), "a fresh key per call"


async def test_writes_made_while_disconnected_are_sent_in_order_after_reconnect(
    sodp_server: ServerProcess, proxy: ResultDroppingProxy
) -> None:
    client = cut_client(proxy)
    lost: list[int] = []
    client._on_disconnect = lambda: lost.append(1)
    try:
        await client.ready
        proxy.refusing = True
        proxy.cut()
        await wait_for(lambda: lost == [1])
        offline = [asyncio.create_task(client.patch("offline.q", {f"f{i}": i})) for i in range(5)]
        await wait_for(lambda: client._protocol.queued_calls() == 5)
        assert not any(t.done() for t in offline)
        proxy.refusing = False
        results = await asyncio.wait_for(asyncio.gather(*offline), 10)
    finally:
        await client.aclose()
    versions = [r["version"] for r in results]
    assert versions == sorted(versions) and len(set(versions)) == 5, "applied in call order"
    async with SodpClient(sodp_server.url) as observer:
        assert (await observer.fetch("offline.q"))["value"] == {f"f{i}": i for i in range(5)}


async def test_presence_whose_result_was_lost_is_bound_to_the_new_session(
    sodp_server: ServerProcess, proxy: ResultDroppingProxy
) -> None:
    """The old session's presence binding ended with it, so the client sends
    the presence again (a fresh key) and the new session holds it: it goes
    away when that session ends, not before."""
    seen: list[Any] = []
    async with SodpClient(sodp_server.url) as observer:
        observer.watch("room.cursors", lambda v, m: seen.append(v))
        client = cut_client(proxy)
        try:
            await client.ready
            proxy.drop_result_of(lambda body: body["method"] == "state.presence")
            result = await asyncio.wait_for(client.presence("room.cursors", "/me", 1), 10)
            first, resend = [c for c in proxy.calls if c["method"] == "state.presence"]
            assert first["idempotency_key"] != resend["idempotency_key"]
            assert result["version"] > proxy.dropped[0]["data"]["version"]
            await wait_for(lambda: observer.get("room.cursors") == {"me": 1})
            history = await observer.history("room.cursors")
            # set by the first session, removed when it ended, set again
            ops = [[op["op"] for op in e["ops"]] for e in history["entries"]]
            assert len(ops) == 3 and ops[1] == ["REMOVE"], ops
            assert history["entries"][-1]["version"] == result["version"]
        finally:
            await client.aclose()
        await wait_for(lambda: observer.get("room.cursors") == {})
