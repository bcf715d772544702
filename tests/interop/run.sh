#!/usr/bin/env bash
# Runs the interoperability suite against oidc-provider (tests/interop.rs).
# From anywhere: bash tests/interop/run.sh [extra cargo test arguments]
# Needs Node.js 20+ and npm; installs the peer from package-lock.json first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

command -v node >/dev/null || { echo "run.sh: node is not on PATH (Node.js 20+ is needed)" >&2; exit 1; }
if [ ! -d "$here/node_modules/oidc-provider" ]; then
    (cd "$here" && npm ci --no-audit --no-fund)
fi

cd "$root"
exec cargo test --test interop "$@"
