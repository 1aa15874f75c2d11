"""Crashes, restarts and cut connections, against the real server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sodp import ConnectionLost, SodpClient, WatchMeta
from sodp.frames import Frame, FrameType
from sodp.protocol import ClientProtocol, Event

from ..support import EXAMPLES, CuttableProxy, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def spawn_presence_holder(url: str, python: str = sys.executable) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [python, str(EXAMPLES / "presence_holder.py"), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "bound":
        proc.kill()
        raise AssertionError(f"presence holder failed: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc


async def test_presence_removed_when_client_process_is_killed(sodp_server: ServerProcess) -> None:
    seen: list[tuple[Any, WatchMeta]] = []
    async with SodpClient(sodp_server.url) as watcher:
        watcher.watch("collab.cursors", lambda v, m: seen.append((v, m)))
        proc = await asyncio.to_thread(spawn_presence_holder, sodp_server.url)
        try:
            await wait_for(
                lambda: watcher.get("collab.cursors") == {"alice": {"name": "Alice", "line": 1}}
            )
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)  # no close frame, no cleanup in the client
            await asyncio.to_thread(proc.wait, 10)
            await wait_for(lambda: watcher.get("collab.cursors") == {})
            assert time.monotonic() - killed_at < 5
        finally:
            proc.kill()
            await asyncio.to_thread(proc.communicate)
        last_value, last_meta = seen[-1]
        assert last_value == {} and last_meta.source == "delta"


async def test_server_restart_reconnects_and_resubscribes(
    sodp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the server, start a new one on the same port.

    The in-memory server loses every value; its versions start above the old
    server's (they are based on the start time), so what is expected is:
    a write in flight when the server dies waits and is resent on the new
    server (it advertises ``idempotency``; the write died with the old
    server's memory, so the new one applies it); the client reconnects
    by itself (on_connect again); the key with a known version is RESUMEd
    from that version; the new server cannot replay (it has no such history)
    and answers with STATE_INIT alone — the key's fresh baseline (None,
    version 0, source "init"); then new writes arrive as "delta".
    """
    resumes: list[tuple[str, int]] = []
    original = ClientProtocol._send_resume

    def spy(self: ClientProtocol, entry: Any) -> None:
        resumes.append((entry.key, entry.version))
        original(self, entry)

    monkeypatch.setattr(ClientProtocol, "_send_resume", spy)

    events: list[tuple[Any, int, str]] = []
    connects: list[float] = []
    client = SodpClient(
        sodp_server.url,
        reconnect_delay=0.1,
        max_reconnect_delay=0.5,
        on_connect=lambda: connects.append(time.monotonic()),
    )
    client.watch("game.score", lambda v, m: events.append((v, m.version, m.source)))
    await client.ready
    await wait_for(lambda: len(events) == 1)  # subscribed before the first write
    writer = SodpClient(sodp_server.url, reconnect_delay=0.1, max_reconnect_delay=0.5)
    await writer.ready
    versions = [(await writer.set("game.score", {"value": i}))["version"] for i in range(3)]
    await wait_for(lambda: len(events) == 4)
    assert events == [
        (None, 0, "init"),
        ({"value": 0}, versions[0], "delta"),
        ({"value": 1}, versions[1], "delta"),
        ({"value": 2}, versions[2], "delta"),
    ]

    # a write made as the server dies waits for the new one
    sodp_server.kill()
    other = asyncio.create_task(client.set("game.other", 1))
    await asyncio.to_thread(sodp_server.start)

    await wait_for(lambda: len(connects) == 2)
    assert (await asyncio.wait_for(other, 10))["version"] > versions[2]
    await writer.ready
    assert resumes == [("game.score", versions[2])]
    await wait_for(lambda: len(events) == 5)
    assert events[4] == (None, 0, "init")  # the new server's baseline for the key

    v10 = (await writer.set("game.score", {"value": 10}))["version"]
    v11 = (await writer.patch("game.score", {"extra": True}))["version"]
    assert v11 > v10 > versions[2], "versions keep increasing across the restart"
    await wait_for(lambda: len(events) == 7)
    assert events[5:] == [
        ({"value": 10}, v10, "delta"),
        ({"value": 10, "extra": True}, v11, "delta"),
    ]
    assert client.get("game.score") == {"value": 10, "extra": True}
    await client.aclose()
    await writer.aclose()


