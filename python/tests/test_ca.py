"""A certificate authority made for one test, with the ``openssl`` command:
its certificate to trust, and server certificates it issues for
``localhost`` and ``127.0.0.1`` (written aside, then renamed into place, as
certbot does). ``openssl`` missing is a failure, never a skip."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the TLS tests need the `openssl` command (apt-get install openssl)")
    subprocess.run([exe, *args], cwd=cwd, check=True, capture_output=True)


class TestCa:
    """A CA in its own temp directory (removed by :meth:`cleanup`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"sodp-ca-{name}-"))
        self.ca_file = self.dir / f"{name}-ca.pem"
        self._ca_key = self.dir / f"{name}-ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(self._ca_key), "-out", str(self.ca_file), "-days", "2",
            "-subj", f"/CN=SODP test CA {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=self.dir,
        )  # fmt: skip

    def issue_server(self, directory: Path | None = None) -> tuple[Path, Path]:
        """Issue a server certificate into *directory* (default: the CA's);
        returns (certificate, key) paths."""
        where = directory or self.dir
        ext = self.dir / "ext.cnf"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        key_new, csr, cert_new = where / "key.new", where / "server.csr", where / "cert.new"
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key_new), "-out", str(csr), "-subj", "/CN=localhost",
            cwd=self.dir,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_file), "-CAkey", str(self._ca_key),
            "-CAcreateserial", "-out", str(cert_new), "-days", "2", "-extfile", str(ext),
            cwd=self.dir,
        )  # fmt: skip
        cert, key = where / "server.pem", where / "server.key"
        os.replace(key_new, key)
        os.replace(cert_new, cert)
        return cert, key

    def context(self) -> ssl.SSLContext:
        """A client context trusting this CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
