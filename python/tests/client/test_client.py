"""The asyncio layer against a scripted server: calls, errors, auth, lifetime."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from sodp import (
    AuthError,
    CallError,
    CallQueueFull,
    CallTimeout,
    ConnectionLost,
    ServerError,
    SodpClient,
    SodpError,
    WatchMeta,
)
from sodp.frames import FrameType as T

from ..support import wait_for
from .conftest import FakeServer


def make_jwt(sub: str, exp: float) -> str:
    def enc(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'HS256'})}.{enc({'sub': sub, 'exp': exp})}.sig"


def test_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        SodpClient("ws://127.0.0.1:1")


async def test_bad_url_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported URL"):
        SodpClient("http://127.0.0.1:1")


async def test_sodp_scheme_and_await_client(server: FakeServer) -> None:
    client = SodpClient(f"sodp://127.0.0.1:{server.port}")
    assert await client is client
    assert client.capabilities["resume"] is True
    assert client.connected
    client.close()


async def test_calls_made_before_connecting_are_queued(server: FakeServer) -> None:
    server.auth = True
    client = SodpClient(server.url, token="t0")
    call = asyncio.create_task(client.set("a", 1))
    conn = await server.accept()
    auth = await conn.expect(T.AUTH)
    assert auth.body == {"token": "t0"}
    # a barrier: the echo comes after anything the client sent before it
    await conn.send(T.HEARTBEAT)
    assert (await conn.expect(T.HEARTBEAT)).body is None  # nothing but AUTH before AUTH_OK
    assert conn.frames.empty()
    await conn.send(T.AUTH_OK, {"sub": "u"})
    frame = await conn.expect(T.CALL)
    assert frame.body["method"] == "state.set"
    assert frame.body["args"] == {"state": "a", "value": 1}
    await conn.result(frame, {"version": 1})
    assert await call == {"version": 1}
    await client.aclose()


async def test_failed_call_raises_call_error_with_code(server: FakeServer) -> None:
    async with SodpClient(server.url) as client:
        conn = await server.accept()
        task = asyncio.create_task(client.call("nope", {}))
        frame = await conn.expect(T.CALL)
        body = {"call_id": frame.body["call_id"], "success": False, "data": "no such method"}
        await conn.send(T.RESULT, {**body, "code": 404})
        with pytest.raises(CallError) as info:
            await task
        assert info.value.code == 404 and info.value.message == "no such method"
        assert isinstance(info.value, SodpError)


async def test_error_frames_go_to_on_error_never_to_a_call(server: FakeServer) -> None:
    errors: list[SodpError] = []
    async with SodpClient(server.url, on_error=errors.append) as client:
        conn = await server.accept()
        task = asyncio.create_task(client.set("a", 1))
        frame = await conn.expect(T.CALL)
        await conn.send(T.ERROR, {"code": 429, "message": "too many watches"})
        await conn.send(T.HEARTBEAT)
        await conn.expect(T.HEARTBEAT)  # the client has handled the ERROR
        await asyncio.sleep(0)  # and anything the ERROR could have resolved has run
        assert not task.done()
        await conn.result(frame, {"version": 2})
        assert await task == {"version": 2}
        assert len(errors) == 1 and isinstance(errors[0], ServerError) and errors[0].code == 429


async def test_in_flight_calls_fail_promptly_on_disconnect(server: FakeServer) -> None:
    client = SodpClient(server.url, reconnect_delay=0.05)
    await client.ready
    conn = await server.accept()
    task = asyncio.create_task(client.set("a", 1))
    await conn.expect(T.CALL)
    started = time.monotonic()
    await conn.ws.close()
    with pytest.raises(ConnectionError):  # ConnectionLost is a ConnectionError
        await task
    assert time.monotonic() - started < 1.0
    # ... and the client comes back by itself
    conn2 = await server.accept()
    task = asyncio.create_task(client.set("a", 2))
    await conn2.result(await conn2.expect(T.CALL), {"version": 3})
    assert await task == {"version": 3}
    await client.aclose()


async def test_call_timeout(server: FakeServer) -> None:
    async with SodpClient(server.url, call_timeout=0.1) as client:
        with pytest.raises(CallTimeout):
            await client.set("a", 1)
        with pytest.raises(TimeoutError):
            await client.call("state.set", {"state": "a", "value": 1}, timeout=0.05)


async def test_handshake_401_stops_reconnecting(server: FakeServer) -> None:
    server.auth = True
    errors: list[SodpError] = []
    client = SodpClient(server.url, token="bad", reconnect_delay=0.05, on_error=errors.append)
    queued = asyncio.create_task(client.set("a", 1))
    conn = await server.accept()
    await conn.expect(T.AUTH)
    await conn.send(T.ERROR, {"code": 401, "message": "invalid token"})
    with pytest.raises(AuthError):
        await client.ready
    with pytest.raises(AuthError):
        await queued
    with pytest.raises(AuthError):
        await client.set("a", 2)
    await wait_for(client._task.done)  # the connection loop ended ...
    assert len(server.all) == 1  # ... without a reconnect
    assert [type(e) for e in errors] == [AuthError]
    await client.aclose()


async def test_missing_token_is_an_auth_error(server: FakeServer) -> None:
    server.auth = True
    client = SodpClient(server.url)
    with pytest.raises(AuthError, match="requires a token"):
        await asyncio.wait_for(client.ready, 5)
    await client.aclose()


async def test_token_provider_sync_async_and_retried(server: FakeServer) -> None:
    server.auth = True
    calls: list[int] = []

    async def provider() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("token service down")
        return f"tok{len(calls)}"

    client = SodpClient(server.url, token_provider=provider, token="ignored", reconnect_delay=0.05)
    first = await server.accept()  # provider fails: this connection is dropped
    await asyncio.wait_for(first.closed.wait(), 5)
    conn = await server.accept()
    assert (await conn.expect(T.AUTH)).body == {"token": "tok2"}
    await conn.send(T.AUTH_OK, {"sub": "u"})
    await client.ready
    await conn.ws.close()  # reconnect: the provider is called again
    conn = await server.accept()
    assert (await conn.expect(T.AUTH)).body == {"token": "tok3"}
    await client.aclose()

    sync_client = SodpClient(server.url, token_provider=lambda: "sync-tok")
    conn = await server.accept()
    assert (await conn.expect(T.AUTH)).body == {"token": "sync-tok"}
    await sync_client.aclose()


class FakeTime:
    """A clock and a sleep for the client: sleeping records the delay and
    moves the clock, at once."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


