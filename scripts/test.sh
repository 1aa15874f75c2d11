#!/usr/bin/env bash
# Runs every check and test of the repository: Rust formatting and lints, the
# whole Rust workspace (unit, property, integration tests against real server
# processes, the durable-state crash test), the Python package (ruff, mypy
# --strict, pytest including the interop suite against the published
# sodp-client 0.2.2, directly and behind nginx and Caddy), and the TypeScript packages (tsc --strict, biome, unit,
# integration against the real server, end-to-end in Chromium).
#
# Python dependencies go into ./.venv (created on first run); npm packages into
# js/node_modules. Chromium comes from the distribution (scripts/ci-js-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (binaries used by the Python and CLI tests)"
cargo build --workspace --bins

step "cargo test"
cargo test --workspace

step "python environment (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e "python[dev]"

step "ruff + mypy --strict"
.venv/bin/ruff check python
.venv/bin/ruff format --check python
# The benchmark scripts (no .py suffix, so named; settings in bench/ruff.toml).
.venv/bin/ruff check bench/compare bench/durable bench/instructions bench/extensions bench/cluster
.venv/bin/mypy --strict python/src/sodp

step "pytest"
SODP_SERVER_BIN="$PWD/target/debug/sodp-server" .venv/bin/pytest -q python/tests

step "TypeScript client + React hooks (js/): lint, unit, integration, browser"
SODP_SERVER_BIN="$PWD/target/debug/sodp-server" bash scripts/test-js.sh

step "all tests passed"
