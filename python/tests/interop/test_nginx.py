"""nginx (the distribution's) in front of sodp-server with the repository's
``deploy/nginx.conf``: ws:// proxied and wss:// with TLS ended by nginx,
used end to end by the published ``sodp-client`` 0.2.2, by this Python
client and by the Rust one (through the ``sodp`` CLI);
and the server, trusting the proxy, counts the addresses nginx forwards in
``X-Forwarded-For`` (per-IP cap, logs) instead of nginx's own."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from sodp import SodpClient
from sodp.frames import FrameType, decode_frame

from ..nginx import Nginx
from ..support import (
    ServerProcess,
    assert_quick_start_output,
    cli_binary,
    run_example,
    wait_for,
)
from ..test_ca import TestCa

pytestmark = pytest.mark.interop


class Proxied:
    """A sodp-server behind nginx, with the CA that issued nginx's certificate."""

    def __init__(self, server: ServerProcess, nginx: Nginx, ca: TestCa) -> None:
        self.server, self.nginx, self.ca = server, nginx, ca

    @property
    def ws_url(self) -> str:
        return f"ws://localhost:{self.nginx.plain_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://localhost:{self.nginx.tls_port}"


def _proxied(binary: Path, args: list[str], env: dict[str, str] | None = None) -> Iterator[Proxied]:
    ca = TestCa("nginx")
    server = ServerProcess(binary, args=["--trusted-proxies", "127.0.0.1", *args], env=env)
    server.start()
    cert, key = ca.issue_server()
    nginx = Nginx(server.port, cert, key)
    try:
        nginx.start()
        yield Proxied(server, nginx, ca)
    finally:
        nginx.stop()
        server.stop()
        ca.cleanup()


@pytest.fixture
def proxied(sodp_server_bin: Path) -> Iterator[Proxied]:
    yield from _proxied(sodp_server_bin, [])


@pytest.fixture
def capped(sodp_server_bin: Path) -> Iterator[Proxied]:
    """One connection per client address; debug logs (they name the client)."""
    env = {"RUST_LOG": "sodp_server=debug"}
    args = ["--max-connections-per-ip", "1", "--log-format", "json"]
    yield from _proxied(sodp_server_bin, args, env)


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_published_client_through_nginx(
    legacy_python: str, proxied: Proxied, tmp_path: Path, scheme: str
) -> None:
    url = proxied.ws_url if scheme == "ws" else proxied.wss_url
    # The published client has no TLS options: it trusts the CA through
    # Python's default context, which reads SSL_CERT_FILE.
    env = {"SSL_CERT_FILE": str(proxied.ca.ca_file)}
    port = proxied.nginx.plain_port
    out = run_example("quick_start.py", port, tmp_path, python=legacy_python, url=url, env=env)
    assert_quick_start_output(out)


async def test_this_client_through_nginx_ws_and_wss(proxied: Proxied) -> None:
    async with (
        SodpClient(proxied.ws_url) as plain,
        SodpClient(proxied.wss_url, ssl=proxied.ca.context()) as secure,
    ):
        seen: list[object] = []
        secure.watch("nginx.k", lambda value, meta: seen.append(value))
        await plain.set("nginx.k", {"via": "nginx"})
        await wait_for(lambda: {"via": "nginx"} in seen, timeout=5)
        plain.watch("nginx.k", lambda value, meta: None)
        await secure.patch("nginx.k", {"tls": True})
        await wait_for(lambda: plain.get("nginx.k") == {"via": "nginx", "tls": True}, timeout=5)


def test_the_rust_client_through_nginx_wss(proxied: Proxied) -> None:
    """``sodp`` (the CLI over the Rust client) trusting the CA with --ca-file."""

    def sodp(*args: str) -> subprocess.CompletedProcess[str]:
        ca = ["--ca-file", str(proxied.ca.ca_file)]
        return subprocess.run(
            [str(cli_binary()), *args, *ca], capture_output=True, text=True, timeout=30,
            env={**os.environ, "SODP_URL": proxied.wss_url},
        )  # fmt: skip

    done = sodp("set", "nginx.rust", '{"from": "rust"}')
    assert done.returncode == 0, done.stderr
    got = sodp("get", "nginx.rust")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"from": "rust"}


async def _hello_from(url: str, source: str, headers: dict[str, str] | None = None) -> object:
    """Connects from the loopback address *source*; returns the open
    connection after its HELLO, or the HTTP status it was refused with."""
    try:
        ws = await connect(
            url, compression=None, local_addr=(source, 0), additional_headers=headers
        )
    except InvalidStatus as exc:
        return exc.response.status_code
    frame = decode_frame(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[arg-type]
    assert frame.type == FrameType.HELLO
    return ws


async def test_the_server_counts_the_address_nginx_forwards(capped: Proxied) -> None:
    url = f"ws://127.0.0.1:{capped.nginx.plain_port}"
    # Both arrive from nginx (127.0.0.1); only X-Forwarded-For tells them apart.
    first = await _hello_from(url, "127.0.0.2")
    second = await _hello_from(url, "127.0.0.3")
    assert not isinstance(first, int) and not isinstance(second, int), (first, second)
    assert await _hello_from(url, "127.0.0.2") == 503
    # A forged header does not buy a slot: nginx appends the real address,
    # and the server takes the rightmost one that is not a trusted proxy.
    assert await _hello_from(url, "127.0.0.2", {"X-Forwarded-For": "127.0.0.9"}) == 503
    lines = capped.server.log_tail(100_000).splitlines()
    started = [json.loads(line) for line in lines if '"session started"' in line]
    assert [(e["remote"], e["peer"].split(":")[0]) for e in started] == [
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.3", "127.0.0.1"),
    ], lines
    for ws in (first, second):
        await ws.close()  # type: ignore[union-attr]