async def test_in_band_token_refresh_before_expiry(server: FakeServer) -> None:
    server.auth = True
    server.capabilities["token_refresh"] = True
    clock = FakeTime()
    issued: list[str] = []
    lifetimes = [3600.0, 100.0, 100.0]  # each outlives the one it replaces

    def provider() -> str:
        issued.append(make_jwt("alice", clock.now + lifetimes[len(issued)]))
        return issued[-1]

    client = SodpClient(server.url, token_provider=provider)
    client._now, client._sleep = clock.time, clock.sleep
    conn = await server.accept()
    assert (await conn.expect(T.AUTH)).body["token"] == issued[0]
    await conn.send(T.AUTH_OK, {"sub": "alice"})
    await client.ready
    refresh = await conn.expect(T.AUTH)  # on the same connection
    assert refresh.body["token"] == issued[1]
    assert clock.sleeps == [3600 - 60]  # a minute before a one-hour token expires
    await conn.send(T.AUTH_OK, {"sub": "alice"})
    third = await conn.expect(T.AUTH)  # and again for the new token
    assert third.body["token"] == issued[2]
    assert clock.sleeps == [3600 - 60, 75.0]  # a quarter of 100 s early
    assert len(server.all) == 1
    await client.aclose()


async def test_reconnect_waits_the_backoff_delays(server: FakeServer) -> None:
    server.send_hello = False
    clock = FakeTime()
    client = SodpClient(server.url, reconnect_delay=1.0, max_reconnect_delay=4.0)
    client._now, client._sleep = clock.time, clock.sleep
    client._backoff.jitter = 0.0
    for _ in range(4):
        conn = await server.accept()
        await conn.ws.close()
    await wait_for(lambda: len(clock.sleeps) >= 4)
    assert clock.sleeps[:4] == [1.0, 2.0, 4.0, 4.0]
    await client.aclose()


async def test_live_401_reconnects_with_a_provider(server: FakeServer) -> None:
    server.auth = True
    client = SodpClient(server.url, token_provider=lambda: "tok", reconnect_delay=0.05)
    conn = await server.accept()
    await conn.expect(T.AUTH)
    await conn.send(T.AUTH_OK, {"sub": "u"})
    await client.ready
    await conn.send(T.ERROR, {"code": 401, "message": "token expired"})
    await conn.ws.close()
    conn2 = await server.accept()
    await conn2.expect(T.AUTH)
    await client.aclose()


