"""watch_many is all-or-nothing, against the real server: if any key of the
call is refused, no key of the call stays subscribed and ``await handle``
raises the server's error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sodp import ServerError, SodpClient, SodpError, WatchMeta
from sodp.frames import Frame, FrameType
from sodp.protocol import ClientProtocol, Event

from ..support import ServerProcess, wait_for

pytestmark = pytest.mark.integration

ACL = {
    "rules": [
        {"pattern": "secret.*", "read": [], "write": ["*"]},
        {"pattern": "*", "read": ["*"], "write": ["*"]},
    ]
}


@pytest.fixture
def acl_server(sodp_server_bin: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    acl = tmp_path / "acl.json"
    acl.write_text(json.dumps(ACL))
    server = ServerProcess(sodp_server_bin, args=["--acl-file", str(acl)])
    server.start()
    yield server
    server.stop()


@pytest.fixture
def frames_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Any]]:
    """Every (frame type, key) any client in this test receives. A live DELTA
    names its key by stream only, mapped from the STATE_INIT before it."""
    seen: list[tuple[int, Any]] = []
    streams: dict[int, Any] = {}
    original = ClientProtocol.receive_frame

    def spy(self: ClientProtocol, frame: Frame) -> list[Event]:
        body = frame.body if isinstance(frame.body, dict) else {}
        key = body.get("state")
        if frame.type == FrameType.STATE_INIT:
            streams[frame.stream_id] = key
        elif frame.type == FrameType.DELTA and key is None:
            key = streams.get(frame.stream_id)
        seen.append((frame.type, key))
        return original(self, frame)

    monkeypatch.setattr(ClientProtocol, "receive_frame", spy)
    return seen


async def assert_not_subscribed(
    client: SodpClient, writer: SodpClient, keys: list[str], seen: list[tuple[int, Any]]
) -> None:
    """Write every key, then a sentinel the client watches alone: the server
    sends in order, so once the sentinel arrives, a DELTA for any of *keys*
    would have arrived before it."""
    sentinel = "ok.sentinel"
    client.watch(sentinel, lambda v, m: None)
    await wait_for(lambda: (FrameType.STATE_INIT, sentinel) in seen)
    start = len(seen)
    for key in keys:
        await writer.set(key, "after")
    await writer.set(sentinel, "done")
    await wait_for(lambda: client.get(sentinel) == "done")
    deltas = [k for t, k in seen[start:] if t == FrameType.DELTA]
    assert deltas == [sentinel], deltas
    for key in keys:
        assert not client.is_watching(key) and client.get(key) is None


async def test_an_acl_denied_key_undoes_the_whole_call(
    acl_server: ServerProcess, frames_seen: list[tuple[int, Any]]
) -> None:
    calls: list[tuple[Any, WatchMeta]] = []
    errors: list[SodpError] = []
    async with (
        SodpClient(acl_server.url, on_error=errors.append) as client,
        SodpClient(acl_server.url) as writer,
    ):
        await writer.set("ok.a", "before")
        keys = ["ok.a", "secret.x", "ok.b"]
        handle = client.watch_many(keys, lambda v, m: calls.append((v, m)))
        with pytest.raises(ServerError) as info:
            await handle
        assert info.value.code == 403
        assert "denied" in info.value.message
        assert handle.settled
        assert errors and errors[0] is info.value  # on_error hears it too
        # the server did subscribe the allowed keys before refusing: undone
        assert (FrameType.STATE_INIT, "ok.a") in frames_seen
        await assert_not_subscribed(client, writer, keys, frames_seen)
        assert calls == []  # the callback never ran for any key of the call


async def test_allowed_keys_settle_and_deliver_every_baseline(acl_server: ServerProcess) -> None:
    seen: dict[str, list[tuple[Any, str]]] = {}

    def cb(value: Any, meta: WatchMeta) -> None:
        seen.setdefault(meta.key, []).append((value, meta.source))

    async with SodpClient(acl_server.url) as client:
        await client.set("ok.a", 1)
        client.watch("ok.a", lambda v, m: None)
        await wait_for(lambda: client.get("ok.a") == 1)
        handle = client.watch_many(["ok.a", "ok.b", "ok.c"], cb)
        await handle
        assert seen == {"ok.a": [(1, "cache")], "ok.b": [(None, "init")], "ok.c": [(None, "init")]}
        await client.set("ok.b", 2)
        await wait_for(lambda: seen["ok.b"][-1] == (2, "delta"))
        handle()
        await client.set("ok.b", 3)
        await wait_for(lambda: client.get("ok.b") == 3)
        assert seen["ok.b"][-1] == (2, "delta")


async def test_a_bad_key_undoes_the_call(
    sodp_server: ServerProcess, frames_seen: list[tuple[int, Any]]
) -> None:
    async with SodpClient(sodp_server.url) as client, SodpClient(sodp_server.url) as writer:
        handle = client.watch_many(["ok.a", "bad key!"], lambda v, m: None)
        with pytest.raises(ServerError) as info:
            await handle
        assert info.value.code == 400 and "bad key" in info.value.message
        await assert_not_subscribed(client, writer, ["ok.a"], frames_seen)


async def test_the_subscription_limit_undoes_the_call(
    sodp_server_bin: Path, frames_seen: list[tuple[int, Any]]
) -> None:
    server = ServerProcess(sodp_server_bin, args=["--max-subscriptions", "3"])
    server.start()
    try:
        async with SodpClient(server.url) as client, SodpClient(server.url) as writer:
            handle = client.watch_many(["ok.a", "ok.b", "ok.c", "ok.d"], lambda v, m: None)
            with pytest.raises(ServerError) as info:
                await handle
            assert info.value.code == 400 and "subscription limit" in info.value.message
            await assert_not_subscribed(client, writer, ["ok.a", "ok.b", "ok.c"], frames_seen)
    finally:
        server.stop()
