"""The distribution's nginx and Caddy in front of sodp-server, each with the
repository's own configuration (``deploy/nginx.conf``: ws:// and wss://;
``deploy/Caddyfile``: wss://, TLS ended by the proxy), used end to end by the
published ``sodp-client`` 0.2.2, by this Python client and by the Rust one
(through the ``sodp`` CLI); and the server, trusting the proxy, counts the
address the proxy forwards in ``X-Forwarded-For`` (per-IP cap, logs)
instead of the proxy's own."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sodp import SodpClient
from sodp.frames import FrameType, decode_frame

from ..proxies import Caddy, Nginx, Proxy
from ..support import (
    ServerProcess,
    assert_quick_start_output,
    cli_binary,
    run_example,
    wait_for,
)
from ..test_ca import TestCa

pytestmark = pytest.mark.interop

PROXIES: dict[str, type[Proxy]] = {"nginx": Nginx, "caddy": Caddy}


class Proxied:
    """A sodp-server behind a proxy, with the CA that issued the proxy's certificate."""

    def __init__(self, server: ServerProcess, proxy: Proxy, ca: TestCa) -> None:
        self.server, self.proxy, self.ca = server, proxy, ca

    def url(self, scheme: str) -> str:
        port = self.proxy.tls_port if scheme == "wss" else self.proxy.plain_port
        return f"{scheme}://localhost:{port}"


def _proxied(
    kind: str, binary: Path, args: list[str], env: dict[str, str] | None = None
) -> Iterator[Proxied]:
    ca = TestCa(kind)
    server = ServerProcess(binary, args=["--trusted-proxies", "127.0.0.1", *args], env=env)
    server.start()
    cert, key = ca.issue_server()
    proxy = PROXIES[kind](server.port, cert, key)
    try:
        proxy.start()
        yield Proxied(server, proxy, ca)
    finally:
        proxy.stop()
        server.stop()
        ca.cleanup()


# (proxy, scheme) pairs each proxy's configuration serves.
ROUTES = [("nginx", "ws"), ("nginx", "wss"), ("caddy", "wss")]


@pytest.fixture(params=ROUTES, ids=[f"{p}-{s}" for p, s in ROUTES])
def route(request: pytest.FixtureRequest, sodp_server_bin: Path) -> Iterator[tuple[Proxied, str]]:
    kind, scheme = request.param
    for proxied in _proxied(kind, sodp_server_bin, []):
        yield proxied, scheme


@pytest.fixture(params=list(PROXIES))
def capped(request: pytest.FixtureRequest, sodp_server_bin: Path) -> Iterator[Proxied]:
    """One connection per client address; JSON debug logs (they name the client)."""
    args = ["--max-connections-per-ip", "1", "--log-format", "json"]
    yield from _proxied(request.param, sodp_server_bin, args, {"RUST_LOG": "sodp_server=debug"})


def test_published_client_through_the_proxy(
    legacy_python: str, route: tuple[Proxied, str], tmp_path: Path
) -> None:
    proxied, scheme = route
    # The published client has no TLS options: it trusts the CA through
    # Python's default context, which reads SSL_CERT_FILE.
    env = {"SSL_CERT_FILE": str(proxied.ca.ca_file)}
    out = run_example(
        "quick_start.py", 0, tmp_path, python=legacy_python, url=proxied.url(scheme), env=env
    )
    assert_quick_start_output(out)


async def test_this_client_through_the_proxy(route: tuple[Proxied, str]) -> None:
    proxied, scheme = route
    tls = {"ssl": proxied.ca.context()} if scheme == "wss" else {}
    async with (
        SodpClient(proxied.url(scheme), **tls) as writer,
        SodpClient(proxied.url(scheme), **tls) as watcher,
    ):
        seen: list[object] = []
        watcher.watch("proxy.k", lambda value, meta: seen.append(value))
        await writer.set("proxy.k", {"via": "proxy"})
        await wait_for(lambda: {"via": "proxy"} in seen, timeout=5)
        writer.watch("proxy.k", lambda value, meta: None)
        await watcher.patch("proxy.k", {"back": True})
        await wait_for(lambda: writer.get("proxy.k") == {"via": "proxy", "back": True}, timeout=5)


def test_the_rust_client_through_the_proxy(route: tuple[Proxied, str]) -> None:
    """``sodp`` (the CLI over the Rust client), trusting the CA with --ca-file."""
    proxied, scheme = route

    def sodp(*args: str) -> subprocess.CompletedProcess[str]:
        ca = ["--ca-file", str(proxied.ca.ca_file)]
        return subprocess.run(
            [str(cli_binary()), *args, *ca], capture_output=True, text=True, timeout=30,
            env={**os.environ, "SODP_URL": proxied.url(scheme)},
        )  # fmt: skip

    done = sodp("set", "proxy.rust", '{"from": "rust"}')
    assert done.returncode == 0, done.stderr
    got = sodp("get", "proxy.rust")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"from": "rust"}


async def _hello_from(
    proxied: Proxied, source: str, headers: dict[str, str] | None = None
) -> object:
    """Connects through the proxy from the loopback address *source*;
    returns the open connection after its HELLO, or the HTTP status it was
    refused with."""
    scheme = "ws" if proxied.proxy.serves_plain else "wss"
    tls: dict[str, ssl.SSLContext] = {"ssl": proxied.ca.context()} if scheme == "wss" else {}
    try:
        ws = await connect(
            proxied.url(scheme),
            compression=None,
            local_addr=(source, 0),
            additional_headers=headers,
            **tls,
        )
    except InvalidStatus as exc:
        return exc.response.status_code
    frame = decode_frame(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[arg-type]
    assert frame.type == FrameType.HELLO
    return ws


async def test_the_server_counts_the_address_the_proxy_forwards(capped: Proxied) -> None:
    # Both arrive from the proxy (127.0.0.1); only X-Forwarded-For tells them apart.
    first = await _hello_from(capped, "127.0.0.2")
    second = await _hello_from(capped, "127.0.0.3")
    assert not isinstance(first, int) and not isinstance(second, int), (first, second)
    assert await _hello_from(capped, "127.0.0.2") == 503
    # A forged header does not buy a slot: the proxy appends (nginx) or
    # replaces it with (Caddy) the real address, and the server takes the
    # rightmost one that is not a trusted proxy.
    assert await _hello_from(capped, "127.0.0.2", {"X-Forwarded-For": "127.0.0.9"}) == 503
    lines = capped.server.log_tail(100_000).splitlines()
    started = [json.loads(line) for line in lines if '"session started"' in line]
    assert [(e["remote"], e["peer"].split(":")[0]) for e in started] == [
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.3", "127.0.0.1"),
    ], lines
    for ws in (first, second):
        await ws.close()  # type: ignore[union-attr]
