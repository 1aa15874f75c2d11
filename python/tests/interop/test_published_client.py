"""Interop: the published ``sodp-client`` 0.2.2, unchanged, against our server."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from sodp import SodpClient

from ..integration.test_resilience import spawn_presence_holder
from ..support import (
    EXAMPLES,
    CuttableProxy,
    ServerProcess,
    assert_quick_start_output,
    run_example,
    wait_for,
)
from .conftest import legacy_env

pytestmark = pytest.mark.interop


def test_quick_start_verbatim(
    legacy_python: str, sodp_server: ServerProcess, tmp_path: Path
) -> None:
    out = run_example("quick_start.py", sodp_server.port, tmp_path, python=legacy_python)
    assert_quick_start_output(out)


def test_state_ref_flow(legacy_python: str, sodp_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("state_ref.py", sodp_server.port, tmp_path, python=legacy_python)
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


async def test_presence_removed_when_legacy_process_is_killed(
    legacy_python: str, sodp_server: ServerProcess
) -> None:
    async with SodpClient(sodp_server.url) as watcher:
        watcher.watch("collab.cursors", lambda v, m: None)
        proc = await asyncio.to_thread(spawn_presence_holder, sodp_server.url, legacy_python)
        try:
            alice = {"alice": {"name": "Alice", "line": 1}}
            await wait_for(lambda: watcher.get("collab.cursors") == alice)
            proc.send_signal(signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
            await wait_for(lambda: watcher.get("collab.cursors") == {}, timeout=5)
        finally:
            proc.kill()
            await asyncio.to_thread(proc.communicate)


class LegacyWatcher:
    """``doc_examples/watcher.py`` under the legacy client: one JSON line per callback."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    @classmethod
    async def start(cls, python: str, url: str, key: str, stop: Any) -> LegacyWatcher:
        proc = await asyncio.create_subprocess_exec(
            python,
            str(EXAMPLES / "watcher.py"),
            url,
            key,
            json.dumps(stop),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=legacy_env(),
        )
        return cls(proc)

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            assert self.proc.stderr is not None
            err = await self.proc.stderr.read()
            raise AssertionError(f"watcher ended: {err.decode()}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def until(self, pred: Any, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.next(timeout)
                if pred(line):
                    return line

    async def finish(self) -> int:
        try:
            return await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()


async def test_legacy_reconnects_and_resumes_after_server_restart(
    legacy_python: str, sodp_server: ServerProcess
) -> None:
    """0.2.2 sees the server die, reconnects to the restarted one, RESUMEs
    (the fresh in-memory server has no history, so it answers STATE_INIT
    alone: value None, version 0) and then receives new writes."""
    w = await LegacyWatcher.start(legacy_python, sodp_server.url, "game.score", {"value": 2})
    assert await w.until(lambda ln: "source" in ln) == {
        "value": None,
        "version": 0,
        "source": "init",
    }
    async with SodpClient(sodp_server.url, reconnect_delay=0.1) as writer:
        first = (await writer.set("game.score", {"value": 1}))["version"]
        assert await w.next() == {"value": {"value": 1}, "version": first, "source": "delta"}
        sodp_server.kill()
        await asyncio.to_thread(sodp_server.start)
        assert await w.until(lambda ln: "source" in ln) == {
            "value": None,
            "version": 0,
            "source": "init",
        }
        second = (await writer.set("game.score", {"value": 2}))["version"]
        assert second > first, "versions keep increasing across a server restart"
        assert await w.next() == {"value": {"value": 2}, "version": second, "source": "delta"}
    assert await w.finish() == 0


async def test_legacy_resume_after_a_cut_ends_at_the_server_value(
    legacy_python: str, sodp_server: ServerProcess
) -> None:
    """Only the connection is cut; the server keeps its history and answers
    0.2.2's RESUME with the missed DELTAs then STATE_INIT. 0.2.2 maps streams
    only from STATE_INIT, so it drops the replayed DELTAs (a known fault of the
    published client, fixed in ours) — but the STATE_INIT marker still brings
    it to the server's current value, which is what interop requires."""
    proxy = CuttableProxy(sodp_server.port)
    await proxy.start()
    final = {"n": 3}
    w = await LegacyWatcher.start(legacy_python, proxy.url, "doc.counter", final)
    try:
        await w.until(lambda ln: ln.get("source") == "init")
        async with SodpClient(sodp_server.url) as writer:
            v0 = (await writer.set("doc.counter", {"n": 0}))["version"]
            assert await w.next() == {"value": {"n": 0}, "version": v0, "source": "delta"}
            proxy.refusing = True
            proxy.cut()
            for i in (1, 2, 3):
                await writer.patch("doc.counter", {"n": i})
            await asyncio.sleep(0.2)
            proxy.refusing = False
            last = await w.until(lambda ln: ln.get("value") == final)
        assert last == {"value": final, "version": v0 + 3, "source": last["source"]}
        assert last["source"] in ("init", "delta")
        assert await w.finish() == 0
    finally:
        await proxy.close()


async def test_legacy_watches_a_pattern_as_a_map(
    legacy_python: str, sodp_server: ServerProcess
) -> None:
    """0.2.2 knows nothing of patterns: to it ``game.*`` is a state name.
    The contract makes that enough — STATE_INIT carries the map of matching
    keys, each change of one arrives as a DELTA with the key's ops under
    ``/<key>`` — so its ordinary delta applier keeps the map exact: keys
    added, changed in depth, deleted; keys outside the pattern never show."""
    async with SodpClient(sodp_server.url) as writer:
        await writer.set("game.a", {"hp": 10, "bag": ["axe"]})
        await writer.set("game", "not below game")  # the prefix itself
        await writer.set("gameX.a", 1)  # a sibling with the same letters
        final = {"game.b": {"hp": 2}, "game.x.y": [1], "game.c": 3, "game.d": 4}
        w = await LegacyWatcher.start(legacy_python, sodp_server.url, "game.*", final)
        try:
            init = await w.until(lambda ln: "source" in ln)
            assert init["source"] == "init"
            assert init["value"] == {"game.a": {"hp": 10, "bag": ["axe"]}}

            async def step(version: int, value: dict[str, Any]) -> None:
                line = await w.until(lambda ln: "source" in ln)  # not its "ready" line
                assert line == {"value": value, "version": version, "source": "delta"}

            a = {"hp": 10, "bag": ["axe"]}
            v = (await writer.set("game.b", {"hp": 1}))["version"]  # ADD /game.b
            await step(v, {"game.a": a, "game.b": {"hp": 1}})
            v = (await writer.patch("game.b", {"hp": 2}))["version"]  # UPDATE /game.b/hp
            await step(v, {"game.a": a, "game.b": {"hp": 2}})
            a = {"hp": 10, "bag": ["axe", "rope"]}
            v = (await writer.set_in("game.a", "/bag/-", "rope"))["version"]
            await step(v, {"game.a": a, "game.b": {"hp": 2}})
            await writer.set("gameX.a", 2)  # outside the pattern: nothing arrives
            await writer.set("game", "still not")
            v = (await writer.set("game.x.y", [1]))["version"]  # two segments below
            await step(v, {"game.a": a, "game.b": {"hp": 2}, "game.x.y": [1]})
            v = (await writer.delete("game.a"))["version"]  # REMOVE /game.a
            await step(v, {"game.b": {"hp": 2}, "game.x.y": [1]})
            # a transaction: one version, one DELTA per touched key
            v = (await writer.transaction().set("game.c", 3).set("game.d", 4).commit())["version"]
            lines = [await w.until(lambda ln: "source" in ln) for _ in range(2)]
            assert [ln["version"] for ln in lines] == [v, v]
            assert lines[-1]["value"] == final
            assert await w.finish() == 0
        finally:
            if w.proc.returncode is None:
                w.proc.kill()
        # the map it ended with is the server's own view of the pattern
        async with SodpClient(sodp_server.url) as reader:
            keys = [k async for k in reader.iter_keys("game")]
            assert sorted(k for k in keys if k != "game") == sorted(final)
            for key, value in final.items():
                assert (await reader.fetch(key))["value"] == value


async def test_legacy_pattern_watch_recovers_after_a_cut(
    legacy_python: str, sodp_server: ServerProcess
) -> None:
    """After a cut 0.2.2 RESUMEs the pattern like any key; whatever it makes
    of the replay, the STATE_INIT brings it to the server's map."""
    proxy = CuttableProxy(sodp_server.port)
    await proxy.start()
    final = {"room.p.ann": {"x": 3}, "room.p.bob": 1}
    w = await LegacyWatcher.start(legacy_python, proxy.url, "room.p.*", final)
    try:
        await w.until(lambda ln: ln.get("source") == "init")
        async with SodpClient(sodp_server.url) as writer:
            await writer.set("room.p.ann", {"x": 0})
            await writer.set("room.p.gone", True)
            await w.until(lambda ln: "room.p.gone" in ln["value"])
            proxy.refusing = True
            proxy.cut()
            await writer.patch("room.p.ann", {"x": 3})
            await writer.delete("room.p.gone")
            last_version = (await writer.set("room.p.bob", 1))["version"]
            proxy.refusing = False
            last = await w.until(lambda ln: ln.get("value") == final)
        assert last["version"] == last_version
        assert await w.finish() == 0
    finally:
        if w.proc.returncode is None:
            w.proc.kill()
        await proxy.close()