async def test_resume_replays_missed_deltas_after_a_cut(sodp_server: ServerProcess) -> None:
    """The server keeps running; only the client's connection is cut. On
    reconnect the client RESUMEs and sees every missed change as a "delta"
    (routed by the `state` field before the STATE_INIT marker), then "init"."""
    proxy = CuttableProxy(sodp_server.port)
    await proxy.start()
    events: list[tuple[Any, int, str]] = []
    lost: list[int] = []
    client = SodpClient(
        proxy.url,
        reconnect_delay=0.3,
        max_reconnect_delay=0.5,
        on_disconnect=lambda: lost.append(1),
    )
    client.watch("doc.counter", lambda v, m: events.append((v, m.version, m.source)))
    async with SodpClient(sodp_server.url) as writer:
        await client.ready
        await wait_for(lambda: len(events) == 1)  # subscribed before the first write
        await writer.set("doc.counter", {"n": 0})
        await wait_for(lambda: len(events) == 2)
        proxy.refusing = True
        proxy.cut()
        await wait_for(lambda: lost == [1])
        versions = [(await writer.patch("doc.counter", {"n": i}))["version"] for i in (1, 2, 3)]
        proxy.refusing = False
        await wait_for(lambda: len(events) == 6)
    assert events[:2] == [(None, 0, "init"), ({"n": 0}, versions[0] - 1, "delta")]
    assert events[2:] == [
        ({"n": 1}, versions[0], "delta"),
        ({"n": 2}, versions[1], "delta"),
        ({"n": 3}, versions[2], "delta"),
        ({"n": 3}, versions[2], "init"),  # the live marker
    ]
    await client.aclose()
    await proxy.close()


async def test_calls_before_first_connect_wait_for_the_server(
    sodp_server_bin: Path,
) -> None:
    server = ServerProcess(sodp_server_bin)
    server.start()  # only to learn a port of our own ...
    server.stop()  # ... where nothing listens now
    attempts: list[float] = []
    client = SodpClient(
        server.url,
        reconnect_delay=0.05,
        max_reconnect_delay=0.1,
        on_connect=lambda: attempts.append(time.monotonic()),
    )
    call = asyncio.create_task(client.set("early.key", "hello"))
    # several refused connection attempts, and the call still waits
    await wait_for(lambda: client._backoff.attempts >= 3)
    assert not call.done() and attempts == []
    await asyncio.to_thread(server.start)  # the same port again
    try:
        result = await asyncio.wait_for(call, 10)
        assert result["version"] > 0
    finally:
        await client.aclose()
        server.stop()


async def test_close_fails_pending_and_later_calls(sodp_server: ServerProcess) -> None:
    client = SodpClient(sodp_server.url)
    await client.ready
    client.close()
    with pytest.raises(ConnectionLost):
        await client.set("x.y", 1)


async def test_idle_client_survives_heartbeats_and_pings(
    sodp_server_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server HEARTBEAT every second (closing after two silent intervals) and a
    WebSocket ping from the client every 0.5 s: an idle client stays connected."""
    server = ServerProcess(sodp_server_bin, args=["--heartbeat-secs", "1"])
    server.start()
    connects: list[int] = []
    disconnects: list[int] = []
    heartbeats: list[float] = []
    original = ClientProtocol.receive_frame

    def spy(self: ClientProtocol, frame: Frame) -> list[Event]:
        if frame.type == FrameType.HEARTBEAT:
            heartbeats.append(time.monotonic())
        return original(self, frame)

    monkeypatch.setattr(ClientProtocol, "receive_frame", spy)
    try:
        client = SodpClient(
            server.url,
            ping_interval=0.5,
            on_connect=lambda: connects.append(1),
            on_disconnect=lambda: disconnects.append(1),
        )
        await client.ready
        # three server heartbeats: more than the two silent intervals after
        # which the server would have closed an unresponsive connection
        await wait_for(lambda: len(heartbeats) >= 3)
        assert client.connected and connects == [1] and disconnects == []
        assert (await client.set("hb.k", 1))["version"] > 0
        await client.aclose()
    finally:
        server.stop()