async def test_callbacks_errors_are_isolated_and_async_callbacks_ordered(
    server: FakeServer,
) -> None:
    seen: list[tuple[str, Any, str]] = []

    def bad(value: Any, meta: WatchMeta) -> None:
        raise RuntimeError("boom")

    async def slow(value: Any, meta: WatchMeta) -> None:
        await asyncio.sleep(0.02 if meta.source == "init" else 0)
        seen.append(("async", value, meta.source))

    def good(value: Any, meta: WatchMeta) -> None:
        seen.append(("sync", value, meta.source))

    async with SodpClient(server.url) as client:
        conn = await server.accept()
        client.watch("k", bad)
        client.watch("k", slow)
        client.watch("k", good)
        watch = await conn.expect(T.WATCH)
        assert watch.body == {"state": "k"}  # one subscription for three callbacks
        await conn.send(
            T.STATE_INIT, {"state": "k", "version": 1, "value": 1, "initialized": True}, 77
        )
        await conn.send(
            T.DELTA,
            {"state": "k", "version": 2, "ops": [{"op": "UPDATE", "path": "/", "value": 2}]},
            77,
        )
        await wait_for(lambda: len(seen) == 4)
        assert [s for s in seen if s[0] == "sync"] == [("sync", 1, "init"), ("sync", 2, "delta")]
        assert [s for s in seen if s[0] == "async"] == [("async", 1, "init"), ("async", 2, "delta")]
        # the connection survived the raising callback
        task = asyncio.create_task(client.set("k", 3))
        await conn.result(await conn.expect(T.CALL), {"version": 3})
        assert await task == {"version": 3}


async def test_aclose_sends_a_close_frame(server: FakeServer) -> None:
    async with SodpClient(server.url):
        conn = await server.accept()
    await asyncio.wait_for(conn.closed.wait(), 5)
    assert conn.close_code == 1000


async def test_close_is_sync_and_fails_waiters(server: FakeServer) -> None:
    server.send_hello = False
    client = SodpClient(server.url)
    await server.accept()
    call = asyncio.create_task(client.set("a", 1))
    await asyncio.sleep(0.01)
    client.close()
    with pytest.raises(ConnectionLost):
        await client.ready
    with pytest.raises(ConnectionLost):
        await call
    with pytest.raises(ConnectionError):
        await client.set("a", 1)


async def test_no_reconnect_makes_ready_fail() -> None:
    client = SodpClient("ws://127.0.0.1:9", reconnect=False)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(client.ready, 5)
    await client.aclose()


async def test_reconnect_resumes_with_the_known_version(server: FakeServer) -> None:
    changes: list[tuple[Any, str, int]] = []
    connects: list[int] = []
    disconnects: list[int] = []
    client = SodpClient(
        server.url,
        reconnect_delay=0.05,
        on_connect=lambda: connects.append(1),
        on_disconnect=lambda: disconnects.append(1),
    )
    client.watch("k", lambda v, m: changes.append((v, m.source, m.version)))
    conn = await server.accept()
    await conn.expect(T.WATCH)
    await conn.send(
        T.STATE_INIT, {"state": "k", "version": 4, "value": {"n": 1}, "initialized": True}, 30
    )
    await wait_for(lambda: len(changes) == 1)
    await conn.ws.close()
    conn = await server.accept()
    resume = await conn.expect(T.RESUME)
    assert resume.body == {"state": "k", "since_version": 4}
    await conn.send(
        T.DELTA,
        {"state": "k", "version": 6, "ops": [{"op": "UPDATE", "path": "/n", "value": 2}]},
        31,
    )
    await conn.send(
        T.STATE_INIT, {"state": "k", "version": 6, "value": {"n": 2}, "initialized": True}, 31
    )
    await wait_for(lambda: len(changes) == 3)
    assert changes == [({"n": 1}, "init", 4), ({"n": 2}, "delta", 6), ({"n": 2}, "init", 6)]
    assert client.get("k") == {"n": 2}
    assert (len(connects), len(disconnects)) == (2, 1)
    await client.aclose()


async def test_heartbeat_is_echoed(server: FakeServer) -> None:
    async with SodpClient(server.url):
        conn = await server.accept()
        await conn.send(T.HEARTBEAT)
        echo = await conn.expect(T.HEARTBEAT)
        assert echo.body is None


