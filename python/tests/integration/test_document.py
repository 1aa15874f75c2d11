"""Every example of the user's document, run against the real server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from sodp import CallError, SodpClient, StateRef, WatchMeta

from ..support import ServerProcess, assert_quick_start_output, run_example, wait_for

pytestmark = pytest.mark.integration


def test_quick_start_as_written(sodp_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("quick_start.py", sodp_server.port, tmp_path)
    assert_quick_start_output(out)


def test_state_ref_flow(sodp_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("state_ref.py", sodp_server.port, tmp_path)
    assert out.splitlines() == [
        "None",
        "{'name': 'Alice', 'health': 100, 'position': {'x': 0, 'y': 0}}",
        "{'name': 'Alice', 'health': 80, 'position': {'x': 0, 'y': 0}}",
        "{'name': 'Alice', 'health': 80, 'position': {'x': 5, 'y': 0}}",
        "None",
        "{'alice': {'line': 1}}",
        "current: {'alice': {'line': 1}} True",
        "after unwatch: None False",
    ]


async def test_ready_both_ways_and_async_with(sodp_server: ServerProcess) -> None:
    client = SodpClient(sodp_server.url)
    await client.ready  # explicit
    await client  # same thing
    assert client.capabilities.get("resume") is True
    client.close()
    async with SodpClient(sodp_server.url) as c2:
        assert (await c2.set("a.b", 1))["version"] >= 1


async def test_watch_entry(sodp_server: ServerProcess) -> None:
    client = SodpClient(sodp_server.url)
    await client.ready
    printed: list[tuple[str, int]] = []
    scores: list[Any] = []

    class Db:
        async def update_score(self, value: Any) -> None:
            await asyncio.sleep(0)
            scores.append(value)

    db = Db()

    # -- as in the document --
    def on_player(value, meta):  # type: ignore[no-untyped-def]
        if not meta.initialized:
            return
        printed.append((value["name"], value["health"]))

    unsub = client.watch("game.player", on_player)

    # Async callback also works:
    async def on_score(value, meta):  # type: ignore[no-untyped-def]
        await db.update_score(value)

    unsub2 = client.watch("game.score", on_score)
    # --
    await client.set("game.player", {"name": "Alice", "health": 100})
    await client.call("state.set", {"state": "game.score", "value": {"value": 0}})
    await client.set("game.score", {"value": 42})
    await wait_for(lambda: len(printed) == 1 and len(scores) == 3)
    assert printed == [("Alice", 100)]
    assert scores == [None, {"value": 0}, {"value": 42}]

    # a second watch on a known key fires at once from the cache
    metas: list[WatchMeta] = []
    unsub3 = client.watch("game.player", lambda v, m: metas.append(m))
    assert [m.source for m in metas] == ["cache"] and metas[0].initialized
    unsub()
    await client.patch("game.player", {"health": 80})
    await wait_for(lambda: len(metas) == 2)
    assert printed == [("Alice", 100)]  # unsub removed only that callback
    assert metas[1].source == "delta" and metas[1].version > metas[0].version
    unsub2()
    unsub3()
    client.close()


async def test_state_ref_api_summary(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        ref = client.state("my.key")
        assert isinstance(ref, StateRef)
        seen: list[Any] = []
        unsub = ref.watch(lambda v, m: seen.append(v))
        assert ref.is_watching()
        await ref.set({"a": 1, "l": [1]})
        await ref.patch({"b": {"c": 2}})
        await ref.set_in("/l/-", 2)
        await ref.set_in("/a~1b", 3)
        await wait_for(lambda: ref.get() == {"a": 1, "l": [1, 2], "b": {"c": 2}, "a/b": 3})
        await ref.presence("/who", "me")
        await ref.delete()
        await wait_for(lambda: ref.get() is None and len(seen) == 7)
        unsub()
        ref.unwatch()
        assert not ref.is_watching() and ref.get() is None


async def test_call_and_convenience_methods(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        r = await client.call("state.set", {"state": "game.score", "value": {"value": 0}})
        assert isinstance(r["version"], int)
        await client.set("game.score", {"value": 42})
        await client.patch("game.player", {"health": 80})
        await client.presence("collab.cursors", "/alice", {"name": "Alice", "line": 3})
        await client.call("state.set_in", {"state": "game.player", "path": "/a/b", "value": 1})
        await client.call("state.presence", {"state": "k.p", "path": "/p", "value": 1})
        await client.call("state.delete", {"state": "game.score"})
        client.watch("game.player", lambda v, m: None)
        client.watch("collab.cursors", lambda v, m: None)
        await wait_for(lambda: client.get("collab.cursors") is not None)
        assert client.get("game.player") == {"health": 80, "a": {"b": 1}}
        assert client.get("collab.cursors") == {"alice": {"name": "Alice", "line": 3}}
        # unchanged write: succeeds with the current version
        v1 = (await client.patch("game.player", {"health": 80}))["version"]
        assert isinstance(v1, int)
        # failures carry the server's code
        with pytest.raises(CallError) as info:
            await client.call("state.nope", {"state": "x"})
        assert info.value.code == 404
        with pytest.raises(CallError) as info:
            await client.set("bad key!", 1)
        assert info.value.code == 400


async def test_unwatch_get_is_watching(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        assert client.get("nope") is None and not client.is_watching("nope")
        seen: list[Any] = []
        client.watch("k.u", lambda v, m: seen.append(v))
        assert client.is_watching("k.u")
        await client.set("k.u", 1)
        await wait_for(lambda: client.get("k.u") == 1)
        client.unwatch("k.u")
        assert not client.is_watching("k.u") and client.get("k.u") is None
        n = len(seen)
        await client.set("k.u", 2)
        # a later write to a key still watched: it arrives after anything
        # the server would still have sent for k.u
        client.watch("k.sentinel", lambda v, m: None)
        await wait_for(lambda: client.is_watching("k.sentinel"))
        await client.set("k.sentinel", 1)
        await wait_for(lambda: client.get("k.sentinel") == 1)
        assert len(seen) == n  # no more callbacks after unwatch


async def test_watch_many_and_params(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        seen: dict[str, list[Any]] = {}

        def cb(value: Any, meta: WatchMeta) -> None:
            seen.setdefault(meta.key, []).append(value)

        unsub = client.watch_many(["m.a", "m.b"], cb, params={"view": "full"})
        await client.set("m.a", 1)
        await client.set("m.b", 2)
        await wait_for(lambda: seen.get("m.a") == [None, 1] and seen.get("m.b") == [None, 2])
        unsub()
        await client.set("m.a", 3)
        await wait_for(lambda: client.get("m.a") == 3)
        assert seen["m.a"] == [None, 1]


async def test_presence_section(sodp_server: ServerProcess) -> None:
    watcher = SodpClient(sodp_server.url)
    await watcher.ready
    seen: list[Any] = []
    watcher.watch("collab.cursors", lambda v, m: seen.append(v))

    client = SodpClient(sodp_server.url)
    await client.ready
    # -- as in the document --
    await client.presence("collab.cursors", "/alice", {"name": "Alice", "line": 1})
    # Or via StateRef:
    cursors = client.state("collab.cursors")
    await cursors.presence("/bob", {"name": "Bob", "line": 1})
    # --
    both = {"alice": {"name": "Alice", "line": 1}, "bob": {"name": "Bob", "line": 1}}
    await wait_for(lambda: watcher.get("collab.cursors") == both)
    await client.aclose()  # graceful close: both paths are removed
    await wait_for(lambda: watcher.get("collab.cursors") == {})
    await watcher.aclose()


async def test_fastapi_lifespan_example(
    sodp_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fastapi  # a test dependency: missing is a failure, not a skip

    monkeypatch.setenv("SODP_TOKEN", "unused-by-a-server-without-auth")
    # -- the document's example, with only the URL changed --
    from contextlib import asynccontextmanager

    client: SodpClient

    @asynccontextmanager
    async def lifespan(app: Any):  # type: ignore[no-untyped-def]
        nonlocal client
        client = SodpClient(sodp_server.url, token=os.environ["SODP_TOKEN"])
        await client.ready
        yield
        client.close()

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.post("/score/{value}")
    async def set_score(value: int):  # type: ignore[no-untyped-def]
        await client.set("game.score", {"value": value})
        return {"ok": True}

    # --
    async with app.router.lifespan_context(app):
        status, body = await asgi_post(app, "/score/7")
        assert (status, body) == (200, b'{"ok":true}')
        check = SodpClient(sodp_server.url)
        check.watch("game.score", lambda v, m: None)
        await wait_for(lambda: check.get("game.score") == {"value": 7})
        check.close()


async def asgi_post(app: Any, path: str) -> tuple[int, bytes]:
    """One HTTP request through the ASGI interface, no server or client needed."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body
