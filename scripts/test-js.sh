#!/usr/bin/env bash
# Every check and test of the JavaScript packages in js/ (README's one test
# command for them):
#   npm ci → build (esbuild + tsc declarations) → tsc --strict → biome lint →
#   unit tests (node:test via tsx) → size budget → the server's embedded
#   inspector assets rebuilt byte for byte from js/packages/inspector →
#   package checks (publint,
#   attw, npm pack + install) → integration tests against the real
#   sodp-server → browser end-to-end tests in Debian's Chromium.
# Needs: Node.js >= 20, npm, /usr/bin/chromium (scripts/ci-js-deps.sh installs
# it), and a sodp-server binary: $SODP_SERVER_BIN, else target/debug/sodp-server.
# Every step is bounded by `timeout`; the tests kill the servers they start.
set -euo pipefail
cd "$(dirname "$0")/../js"

export SODP_SERVER_BIN="${SODP_SERVER_BIN:-$(cd .. && pwd)/target/debug/sodp-server}"
if [ ! -x "$SODP_SERVER_BIN" ]; then
  echo "sodp-server not found at $SODP_SERVER_BIN (build it, or set SODP_SERVER_BIN)" >&2
  exit 1
fi

started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }

step "npm ci"
timeout 600 npm ci --no-audit --no-fund

step "build: esbuild (ESM, CJS, IIFE) + tsc declarations"
timeout 300 npm run -s build

step "tsc --strict (sources, tests, bench, example)"
timeout 300 npx tsc -p tsconfig.json --strict --noEmit

step "lint: biome check"
timeout 120 npx biome check .

step "unit tests"
timeout 300 npm run -s test:unit

step "size budget"
timeout 120 npm run -s test:size

step "inspector: a fresh build equals the assets embedded in sodp-server"
timeout 120 npm run -s check:inspector

step "package checks: publint, @arethetypeswrong/cli, npm pack + install"
timeout 600 npm run -s check:packages

step "integration tests against $SODP_SERVER_BIN"
timeout 300 npm run -s test:integration

step "browser end-to-end tests (Chromium via playwright-core)"
timeout 300 npm run -s test:e2e

step "all JavaScript checks passed"
