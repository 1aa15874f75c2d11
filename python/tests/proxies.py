"""Reverse proxies in front of a test server, configured by the repository's
own ``deploy/nginx.conf`` and ``deploy/Caddyfile`` with only their ports,
certificate paths and upstream swapped in. Each runs as a foreground process
with every path in a temp directory and is stopped by :meth:`Proxy.stop`. A
missing nginx or caddy is a failure, never a skip (``.ci/run`` installs them
from the distribution)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .support import REPO, terminate

DEPLOY = REPO / "deploy"


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/bin") if Path(p := f"{d}/{name}").exists()), None
    )
    if found is None:
        raise RuntimeError(f"the proxy tests need {name}: apt-get install -y {name} (.ci/run does)")
    return found


def render(template: str, replacements: dict[str, str]) -> str:
    """The deploy config with each placeholder value replaced; each must
    occur exactly once, so a changed config cannot silently go untested."""
    for old, new in replacements.items():
        count = template.count(old)
        assert count == 1, f"{old!r} occurs {count} times in the deploy config, expected once"
        template = template.replace(old, new)
    return template


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class Proxy:
    """A proxy to ``127.0.0.1:upstream``: ws:// on :attr:`plain_port` (when
    it serves one), wss:// with TLS ended by the proxy on :attr:`tls_port`."""

    serves_plain = True

    def __init__(self, upstream: int, cert: Path, key: Path) -> None:
        self.upstream, self.cert, self.key = upstream, cert, key
        self.dir = Path(tempfile.mkdtemp(prefix=f"sodp-{type(self).__name__.lower()}-"))
        self.log = self.dir / "proxy.log"
        self.plain_port = self.tls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """Write the configuration for the chosen ports; the command line."""
        raise NotImplementedError

    def start(self) -> None:
        # Neither proxy can listen on port 0 and tell us the port: pick free
        # ones, and try again in the rare case one is taken before the bind.
        for _ in range(5):
            self.plain_port, self.tls_port = _free_port(), _free_port()
            if self._try_start():
                return
        raise RuntimeError(f"{self.command()[0]} did not start: {self.log_tail()}")

    def _try_start(self) -> bool:
        self.log.write_text("")
        with self.log.open("ab") as log:
            env = {**os.environ, "HOME": str(self.dir), "XDG_DATA_HOME": str(self.dir),
                   "XDG_CONFIG_HOME": str(self.dir)}  # fmt: skip
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env)
        ports = [self.tls_port, *([self.plain_port] if self.serves_plain else [])]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    return False
                raise RuntimeError(f"the proxy exited {self.proc.returncode}: {self.log_tail()}")
            if all(_accepts(p) for p in ports):
                return True
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the proxy did not listen within 10 s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM (open WebSockets are cut), then the temp dir."""
        terminate(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


NGINX_MAIN = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/proxy.log info;
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


class Nginx(Proxy):
    """``deploy/nginx.conf``: ws:// and wss:// (nginx ends TLS)."""

    def command(self) -> list[str]:
        conf = render(
            (DEPLOY / "nginx.conf").read_text(),
            {
                "listen 80;": f"listen 127.0.0.1:{self.plain_port};",
                "listen 443 ssl;": f"listen 127.0.0.1:{self.tls_port} ssl;",
                "server 127.0.0.1:7777;": f"server 127.0.0.1:{self.upstream};",
                "/etc/letsencrypt/live/sodp.example.com/fullchain.pem": str(self.cert),
                "/etc/letsencrypt/live/sodp.example.com/privkey.pem": str(self.key),
            },
        )
        (self.dir / "sodp.conf").write_text(conf)
        (self.dir / "nginx.conf").write_text(NGINX_MAIN.format(tmp=self.dir))
        main = str(self.dir / "nginx.conf")
        return [binary("nginx"), "-p", str(self.dir), "-c", main, "-e", str(self.log)]


CADDY_GLOBAL = """\
{{
	admin off
	auto_https disable_redirects
	storage file_system {tmp}/data
	grace_period 1s
}}
"""


class Caddy(Proxy):
    """``deploy/Caddyfile``: wss:// (Caddy ends TLS), with the test CA's
    certificate instead of one from ACME."""

    serves_plain = False

    def command(self) -> list[str]:
        site = render(
            (DEPLOY / "Caddyfile").read_text(),
            {
                "sodp.example.com {": f"https://localhost:{self.tls_port} {{\n"
                f"\tbind 127.0.0.1\n\ttls {self.cert} {self.key}",
                "reverse_proxy 127.0.0.1:7777": f"reverse_proxy 127.0.0.1:{self.upstream}",
            },
        )
        path = self.dir / "Caddyfile"
        path.write_text(CADDY_GLOBAL.format(tmp=self.dir) + site)
        return [binary("caddy"), "run", "--config", str(path), "--adapter", "caddyfile"]
