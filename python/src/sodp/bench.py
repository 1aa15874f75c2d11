"""``python -m sodp.bench``: deltas applied per second, ours vs the published 0.2.2.

Two workloads, each a stream of one-op DELTAs applied the way a client does
(each result is the next input):

* a 100-field object, ``UPDATE /field_K`` cycling through the fields;
* a 10,000-entry map of small objects, ``UPDATE /user_K/score``.

The published ``sodp-client`` 0.2.2 ``apply_ops`` is loaded from its
``sodp/delta.py``: from ``--legacy PATH`` (a directory holding ``sodp/``, or
the file itself), else ``$SODP_LEGACY_PATH``, else the interop test venv
(``/tmp/sodp-interop-venv-0.2.2``), else ``pip download sodp-client==0.2.2``.
This is a measurement, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .delta import apply_ops

ApplyFn = Callable[[Any, list[dict[str, Any]]], Any]
LEGACY_VERSION = "0.2.2"


def _find_legacy_delta(explicit: str | None) -> Path:
    candidates: list[Path] = []
    for given in (explicit, os.environ.get("SODP_LEGACY_PATH")):
        if given:
            p = Path(given)
            candidates.append(p if p.suffix == ".py" else p / "sodp" / "delta.py")
    pattern = f"/tmp/sodp-interop-venv-{LEGACY_VERSION}/lib/python3*/site-packages/sodp/delta.py"
    candidates += [Path(p) for p in sorted(glob.glob(pattern))]
    for path in candidates:
        if path.is_file():
            return path
    if explicit:
        raise SystemExit(f"no sodp/delta.py under {explicit}")
    dest = Path(tempfile.gettempdir()) / f"sodp-client-{LEGACY_VERSION}-wheel"
    target = dest / "sodp" / "delta.py"
    if not target.is_file():
        print(f"downloading sodp-client=={LEGACY_VERSION} ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary=:all:", "-d", str(dest), f"sodp-client=={LEGACY_VERSION}"]
        subprocess.run(cmd, check=True)
        wheel = next(dest.glob("sodp_client-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract("sodp/delta.py", dest)
    return target


def load_legacy_apply(explicit: str | None = None) -> tuple[ApplyFn, Path]:
    path = _find_legacy_delta(explicit)
    spec = importlib.util.spec_from_file_location("sodp_legacy_delta", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: ApplyFn = module.apply_ops
    return fn, path


def object_workload() -> tuple[Any, list[list[dict[str, Any]]]]:
    value = {f"field_{i}": i if i % 3 else f"text {i}" for i in range(100)}
    deltas = [[{"op": "UPDATE", "path": f"/field_{i % 100}", "value": i * 7}] for i in range(1000)]
    return value, deltas


def map_workload() -> tuple[Any, list[list[dict[str, Any]]]]:
    value = {
        f"user_{i}": {"name": f"user {i}", "score": i, "online": i % 2 == 0} for i in range(10_000)
    }
    deltas = [
        [{"op": "UPDATE", "path": f"/user_{(i * 7919) % 10_000}/score", "value": i}]
        for i in range(1000)
    ]
    return value, deltas


def measure(apply: ApplyFn, value: Any, deltas: list[list[dict[str, Any]]], budget: float) -> float:
    """Deltas per second, applying until *budget* seconds have passed (at least 3)."""
    count = 0
    state = value
    start = time.perf_counter()
    while True:
        for ops in deltas:
            state = apply(state, ops)
            count += 1
            if count >= 3 and count % 8 == 0 and time.perf_counter() - start >= budget:
                return count / (time.perf_counter() - start)
        if time.perf_counter() - start >= budget and count >= 3:
            return count / (time.perf_counter() - start)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sodp.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--legacy", help="directory holding 0.2.2's sodp/ (or its delta.py)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args(argv)

    legacy, legacy_path = load_legacy_apply(args.legacy)
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: nproc={ncpu}, {cpu_model()}")
    print(f"python:  {platform.python_implementation()} {platform.python_version()}")
    print(f"legacy:  sodp-client {LEGACY_VERSION} apply_ops from {legacy_path}")
    print()
    print(f"{'workload':<24}{'ours (deltas/s)':>18}{'0.2.2 (deltas/s)':>20}{'speed-up':>11}")
    for name, make in (("100-field object", object_workload), ("10,000-entry map", map_workload)):
        value, deltas = make()
        # Same results from both, on a prefix of the stream.
        ours_state, legacy_state = value, value
        for ops in deltas[:50]:
            ours_state = apply_ops(ours_state, ops)
            legacy_state = legacy(legacy_state, ops)
        if ours_state != legacy_state:
            raise SystemExit(f"{name}: results differ between ours and 0.2.2")
        ours = measure(apply_ops, value, deltas, args.seconds)
        old = measure(legacy, value, deltas, args.seconds)
        print(f"{name:<24}{ours:>18,.0f}{old:>20,.0f}{ours / old:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
