#!/usr/bin/env bash
# Runs a command in a private network namespace whose only interface is loopback, so the
# e2e test's WebRTC traffic (Chromium <-> server) can only use 127.0.0.1. real-path.test.mjs
# adds a veth pair from here to a second private namespace for its Chromium (198.18.0.0/30);
# both namespaces, and the pair, vanish with the command's processes.
#   tests/e2e/netns.sh node --test tests/e2e/
#   tests/e2e/netns.sh node tests/e2e/capture-fixture.mjs
set -euo pipefail

if (($# == 0)); then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
if [[ ${E2E_IN_NETNS:-} == 1 ]]; then
  exec "$@"
fi
for tool in unshare ip; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "netns.sh: '$tool' is missing (Debian: apt-get install util-linux iproute2)" >&2
    exit 1
  fi
done
if [[ $(id -u) -eq 0 ]]; then
  ns=(unshare --net)
else
  ns=(unshare --user --map-root-user --net)
fi
export E2E_IN_NETNS=1
exec "${ns[@]}" -- bash -c 'ip link set lo up && exec "$@"' netns.sh "$@"
