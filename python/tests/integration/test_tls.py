"""``wss://`` against a server started with ``--tls-cert``/``--tls-key`` and a
CA made by the test: the client connects with ``ssl=`` trusting that CA, a
client trusting another CA is refused with a clear error, and a certificate
reloaded by SIGHUP is served to new clients while an old one stays up."""

from __future__ import annotations

import asyncio
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from sodp import ConnectionLost, SodpClient, SodpError

from ..support import ServerProcess
from ..test_ca import TestCa

pytestmark = pytest.mark.integration


@pytest.fixture
def ca() -> Iterator[TestCa]:
    ca = TestCa("py")
    yield ca
    ca.cleanup()


@pytest.fixture
def tls_server(sodp_server_bin: Path, ca: TestCa) -> Iterator[ServerProcess]:
    cert, key = ca.issue_server()
    server = ServerProcess(sodp_server_bin, args=["--tls-cert", str(cert), "--tls-key", str(key)])
    server.start()
    yield server
    server.stop()


async def test_wss_with_the_test_ca(tls_server: ServerProcess, ca: TestCa) -> None:
    async with SodpClient(tls_server.wss_url, ssl=ca.context()) as client:
        await client.set("tls.k", {"over": "tls"})
        seen: list[object] = []
        client.watch("tls.k", lambda value, meta: seen.append(value))
        await client.set("tls.k", {"over": "tls", "n": 2})
        async with asyncio.timeout(5):
            while {"over": "tls", "n": 2} not in seen:
                await asyncio.sleep(0.01)


async def test_a_wrong_ca_is_refused_with_a_clear_error(tls_server: ServerProcess) -> None:
    stranger = TestCa("stranger")
    try:
        errors: list[SodpError] = []
        client = SodpClient(
            tls_server.wss_url, ssl=stranger.context(), reconnect=False, on_error=errors.append
        )
        with pytest.raises(ConnectionLost, match="certificate verification failed"):
            await asyncio.wait_for(client.ready, 5)
        await client.aclose()
        assert errors and "certificate verification failed" in str(errors[0]), errors
    finally:
        stranger.cleanup()


async def test_ssl_is_only_for_wss() -> None:
    with pytest.raises(ValueError, match="wss://"):
        SodpClient("ws://127.0.0.1:1", ssl=ssl.create_default_context())


async def test_a_reloaded_certificate_serves_new_clients_and_old_ones_stay(
    tls_server: ServerProcess, ca: TestCa
) -> None:
    connects = 0

    def on_connect() -> None:
        nonlocal connects
        connects += 1

    async with SodpClient(tls_server.wss_url, ssl=ca.context(), on_connect=on_connect) as old:
        # The renewal comes from another CA: a client trusting only that CA
        # connects only when it is served the new certificate.
        renewed = TestCa("renewed")
        try:
            renewed.issue_server(ca.dir)
            assert tls_server.proc is not None
            tls_server.proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(5):
                while True:
                    new = SodpClient(tls_server.wss_url, ssl=renewed.context(), reconnect=False)
                    try:
                        await new.ready
                        break
                    except ConnectionLost:
                        await new.aclose()
                        await asyncio.sleep(0.02)
            await new.set("tls.reload", 1)
            await new.aclose()
        finally:
            renewed.cleanup()
        await old.set("tls.reload", 2)
        assert connects == 1, "the old connection never dropped"
