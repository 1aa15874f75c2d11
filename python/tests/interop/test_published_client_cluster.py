"""Interop in cluster mode: the published ``sodp-client`` 0.2.2 against a node
of a three-node cluster sharing a private ``redis-server``.

The tests are those of ``test_published_client``, collected again here with
``sodp_server`` overridden: every test gets a node whose two peers run beside
it, all with a cluster prefix of its own (so no test sees another's keys).
Left out: the server-restart test, whose expectation (a restarted in-memory
server starts empty, version 0) is exactly what cluster mode changes — a
restarted node finds the cluster's state in Redis.

``redis-server`` must be installed (``.ci/run`` installs it); without it the
tests fail, they are not skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support import ServerProcess
from .test_published_client import (
    test_legacy_pattern_watch_recovers_after_a_cut,
    test_legacy_resume_after_a_cut_ends_at_the_server_value,
    test_legacy_watches_a_pattern_as_a_map,
    test_presence_removed_when_legacy_process_is_killed,
    test_quick_start_verbatim,
    test_state_ref_flow,
)

__all__ = [
    "test_legacy_pattern_watch_recovers_after_a_cut",
    "test_legacy_resume_after_a_cut_ends_at_the_server_value",
    "test_legacy_watches_a_pattern_as_a_map",
    "test_presence_removed_when_legacy_process_is_killed",
    "test_quick_start_verbatim",
    "test_state_ref_flow",
]

pytestmark = pytest.mark.interop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server (own port and directory, appendfsync always)."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("the cluster interop tests need redis-server (.ci/run installs it)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="sodp-interop-redis-") as data:
        proc = subprocess.Popen(
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not _answers_ping(port):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not come up on port {port}")
                time.sleep(0.025)
            yield f"redis://127.0.0.1:{port}"
        finally:
            proc.kill()
            proc.wait()


@pytest.fixture
def sodp_server(sodp_server_bin: Path, redis_url: str) -> Iterator[ServerProcess]:
    """The node under test, with two more nodes of its cluster running."""
    args = ["--redis-url", redis_url, "--cluster-prefix", f"interop-{uuid.uuid4().hex[:12]}:"]
    peers = [ServerProcess(sodp_server_bin, args=args) for _ in range(2)]
    node = ServerProcess(sodp_server_bin, args=args)
    started: list[ServerProcess] = []
    try:
        for server in [*peers, node]:
            server.start()
            started.append(server)
        yield node
    finally:
        for server in reversed(started):
            server.stop()
