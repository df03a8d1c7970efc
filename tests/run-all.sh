#!/usr/bin/env bash
# The whole test suite, from a fresh clone on Debian/Ubuntu (run as root: it installs packages).
# Idempotent: what is already installed or built is reused.
#   1. worker build kit + release build (worker-build/setup.sh)
#   2. Rust tests: unit, protocol, server, observability, SRTP adapter (real workers)
#   3. upstream mediasoup's own C++ worker tests (Catch2), built against the same kit
#      (worker-build/upstream-tests.sh; ends with "upstream worker tests: N passed, ...")
#   4. end-to-end media in headless Chromium with mediasoup-client, plus a promtool-checked scrape
#   5. packages, systemd unit, alert rules and dashboards (packaging/test.sh)
#   6. the package under a real systemd in systemd-nspawn (packaging/nspawn-check.sh; prints
#      "SKIPPED (reason)" and goes on where this machine cannot run it)
#   7. the container image under podman: health check, media through published ports, clean
#      stop (packaging/docker/test.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==== %s\n' "$*"; }

step "worker build kit and release build"
bash worker-build/setup.sh

step "Rust tests (real mediasoup workers)"
cargo test --release --all-targets

step "upstream mediasoup worker tests (Catch2)"
bash worker-build/upstream-tests.sh

step "end-to-end media in Chromium"
bash tests/e2e/run.sh

step "packages, unit, alert rules, dashboards"
bash packaging/test.sh

step "the package under a real systemd (systemd-nspawn)"
bash packaging/nspawn-check.sh

step "the container image (podman)"
bash packaging/docker/test.sh