async def test_slow_async_callback_is_bounded_by_per_key_conflation(server: FakeServer) -> None:
    """An async callback that does not return: pending deliveries stop at the
    bound (plus one per other key), older values of a key are replaced by the
    newest, the receive loop keeps going, and once the callback is released it
    ends with the newest value of every key, ``meta.skipped`` accounting for
    every update it never saw."""
    gate = asyncio.Event()
    seen: list[tuple[str, Any, int]] = []

    async def stuck(value: Any, meta: WatchMeta) -> None:
        await gate.wait()
        seen.append((meta.key, value, meta.skipped))

    async with SodpClient(server.url, max_pending_callbacks=4) as client:
        conn = await server.accept()
        client.watch_many(["k", "j"], stuck)
        await conn.expect(T.WATCH)
        await conn.send(T.STATE_INIT, {"state": "j", "version": 1, "value": 0}, 40)
        await conn.send(T.STATE_INIT, {"state": "k", "version": 1, "value": 0}, 41)
        n = 200
        for i in range(1, n + 1):
            op = {"op": "UPDATE", "path": "/", "value": i}
            await conn.send(T.DELTA, {"state": "k", "version": 1 + i, "ops": [op]}, 41)
        op = {"op": "UPDATE", "path": "/", "value": "last"}
        await conn.send(T.DELTA, {"state": "j", "version": 500, "ops": [op]}, 40)
        await wait_for(lambda: client.get("j") == "last")
        assert client.get("k") == n
        # bounded: the bound, plus at most one slot for another key
        assert len(client._pending) <= 4 + 1
        assert client.skipped_updates >= n - 5
        # the receive loop was never blocked: a call still completes
        task = asyncio.create_task(client.set("x", 1))
        await conn.result(await conn.expect(T.CALL), {"version": 501})
        assert await task == {"version": 501}

        gate.set()
        await wait_for(lambda: not client._pending and ("k", n) in [s[:2] for s in seen])
        await wait_for(lambda: ("j", "last") in [s[:2] for s in seen])
        k_seen = [(v, skipped) for key, v, skipped in seen if key == "k"]
        assert k_seen[-1][0] == n  # the newest value arrives last
        values = [v for v, _ in k_seen]
        assert values == sorted(values)  # in order, never an older value after a newer
        # every update is either delivered or counted as skipped
        assert len(k_seen) + sum(skipped for _, skipped in k_seen) == n + 1
        assert len(seen) + client.skipped_updates == n + 3
        assert [v for key, v, _ in seen if key == "j"][-1] == "last"


async def test_under_the_bound_every_update_is_delivered(server: FakeServer) -> None:
    seen: list[tuple[Any, int]] = []

    async def slow(value: Any, meta: WatchMeta) -> None:
        await asyncio.sleep(0)
        seen.append((value, meta.skipped))

    async with SodpClient(server.url, max_pending_callbacks=64) as client:
        conn = await server.accept()
        client.watch("k", slow)
        await conn.expect(T.WATCH)
        await conn.send(T.STATE_INIT, {"state": "k", "version": 1, "value": 0}, 41)
        for i in range(1, 51):
            op = {"op": "UPDATE", "path": "/", "value": i}
            await conn.send(T.DELTA, {"state": "k", "version": 1 + i, "ops": [op]}, 41)
        await wait_for(lambda: len(seen) == 51)
        assert seen == [(i, 0) for i in range(51)]
        assert client.skipped_updates == 0


async def test_max_pending_callbacks_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending_callbacks"):
        SodpClient("ws://127.0.0.1:9", max_pending_callbacks=0)


async def test_idempotent_write_in_flight_survives_a_drop(server: FakeServer) -> None:
    """With ``idempotency`` advertised, a write whose connection drops before
    its RESULT is resent on the next connection, same key, and resolves with
    the RESULT of the resend."""
    server.capabilities["idempotency"] = True
    lost: list[int] = []
    client = SodpClient(server.url, reconnect_delay=0.05, on_disconnect=lambda: lost.append(1))
    await client.ready
    conn = await server.accept()
    task = asyncio.create_task(client.set("a", 1))
    first = await conn.expect(T.CALL)
    key = first.body["idempotency_key"]
    await conn.ws.close()
    await wait_for(lambda: lost == [1])
    assert not task.done()
    conn2 = await server.accept()
    again = await conn2.expect(T.CALL)
    assert again.body == first.body and again.body["idempotency_key"] == key
    await conn2.result(again, {"version": 7})
    assert await task == {"version": 7}
    await client.aclose()


async def test_call_timeout_still_bounds_a_resent_write(server: FakeServer) -> None:
    server.capabilities["idempotency"] = True
    client = SodpClient(server.url, reconnect_delay=0.05, call_timeout=0.5)
    await client.ready
    conn = await server.accept()
    task = asyncio.create_task(client.set("a", 1))
    await conn.expect(T.CALL)
    server.send_hello = False  # the next session never becomes ready
    await conn.ws.close()
    with pytest.raises(CallTimeout):
        await task
    assert client._protocol.queued_calls() == 0  # a timed-out call does not linger
    client.close()


async def test_calls_waiting_for_a_connection_are_bounded(server: FakeServer) -> None:
    server.send_hello = False
    client = SodpClient(server.url, max_pending_calls=2)
    await server.accept()
    waiting = [asyncio.create_task(client.set("a", i)) for i in range(2)]
    await wait_for(lambda: client._protocol.queued_calls() == 2)
    with pytest.raises(CallQueueFull, match="max_pending_calls"):
        await client.set("a", 3)
    client.close()
    for task in waiting:
        with pytest.raises(ConnectionLost):
            await task
    with pytest.raises(ValueError, match="max_pending_calls"):
        SodpClient(server.url, max_pending_calls=0)
