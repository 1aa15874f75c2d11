"""Token auth against a server started with SODP_JWT_SECRET.

The fixture starts the server with the secret and *fails* (never skips) unless
HELLO says ``auth: true`` and advertises ``token_refresh``: a server asked for
auth that runs without it is exactly the regression this suite must catch.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from sodp import AuthError, SodpClient, SodpError
from sodp.frames import FrameType, decode_frame

from ..support import ServerProcess, wait_for

pytestmark = pytest.mark.integration

SECRET = "sodp-test-secret-0123456789abcdef"


def make_token(sub: str, ttl: float = 3600, secret: str = SECRET, **claims: Any) -> str:
    def enc(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = enc(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = enc(json.dumps({"sub": sub, "exp": int(time.time() + ttl), **claims}).encode())
    signing = f"{header}.{payload}".encode()
    sig = enc(hmac.new(secret.encode(), signing, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


async def hello_of(url: str) -> dict[str, Any]:
    async with connect(url, compression=None) as ws:
        frame = decode_frame(await asyncio.wait_for(ws.recv(), 5))  # type: ignore[arg-type]
        assert frame.type == FrameType.HELLO
        body: dict[str, Any] = frame.body
        return body


@pytest.fixture
def jwt_server(sodp_server_bin: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(sodp_server_bin, env={"SODP_JWT_SECRET": SECRET})
    server.start()
    try:
        hello = asyncio.run(hello_of(server.url))
        # The regression this suite exists to catch: a server asked for auth
        # that silently runs without it. Never a skip.
        assert hello.get("auth") is True, f"SODP_JWT_SECRET set, but HELLO says {hello}"
        caps = hello.get("capabilities") or {}
        assert caps.get("token_refresh") is True, f"no token_refresh in HELLO: {hello}"
        yield server
    finally:
        server.stop()


async def test_static_token(jwt_server: ServerProcess) -> None:
    async with SodpClient(jwt_server.url, token=make_token("alice")) as client:
        assert (await client.set("auth.k", 1))["version"] >= 1


async def test_async_token_provider_called_on_every_connect(jwt_server: ServerProcess) -> None:
    calls: list[float] = []

    async def get_token() -> str:
        await asyncio.sleep(0.01)  # stands for the document's HTTP request
        calls.append(time.monotonic())
        return make_token("alice")

    client = SodpClient(jwt_server.url, token_provider=get_token, reconnect_delay=0.1)
    await client.ready
    assert len(calls) == 1
    jwt_server.kill()
    await asyncio.to_thread(jwt_server.start)
    async with asyncio.timeout(10):
        while len(calls) < 2 or not client.connected:
            await asyncio.sleep(0.05)
    assert (await client.set("auth.k", 2))["version"] >= 1
    await client.aclose()


async def test_sync_token_provider(
    jwt_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SODP_TOKEN", make_token("bob"))
    url = jwt_server.url
    client = SodpClient(url, token_provider=lambda: os.environ["SODP_TOKEN"])
    await client.ready
    await client.aclose()


@pytest.mark.parametrize(
    "token",
    [
        make_token("mallory", secret="wrong-secret"),
        make_token("alice", ttl=-60),
        "not.a.jwt",
    ],
    ids=["bad-signature", "expired", "garbage"],
)
async def test_refused_token_is_an_auth_error_and_stops(
    jwt_server: ServerProcess, token: str
) -> None:
    errors: list[SodpError] = []
    client = SodpClient(jwt_server.url, token=token, reconnect_delay=0.05, on_error=errors.append)
    with pytest.raises(AuthError):
        await asyncio.wait_for(client.ready, 5)
    with pytest.raises(AuthError):
        await client.set("auth.k", 1)
    assert any(isinstance(e, AuthError) for e in errors)
    await client.aclose()


async def test_missing_token(jwt_server: ServerProcess) -> None:
    client = SodpClient(jwt_server.url)
    with pytest.raises(AuthError):
        await asyncio.wait_for(client.ready, 5)
    await client.aclose()


async def test_in_band_refresh_keeps_the_session(jwt_server: ServerProcess) -> None:
    issued: list[str] = []

    def provider() -> str:
        issued.append(make_token("alice", ttl=2))
        return issued[-1]

    connects: list[int] = []
    client = SodpClient(
        jwt_server.url, token_provider=provider, on_connect=lambda: connects.append(1)
    )
    await client.ready
    assert client.capabilities.get("token_refresh") is True
    # past the first two tokens' expiry: each was replaced in-band in time
    await wait_for(lambda: len(issued) >= 3, timeout=15)
    assert connects == [1]  # never dropped
    assert (await client.set("auth.k", 3))["version"] >= 1
    await client.aclose()


async def test_live_expiry_of_a_static_token(jwt_server: ServerProcess) -> None:
    """A static 2 s token: the server ends the session at exp (ERROR 401);
    the reconnect's handshake is refused (same expired token): AuthError."""
    errors: list[SodpError] = []
    client = SodpClient(
        jwt_server.url,
        token=make_token("alice", ttl=2),
        reconnect_delay=0.1,
        on_error=errors.append,
    )
    await client.ready
    async with asyncio.timeout(10):
        while not any(isinstance(e, AuthError) for e in errors) or client.connected:
            await asyncio.sleep(0.05)
    await wait_for(client._task.done)  # refused again at the handshake: gave up
    with pytest.raises(AuthError):
        await client.set("auth.k", 1)
    await client.aclose()
