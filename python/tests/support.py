"""Running the real ``sodp-server`` binary for tests.

The binary comes from ``$SODP_SERVER_BIN``, else ``<repo>/target/debug/sodp-server``,
built with ``cargo build -p sodp-server`` when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO / "python"


def server_binary() -> Path:
    env = os.environ.get("SODP_SERVER_BIN")
    if env:
        path = Path(env)
        if not path.exists():
            raise RuntimeError(f"SODP_SERVER_BIN={env} does not exist")
        return path
    path = REPO / "target" / "debug" / "sodp-server"
    if not path.exists():
        print("building sodp-server (cargo build -p sodp-server) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "-p", "sodp-server"], cwd=REPO, check=True)
    if not path.exists():
        raise RuntimeError(f"cargo build did not produce {path}")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def health(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    """``GET /health`` on *port*, or ``None`` if nothing answers properly."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        if resp.status != 200:
            return None
        body: dict[str, Any] = json.loads(resp.read())
        return body
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ServerProcess:
    """One ``sodp-server`` on a fixed port; can be killed and started again."""

    def __init__(
        self,
        binary: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.binary = binary
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(f"/tmp/sodp-test-server-{self.port}.log")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.env.setdefault("RUST_LOG", "warn")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "--addr", f"127.0.0.1:{self.port}", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sodp-server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if health(self.port, timeout=0.5) is not None:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sodp-server did not answer /health within {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no close frames — like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


class CuttableProxy:
    """A loopback TCP proxy whose connections can be cut, to drop a client
    without restarting the server (so the server keeps its RESUME history).
    Runs in the test's event loop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refusing = False
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        # Suppressed so that a loop closing under a live proxy stays quiet.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Abort every proxied connection (both sides see a reset)."""
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


EXAMPLES = Path(__file__).resolve().parent / "doc_examples"


def run_example(
    name: str, port: int, tmp: Path, python: str = sys.executable, timeout: float = 60
) -> str:
    """Run a document example with only its port changed; return its stdout."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert "ws://localhost:7777" in text
    script = tmp / name
    script.write_text(text.replace("ws://localhost:7777", f"ws://localhost:{port}"))
    proc = subprocess.run(
        [python, str(script)], capture_output=True, text=True, timeout=timeout, cwd=tmp
    )
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def assert_quick_start_output(out: str) -> None:
    """The document's quick start prints the init line, then one line per
    write. Versions come from the server (they start at the server's start
    time in microseconds, so they keep increasing across restarts): the
    first write's version is positive and the second is the next one."""
    lines = out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == "player: None version=0"
    first, second = lines[1].rsplit(" version=", 1), lines[2].rsplit(" version=", 1)
    assert first[0] == "player: {'name': 'Alice', 'health': 100}"
    assert second[0] == "player: {'name': 'Alice', 'health': 80}"
    assert int(first[1]) > 0 and int(second[1]) == int(first[1]) + 1
