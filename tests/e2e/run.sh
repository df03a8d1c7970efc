#!/usr/bin/env bash
# End-to-end test: installs what it needs (setup.sh), then runs node's test runner on
# tests/e2e/ inside a private network namespace (netns.sh): e2e.test.mjs over loopback only,
# then real-path.test.mjs, which adds a veth pair to a second namespace of its own for
# Chromium, and selftest.test.mjs (the self-test page: UDP, UDP dropped with nftables in this
# namespace, secret + Origin allowlist, nginx with TLS on a sub-path, bundle rebuild check).
# The files run one after the other (they share the namespace and two cores).
# Needs the release server binary (target/release/mediasoup-server, or MEDIASOUP_SERVER_BIN).
# E2E_LEAVE_ROUNDS sets the real-path rounds (default 20). Exits non-zero when a test fails.
set -euo pipefail

e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$e2e_dir/../.." && pwd)"

"$e2e_dir/setup.sh"
cd "$repo_root"
# Then the real path once more in single-port mode (E2E_SINGLE_PORT_ROUNDS rounds, default 5):
# every ICE-TCP connection through the workers' WebRtcServer.
exec "$e2e_dir/netns.sh" bash -c 'node --test --test-concurrency=1 tests/e2e/ &&
  E2E_SINGLE_PORT=1 E2E_LEAVE_ROUNDS="${E2E_SINGLE_PORT_ROUNDS:-5}" node --test tests/e2e/real-path.test.mjs'
