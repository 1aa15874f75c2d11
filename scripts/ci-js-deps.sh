#!/usr/bin/env bash
# System packages the JavaScript tests (scripts/test-js.sh) need beyond the
# machine's Node.js 20 + npm: Debian's Chromium, driven by playwright-core
# through executablePath=/usr/bin/chromium (never a downloaded browser build).
# Chromium's package pulls in its fonts and libraries (libnss3, fonts-liberation, …).
# Idempotent; run as root (CI is).
set -euo pipefail

PACKAGES=(chromium)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

node -e 'const [maj] = process.versions.node.split(".").map(Number); if (maj < 20) { console.error(`Node.js >= 20 required, found ${process.version}`); process.exit(1); }'
command -v npm >/dev/null
/usr/bin/chromium --version
