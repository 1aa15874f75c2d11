"""A venv holding the published ``sodp-client==0.2.2``, to run it against our server.

The venv is cached (``$SODP_INTEROP_VENV``, default ``/tmp/sodp-interop-venv-0.2.2``)
and built on first use with ``pip install sodp-client==0.2.2 websockets msgpack``,
which needs the package index. ``SODP_SKIP_INTEROP=1`` skips the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

LEGACY_VERSION = "0.2.2"
DEFAULT_VENV = Path("/tmp") / f"sodp-interop-venv-{LEGACY_VERSION}"


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('sodp-client'))"],
        capture_output=True,
        text=True,
        env=legacy_env(),
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def legacy_env() -> dict[str, str]:
    """The environment for the legacy venv: nothing that could leak our package in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="session")
def legacy_python() -> str:
    if os.environ.get("SODP_SKIP_INTEROP") == "1":
        pytest.skip("SODP_SKIP_INTEROP=1")
    root = Path(os.environ.get("SODP_INTEROP_VENV", DEFAULT_VENV))
    python = root / "bin" / "python"
    if _installed_version(python) != LEGACY_VERSION:
        print(f"creating {root} with sodp-client=={LEGACY_VERSION} ...", file=sys.stderr)
        venv.EnvBuilder(clear=True, with_pip=True).create(root)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                f"sodp-client=={LEGACY_VERSION}",
                "websockets",
                "msgpack",
            ],
            check=True,
            env=legacy_env(),
        )
    version = _installed_version(python)
    assert version == LEGACY_VERSION, f"{python} has sodp-client {version}"
    # it must be the published package, not this repository's
    where = subprocess.run(
        [str(python), "-c", "import sodp, sys; print(sodp.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=legacy_env(),
        cwd="/",
    ).stdout
    assert str(root) in where, where
    return str(python)
