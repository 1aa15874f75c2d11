"""The extensions (issue 11) against the real server: conditional writes,
one-shot reads, transact / transactions, TTL and pattern watches."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from sodp import (
    CallError,
    ConflictError,
    JsonValue,
    SodpClient,
    WatchMeta,
    apply_ops,
)

from ..support import PYTHON_DIR, CuttableProxy, ServerProcess, wait_for

pytestmark = pytest.mark.integration


async def test_server_advertises_the_extensions(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        for cap in ("conditional", "read", "transaction", "prefix_watch", "ttl"):
            assert client.capabilities.get(cap) is True, cap


# ── 1. conditional writes ─────────────────────────────────────────────────────


async def test_if_version_success_and_conflict(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        v1 = (await client.set("counter", 1, if_version=0))["version"]
        # if_version=0 on a key that holds a value: conflict, nothing changes
        with pytest.raises(ConflictError) as info:
            await client.set("counter", 99, if_version=0)
        assert info.value.version == v1
        assert info.value.code == 409
        assert isinstance(info.value, CallError)
        assert info.value.op is None
        v2 = (await client.set("counter", 2, if_version=v1))["version"]
        assert v2 > v1
        # each method with a stale version
        with pytest.raises(ConflictError) as info:
            await client.patch("counter", {"a": 1}, if_version=v1)
        assert info.value.version == v2
        with pytest.raises(ConflictError) as info:
            await client.set_in("counter", "/a", 1, if_version=v1)
        assert info.value.version == v2
        with pytest.raises(ConflictError) as info:
            await client.delete("counter", if_version=v1)
        assert info.value.version == v2
        got = await client.fetch("counter")
        assert got == {"version": v2, "value": 2, "initialized": True}
        v3 = (await client.delete("counter", if_version=v2))["version"]
        # a deleted key's version is its delete's; if_version=0 works too
        assert (await client.set("counter", 5, if_version=0))["version"] > v3
        # StateRef passes it through
        ref = client.state("counter")
        with pytest.raises(ConflictError):
            await ref.set(6, if_version=1)


async def test_if_version_bad_value_is_refused_locally(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        with pytest.raises(ValueError, match="if_version"):
            await client.set("k", 1, if_version=-1)


# ── 2. one-shot reads ─────────────────────────────────────────────────────────


async def test_fetch_does_not_subscribe_and_get_stays_the_cache(
    sodp_server: ServerProcess,
) -> None:
    async with SodpClient(sodp_server.url) as client:
        assert await client.fetch("nope") == {"version": 0, "value": None, "initialized": False}
        v = (await client.set("doc", {"a": 1}))["version"]
        assert await client.fetch("doc") == {"version": v, "value": {"a": 1}, "initialized": True}
        assert client.get("doc") is None  # the cache: not watched
        assert not client.is_watching("doc")
        assert (await client.state("doc").fetch())["value"] == {"a": 1}


async def test_keys_pages_by_prefix(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        for key in ("a.b", "a.b.c", "a.b.a", "a.bc", "z"):
            await client.set(key, 1)
        page = await client.keys("a.b")
        assert page == {"keys": ["a.b", "a.b.a", "a.b.c"]}
        first = await client.keys("a.b", limit=2)
        assert first["keys"] == ["a.b", "a.b.a"]
        assert first.get("next") == "a.b.a"
        second = await client.keys("a.b", limit=2, after=first["next"])
        assert second == {"keys": ["a.b.c"]}
        every = await client.keys()
        assert every["keys"] == ["a.b", "a.b.a", "a.b.c", "a.bc", "z"]
        assert [k async for k in client.iter_keys("a", page_size=1)] == [
            "a.b",
            "a.b.a",
            "a.b.c",
            "a.bc",
        ]
        with pytest.raises(CallError) as info:
            await client.keys(limit=0)
        assert info.value.code == 400


async def test_history(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        assert await client.history("h") == {"entries": [], "complete": True}
        v1 = (await client.set("h", {"turn": "ann"}))["version"]
        v2 = (await client.patch("h", {"turn": "bob"}))["version"]
        page = await client.history("h")
        assert page["complete"] is True
        assert [e["version"] for e in page["entries"]] == [v1, v2]
        value: JsonValue = None
        for entry in page["entries"]:
            value = apply_ops(value, entry["ops"])
        assert value == {"turn": "bob"}
        later = await client.history("h", since_version=v1)
        assert [e["version"] for e in later["entries"]] == [v2]
        one = await client.history("h", limit=1)
        assert [e["version"] for e in one["entries"]] == [v1]


# ── 3. transact and transactions ──────────────────────────────────────────────


async def test_transact_increments_and_reports(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        res = await client.transact("ctr", lambda v: (v if isinstance(v, int) else 0) + 1)
        assert res.value == 1 and res.attempts == 1
        assert (await client.fetch("ctr"))["version"] == res.version

        async def double(v: JsonValue) -> int:
            assert isinstance(v, int)
            return v * 2

        res2 = await client.state("ctr").transact(double)
        assert res2.value == 2


async def test_transact_fn_raising_writes_nothing(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        await client.set("k", 1)
        before = await client.fetch("k")

        def refuse(v: JsonValue) -> int:
            raise LookupError("no")

        with pytest.raises(LookupError):
            await client.transact("k", refuse)
        assert await client.fetch("k") == before


async def test_concurrent_transact_loops_end_with_the_exact_sum(
    sodp_server: ServerProcess,
) -> None:
    writers, each = 6, 15
    clients = [SodpClient(sodp_server.url) for _ in range(writers)]
    try:
        await asyncio.gather(*(c.ready for c in clients))
        attempts: list[int] = []

        async def loop(client: SodpClient) -> None:
            for _ in range(each):
                res = await client.transact(
                    "race.counter",
                    lambda v: (v if isinstance(v, int) else 0) + 1,
                    max_attempts=1000,
                )
                attempts.append(res.attempts)

        await asyncio.gather(*(loop(c) for c in clients))
        got = await clients[0].fetch("race.counter")
        assert got["value"] == writers * each
        assert len(attempts) == writers * each
        assert max(attempts) > 1  # there were conflicts, and they were retried
    finally:
        for c in clients:
            await c.aclose()


_TRANSACT_LOOP = """
import asyncio, sys
from sodp import SodpClient

