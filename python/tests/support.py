"""Running the real ``sodp-server`` binary for tests.

The binary comes from ``$SODP_SERVER_BIN``, else ``<repo>/target/debug/sodp-server``,
built with ``cargo build -p sodp-server`` when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from sodp.frames import Frame, FrameType, decode_frame

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO / "python"


def server_binary() -> Path:
    env = os.environ.get("SODP_SERVER_BIN")
    if env:
        path = Path(env)
        if not path.exists():
            raise RuntimeError(f"SODP_SERVER_BIN={env} does not exist")
        return path
    return _cargo_binary("sodp-server", "sodp-server")


def cli_binary() -> Path:
    """The ``sodp`` command-line tool (the Rust client), next to the server
    binary (``$SODP_SERVER_BIN``'s directory, else target/debug)."""
    env = os.environ.get("SODP_SERVER_BIN")
    if env and (Path(env).parent / "sodp").exists():
        return Path(env).parent / "sodp"
    return _cargo_binary("sodp-cli", "sodp")


def _cargo_binary(package: str, name: str) -> Path:
    path = REPO / "target" / "debug" / name
    if not path.exists():
        print(f"building {name} (cargo build -p {package}) ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "-p", package], cwd=REPO, check=True)
    if not path.exists():
        raise RuntimeError(f"cargo build did not produce {path}")
    return path


_LISTENING = re.compile(r"listening wss?://127\.0\.0\.1:(\d+)$")


def _drain_stdout(stdout: IO[bytes], first: queue.Queue[bytes], log_path: Path) -> None:
    """Hand the server's first stdout line to *first* (``b""`` at EOF), then
    append the rest to the log until the server closes its stdout."""
    first.put(stdout.readline())
    with log_path.open("ab") as log:
        for line in stdout:
            log.write(line)
            log.flush()
    stdout.close()


class ServerProcess:
    """One ``sodp-server``; can be killed and started again on the same port.

    The first start passes ``--addr 127.0.0.1:0`` (unless *port* is given), so
    the kernel picks a free port and nothing can take it between choosing and
    binding; the server announces it as its first stdout line
    (``listening ws://127.0.0.1:PORT``). Later starts of the same object bind
    that port again. Everything else the server prints (stdout and stderr)
    goes to :attr:`log_path`.
    """

    def __init__(
        self,
        binary: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.binary = binary
        self._port = port
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="sodp-test-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)
        self._drain: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started yet: its port is not known")
        return self._port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def wss_url(self) -> str:
        """With ``--tls-cert``: the test CA's certificates name localhost."""
        return f"wss://localhost:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        self.env.setdefault("RUST_LOG", "warn")
        port = 0 if self._port is None else self._port
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary), "--addr", f"127.0.0.1:{port}", *self.args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.proc.stdout is not None
        first: queue.Queue[bytes] = queue.Queue()
        self._drain = threading.Thread(
            target=_drain_stdout,
            args=(self.proc.stdout, first, self.log_path),
            name=f"sodp-server-{self.proc.pid}-stdout",
            daemon=True,
        )
        self._drain.start()
        try:
            line = first.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError(
                f"sodp-server printed no `listening` line within {timeout}s: {self.log_tail()}"
            ) from None
        match = _LISTENING.match(line.decode(errors="replace").strip())
        if match is None:
            self.stop()
            raise RuntimeError(
                f"sodp-server's first line is not `listening ws://HOST:PORT`: {line!r}; "
                f"exit code {self.proc.poll()}: {self.log_tail()}"
            )
        bound = int(match.group(1))
        if self._port is not None and bound != self._port:
            self.stop()
            raise RuntimeError(f"sodp-server bound port {bound}, not {self._port}")
        self._port = bound

    def kill(self) -> None:
        """SIGKILL: no cleanup, no close frames — like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._join_drain()

    def stop(self) -> None:
        terminate(self.proc)
        self._join_drain()

    def _join_drain(self) -> None:
        if self._drain is not None:
            self._drain.join(10)
            self._drain = None

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL if it is still there after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


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


class _WsFrames:
    """Splits one direction of a WebSocket connection into its HTTP head and
    frames, as they arrive (RFC 6455 framing; client frames are masked)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head_done = False

    def feed(self, data: bytes) -> list[tuple[bytes, Frame | None]]:
        """Each complete piece as (raw bytes, the SODP frame of a binary message or None)."""
        self._buf += data
        out: list[tuple[bytes, Frame | None]] = []
        if not self._head_done:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            out.append((bytes(self._buf[: end + 4]), None))
            del self._buf[: end + 4]
            self._head_done = True
        while (piece := self._next()) is not None:
            out.append(piece)
        return out

    def _next(self) -> tuple[bytes, Frame | None] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        opcode, masked, size, pos = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F, 2
        if size >= 126:
            width = 2 if size == 126 else 8
            if len(buf) < pos + width:
                return None
            size = int.from_bytes(buf[pos : pos + width], "big")
            pos += width
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + size:
            return None
        raw = bytes(buf[: pos + size])
        payload = bytes(buf[pos : pos + size])
        del buf[: pos + size]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frame = decode_frame(payload) if opcode == 0x2 else None
        return raw, frame


class ResultDroppingProxy(CuttableProxy):
    """A :class:`CuttableProxy` that reads the SODP frames going through it.

    It records every CALL body a client sends (:attr:`calls`). Armed with
    :meth:`drop_result_of`, it forwards the next CALL matching the predicate
    to the server, then forwards nothing more to the client; when the
    server's RESULT for that call arrives (so the server has applied it) it
    records the RESULT body (:attr:`dropped`) and cuts the connection: the
    write is applied, its RESULT lost.
    """

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.calls: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self._armed: Callable[[dict[str, Any]], bool] | None = None

    def drop_result_of(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        self._armed = predicate

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        self.accepted += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pair = {writer, up_writer}
        self._writers |= pair
        waiting_for: list[str] = []  # the call id whose RESULT is to be dropped

        def cut() -> None:
            for w in pair:
                w.transport.abort()

        async def upstream() -> None:
            frames = _WsFrames()
            while data := await reader.read(65536):
                for raw, frame in frames.feed(data):
                    if frame is not None and frame.type == FrameType.CALL:
                        body = dict(frame.body)
                        self.calls.append(body)
                        if self._armed is not None and self._armed(body):
                            self._armed = None
                            waiting_for.append(body["call_id"])
                    up_writer.write(raw)
                await up_writer.drain()

        async def downstream() -> None:
            frames = _WsFrames()
            while data := await up_reader.read(65536):
                for raw, frame in frames.feed(data):
                    if not waiting_for:
                        writer.write(raw)
                    elif (
                        frame is not None
                        and frame.type == FrameType.RESULT
                        and frame.body.get("call_id") == waiting_for[0]
                    ):
                        self.dropped.append(dict(frame.body))
                        cut()
                        return
                await writer.drain()

        async def pipe(run: Callable[[], Awaitable[None]]) -> None:
            try:
                await run()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                cut()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(upstream), pipe(downstream))
        self._writers -= pair


EXAMPLES = Path(__file__).resolve().parent / "doc_examples"


def run_example(
    name: str,
    port: int,
    tmp: Path,
    python: str = sys.executable,
    timeout: float = 60,
    *,
    url: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run a document example with only its URL changed (to *url*, default
    ``ws://localhost:PORT``); return its stdout. *env* adds variables."""
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert "ws://localhost:7777" in text
    script = tmp / name
    script.write_text(text.replace("ws://localhost:7777", url or f"ws://localhost:{port}"))
    proc = subprocess.run(
        [python, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
        env={**os.environ, **env} if env else None,
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


async def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` is true, polling every few milliseconds;
    fail with the predicate's source line after *timeout* seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        where = getattr(predicate, "__code__", None)
        at = f" ({where.co_filename}:{where.co_firstlineno})" if where else ""
        raise AssertionError(f"condition not met within {timeout}s{at}") from None
