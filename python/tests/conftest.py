"""Fixtures shared by the integration and interop suites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import ServerProcess, server_binary


@pytest.fixture(scope="session")
def sodp_server_bin() -> Path:
    return server_binary()


@pytest.fixture
def sodp_server(sodp_server_bin: Path) -> Iterator[ServerProcess]:
    """A fresh in-memory server per test (fast to start, no shared keys)."""
    server = ServerProcess(sodp_server_bin)
    server.start()
    yield server
    server.stop()