async def main(url, n):
    async with SodpClient(url) as client:
        for _ in range(n):
            await client.transact(
                "proc.counter", lambda v: (v if isinstance(v, int) else 0) + 1, max_attempts=1000
            )

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_transact_loops_in_several_processes_end_with_the_exact_sum(
    sodp_server: ServerProcess,
) -> None:
    procs, each = 4, 25
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR / "src")}
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _TRANSACT_LOOP,
            sodp_server.url,
            str(each),
            env=env,
            stderr=subprocess.PIPE,
        )
        for _ in range(procs)
    ]
    for child in children:
        _, err = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == 0, err.decode()
    async with SodpClient(sodp_server.url) as client:
        assert (await client.fetch("proc.counter"))["value"] == procs * each


async def test_transact_gives_up_after_max_attempts(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client, SodpClient(sodp_server.url) as other:
        await client.set("busy", 0)

        calls = 0

        async def interfere(v: JsonValue) -> int:
            nonlocal calls
            calls += 1
            await other.set("busy", -calls)  # changes the key after every read
            return 1000

        with pytest.raises(ConflictError):
            await client.transact("busy", interfere, max_attempts=3)
        assert calls == 3
        assert (await client.fetch("busy"))["value"] == -3


async def test_transaction_builder_all_or_nothing(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        a = (await client.set("bank.alice", {"balance": 100}))["version"]
        b = (await client.set("bank.bob", {"balance": 100}))["version"]
        seen: list[tuple[str, Any]] = []
        client.watch_many(
            ["bank.alice", "bank.bob"],
            lambda v, m: seen.append((m.key, v)),
        )
        await wait_for(lambda: len(seen) == 2)
        res = await (
            client.transaction()
            .patch("bank.alice", {"balance": 90}, if_version=a)
            .patch("bank.bob", {"balance": 110}, if_version=b)
            .commit()
        )
        await wait_for(lambda: len(seen) == 4)
        assert (await client.fetch("bank.alice"))["version"] == res["version"]
        assert (await client.fetch("bank.bob")) == {
            "version": res["version"],
            "value": {"balance": 110},
            "initialized": True,
        }
        # stale condition on op 1: nothing applied, ConflictError names the op
        with pytest.raises(ConflictError) as info:
            await (
                client.transaction()
                .set("bank.alice", {"balance": 0}, if_version=res["version"])
                .delete("bank.bob", if_version=b)
                .set_in("bank.carol", "/balance", 5)
                .commit()
            )
        assert info.value.op == 1
        assert info.value.version == res["version"]
        assert (await client.fetch("bank.alice"))["value"] == {"balance": 90}
        assert (await client.fetch("bank.carol"))["initialized"] is False
        await asyncio.sleep(0.1)
        assert len(seen) == 4  # no DELTA for the failed one


async def test_transaction_builder_misuse(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        with pytest.raises(ValueError, match="at least one op"):
            await client.transaction().commit()
        tx = client.transaction().set("t.a", 1)
        await tx.commit()
        with pytest.raises(RuntimeError, match="already committed"):
            await tx.commit()


# ── 4. TTL ────────────────────────────────────────────────────────────────────


async def test_ttl_expires_and_watchers_see_it(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        values: list[Any] = []
        client.watch("rooms.lobby.typing", lambda v, m: values.append(v))
        await wait_for(lambda: len(values) == 1)
        await client.set("rooms.lobby.typing", ["ann"], ttl=300)
        await wait_for(lambda: values[-1] == ["ann"])
        assert (await client.fetch("rooms.lobby.typing"))["initialized"] is True
        await wait_for(lambda: values[-1] is None, timeout=5)
        assert (await client.fetch("rooms.lobby.typing"))["initialized"] is False
        # ttl on patch and in a transaction op, then ttl=0 removes the deadline
        await client.patch("p", {"a": 1}, ttl=200)
        await client.set_in("p", "/b", 2, ttl=0)
        await client.transaction().set("q", 1, ttl=200).commit()
        await asyncio.sleep(0.6)
        assert (await client.fetch("p"))["value"] == {"a": 1, "b": 2}
        assert (await client.fetch("q"))["initialized"] is False


async def test_ttl_deadline_in_meta(sodp_server: ServerProcess) -> None:
    """``meta.expires_at``: from the write's DELTA and from a later watcher's
    STATE_INIT; kept by a write without ttl; gone with ttl=0 and on expiry."""
    async with SodpClient(sodp_server.url) as client, SodpClient(sodp_server.url) as late:
        metas: list[WatchMeta] = []
        client.watch("t.k", lambda v, m: metas.append(m))
        await wait_for(lambda: len(metas) == 1)
        assert metas[0].expires_at is None
        before = time.time() * 1000
        await client.set("t.k", 1, ttl=60_000)
        await wait_for(lambda: len(metas) == 2)
        at = metas[1].expires_at
        assert at is not None and before + 60_000 - 100 <= at <= time.time() * 1000 + 60_100
        seen: list[WatchMeta] = []
        late.watch("t.k", lambda v, m: seen.append(m))
        await wait_for(lambda: len(seen) == 1)
        assert seen[0].source == "init" and seen[0].expires_at == at
        await client.set("t.k", 2)
        await wait_for(lambda: len(metas) == 3)
        assert metas[2].expires_at == at, "a write without ttl keeps the deadline"
        await client.set("t.k", 3, ttl=0)
        await wait_for(lambda: len(metas) == 4)
        assert metas[3].expires_at is None
        await client.set("t.k", 4, ttl=150)
        await wait_for(lambda: len(metas) == 5)
        assert metas[4].expires_at is not None
        await wait_for(lambda: len(metas) == 6, timeout=5)  # the expiry
        assert not metas[5].initialized and metas[5].expires_at is None
        assert metas[5].version > metas[4].version


# ── 5. pattern watch ──────────────────────────────────────────────────────────


async def test_pattern_watch_delivers_the_map(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        await client.set("game.players.alice", {"hp": 10})
        await client.set("game.board", "x")
        maps: list[Any] = []
        metas: list[WatchMeta] = []

        def cb(value: Any, meta: WatchMeta) -> None:
            maps.append(value)
            metas.append(meta)

        client.watch("game.players.*", cb)
        await wait_for(lambda: len(maps) == 1)
        assert maps[0] == {"game.players.alice": {"hp": 10}}
        await client.set("game.players.bob", {"hp": 7})
        await wait_for(lambda: len(maps) == 2)
        await client.patch("game.players.alice", {"hp": 9})
        await wait_for(lambda: len(maps) == 3)
        await client.delete("game.players.bob")
        await wait_for(lambda: len(maps) == 4)
        assert maps[1] == {"game.players.alice": {"hp": 10}, "game.players.bob": {"hp": 7}}
        assert maps[2] == {"game.players.alice": {"hp": 9}, "game.players.bob": {"hp": 7}}
        assert maps[3] == {"game.players.alice": {"hp": 9}}
        assert client.get("game.players.*") == {"game.players.alice": {"hp": 9}}
        assert metas[-1].version > metas[0].version
        client.unwatch("game.players.*")
        assert not client.is_watching("game.players.*")


async def test_pattern_watch_sees_every_key_of_a_transaction(sodp_server: ServerProcess) -> None:
    """A transaction sends a pattern one DELTA per touched key, all with the
    transaction's one version: each is applied, none taken for a duplicate."""
    async with SodpClient(sodp_server.url) as client:
        maps: list[tuple[Any, int]] = []
        client.watch("bank.*", lambda v, m: maps.append((v, m.version)))
        await wait_for(lambda: len(maps) == 1)
        done = await (
            client.transaction()
            .set("bank.alice", {"balance": 90})
            .set("bank.bob", {"balance": 110})
            .set_in("bank.carol", "/balance", 0)
            .commit()
        )
        final = {
            "bank.alice": {"balance": 90},
            "bank.bob": {"balance": 110},
            "bank.carol": {"balance": 0},
        }
        await wait_for(lambda: client.get("bank.*") == final)
        assert [v for _, v in maps[1:]] == [done["version"]] * 3
        # and a later watcher's snapshot agrees
        async with SodpClient(sodp_server.url) as other:
            other.watch("bank.*", lambda v, m: None)
            await wait_for(lambda: other.get("bank.*") == final)


async def test_pattern_watch_resumes_after_a_cut(sodp_server: ServerProcess) -> None:
    """Changes to matching keys while the connection is down (a new key, a
    patch, a delete) are replayed on RESUME; the map ends equal to the
    server's."""
    proxy = CuttableProxy(sodp_server.port)
    await proxy.start()
    lost: list[int] = []
    client = SodpClient(
        proxy.url,
        reconnect_delay=0.3,
        max_reconnect_delay=0.5,
        on_disconnect=lambda: lost.append(1),
    )
    maps: list[Any] = []
    try:
        async with SodpClient(sodp_server.url) as writer:
            await client.ready
            await writer.set("r.a", 1)
            await writer.set("r.b", {"x": 1})
            client.watch("r.*", lambda v, m: maps.append(v))
            await wait_for(lambda: maps[-1:] == [{"r.a": 1, "r.b": {"x": 1}}])
            proxy.refusing = True
            proxy.cut()
            await wait_for(lambda: lost == [1])
            await writer.set("r.c", [1])
            await writer.patch("r.b", {"y": 2})
            await writer.delete("r.a")
            await writer.set("other", 1)  # does not match
            proxy.refusing = False
            expected = {"r.b": {"x": 1, "y": 2}, "r.c": [1]}
            await wait_for(lambda: client.connected and client.get("r.*") == expected)
            await writer.set("r.d", True)
            await wait_for(lambda: client.get("r.*") == {**expected, "r.d": True})
    finally:
        await client.aclose()
        await proxy.close()


async def test_pattern_in_watch_many_and_every_key(sodp_server: ServerProcess) -> None:
    async with SodpClient(sodp_server.url) as client:
        await client.set("m.a", 1)
        await client.set("solo", 2)
        seen: dict[str, Any] = {}
        handle = client.watch_many(["m.*", "solo"], lambda v, m: seen.__setitem__(m.key, v))
        await handle
        await wait_for(lambda: seen == {"m.*": {"m.a": 1}, "solo": 2})
        everything: list[Any] = []
        client.watch("*", lambda v, m: everything.append(v))
        await wait_for(lambda: everything[-1:] == [{"m.a": 1, "solo": 2}])
        await client.set("m.b", 3)
        await wait_for(lambda: seen["m.*"] == {"m.a": 1, "m.b": 3})
        await wait_for(lambda: everything[-1] == {"m.a": 1, "m.b": 3, "solo": 2})
