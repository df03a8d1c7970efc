#!/usr/bin/env bash
# End-to-end test: installs what it needs (setup.sh), then runs node's test runner on
# tests/e2e/ inside a loopback-only network namespace (netns.sh). Needs the release server
# binary (target/release/mediasoup-server, or MEDIASOUP_SERVER_BIN). Exits non-zero when a
# test fails.
set -euo pipefail

e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$e2e_dir/../.." && pwd)"

"$e2e_dir/setup.sh"
cd "$repo_root"
exec "$e2e_dir/netns.sh" node --test tests/e2e/
