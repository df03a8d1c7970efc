#!/usr/bin/env bash
# Rebuilds selftest.js (the self-test page's script, committed so that `cargo build` needs no
# node) from selftest.mjs and the pinned mediasoup-client in package-lock.json. Run it after
# changing selftest.mjs or the lock file, and commit selftest.js; the e2e test
# tests/e2e/selftest.test.mjs fails when the committed file differs from what this produces.
#   bash src/selftest/build.sh            writes src/selftest/selftest.js
#   bash src/selftest/build.sh --stdout   prints it instead
set -euo pipefail

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v node >/dev/null 2>&1; then
  echo "build.sh: node (>= 20) is not installed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
# npm ci wipes node_modules, so only run it when the lock file changed since the last install.
stamp="$dir/node_modules/.selftest-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  echo "build.sh: npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts >&2)
  echo "$want" >"$stamp"
fi
exec node "$dir/build.mjs" "$@"
