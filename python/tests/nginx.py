"""nginx in front of a test server, configured by the repository's own
``deploy/nginx.conf`` with only its ports, certificate paths and upstream
swapped in. Started as a foreground process (``daemon off``) with every
path in a temp directory, stopped by :meth:`Nginx.stop`. A missing nginx is
a failure, never a skip (``.ci/run`` installs it)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .support import REPO

DEPLOY_CONF = REPO / "deploy" / "nginx.conf"

MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/sodp.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise RuntimeError("the proxy tests need nginx: apt-get install -y nginx (.ci/run does)")
    return found


def render(template: str, replacements: dict[str, str]) -> str:
    """The deploy config with each placeholder value replaced; each must
    occur exactly once, so a changed config cannot silently go untested."""
    for old, new in replacements.items():
        count = template.count(old)
        assert count == 1, f"deploy/nginx.conf: {old!r} occurs {count} times, expected once"
        template = template.replace(old, new)
    return template


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Nginx:
    """``deploy/nginx.conf`` proxying to ``127.0.0.1:upstream``: ws:// on
    :attr:`plain_port`, wss:// (TLS ended by nginx) on :attr:`tls_port`."""

    def __init__(self, upstream: int, cert: Path, key: Path) -> None:
        self.upstream, self.cert, self.key = upstream, cert, key
        self.dir = Path(tempfile.mkdtemp(prefix="sodp-nginx-"))
        self.plain_port = self.tls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # nginx cannot listen on port 0 and tell us the port: pick free ones,
        # and try again in the rare case one is taken before nginx binds it.
        for _ in range(5):
            self.plain_port, self.tls_port = _free_port(), _free_port()
            if self._try_start():
                return
        raise RuntimeError(f"nginx did not start: {self.error_log()}")

    def _try_start(self) -> bool:
        conf = render(
            DEPLOY_CONF.read_text(),
            {
                "listen 80;": f"listen 127.0.0.1:{self.plain_port};",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.tls_port} ssl;",
                "server 127.0.0.1:7777;": f"server 127.0.0.1:{self.upstream};",
                "/etc/letsencrypt/live/sodp.example.com/fullchain.pem": str(self.cert),
                "/etc/letsencrypt/live/sodp.example.com/privkey.pem": str(self.key),
            },
        )
        (self.dir / "sodp.conf").write_text(conf)
        (self.dir / "nginx.conf").write_text(MAIN_CONF.format(tmp=self.dir))
        (self.dir / "error.log").write_text("")
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
             "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "Address already in use" in self.error_log():
                    return False
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.error_log()}")
            if all(self._accepts(p) for p in (self.plain_port, self.tls_port)):
                return True
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"nginx did not listen within 10 s: {self.error_log()}")

    @staticmethod
    def _accepts(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: open WebSockets are cut), then the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
