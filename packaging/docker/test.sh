#!/usr/bin/env bash
# The container image, for real: builds the runtime stage of packaging/docker/Dockerfile with
# podman around the release binary (no registry here: the Debian base image is made with
# debootstrap and imported once), runs it with its signaling port and its one media port
# published, waits for the HEALTHCHECK to report healthy, has two Chromium peers exchange
# audio and video through the published ports (tests/e2e/container-media.mjs), then checks
# that `podman stop` ends the server with exit code 0. Run as root from a built tree:
#   bash worker-build/setup.sh && bash packaging/docker/test.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/mediasoup-server:test
NAME=mediasoup-server-test-$$
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# podman here: runc (crun cannot run in this cgroup setup), ulimits no higher than the host's.
PODMAN=(podman --runtime runc)
HEALTH_TIMEOUT_SECS=60

log() { printf 'docker/test.sh: %s\n' "$*"; }
die() { log "FAILED: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (podman, debootstrap and apt need it)"
[[ -x target/release/mediasoup-server ]] || die "target/release/mediasoup-server is missing: run bash worker-build/setup.sh first"

missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap slirp4netns:slirp4netns fuse-overlayfs:fuse-overlayfs newuidmap:uidmap; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -q -o DPkg::Lock::Timeout=600
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
bash tests/e2e/setup.sh

if ! podman image exists "$BASE"; then
  rootfs=$(mktemp -d /var/tmp/mediasoup-debian-XXXXXX)
  log "no $BASE here (no registry): debootstrap --variant=minbase bookworm from $MIRROR"
  debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$rootfs"
fi

started=$SECONDS
log "podman build (runtime stage, BINARY_FROM=prebuilt)"
"${PODMAN[@]}" build --pull=never --format docker --build-arg BINARY_FROM=prebuilt \
  -f packaging/docker/Dockerfile -t "$IMAGE" . >/dev/null
log "image built in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
[[ $(podman image inspect --format '{{.Config.User}}' "$IMAGE") == mediasoup ]] || die "the image does not run as the mediasoup user"

# The host's own address (players reach a real host, not its loopback); both ports published on it.
host_ip=$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
host_ip=${host_ip:-127.0.0.1}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
signal_port=$(free_port)
media_port=$((41000 + RANDOM % 2000))

cleanup() { "${PODMAN[@]}" rm -f -t 0 "$NAME" >/dev/null 2>&1 || true; }
# Without systemd, podman says on every start and stop that it cannot add a health check timer:
# expected here (the checks run by hand below), so not shown.
quiet_timers() { grep -v 'unable to get systemd connection' >&2 || true; }
trap cleanup EXIT
"${PODMAN[@]}" run -d --name "$NAME" \
  --ulimit nofile=1000:1000 --ulimit nproc=1000:1000 \
  -e MEDIASOUP_ANNOUNCED_IP="$host_ip" -e MEDIASOUP_RTC_PORT="$media_port" \
  -p "$host_ip:$signal_port:3000/tcp" -p "$host_ip:$media_port:$media_port/udp" -p "$host_ip:$media_port:$media_port/tcp" \
  "$IMAGE" >/dev/null 2> >(quiet_timers)
log "container $NAME: signaling $host_ip:$signal_port, media $host_ip:$media_port (udp+tcp)"

# podman runs HEALTHCHECKs from systemd timers, which this machine may not have: run the check
# the way the timer would, until it passes, then read the status podman recorded.
deadline=$((SECONDS + HEALTH_TIMEOUT_SECS))
until "${PODMAN[@]}" healthcheck run "$NAME" >/dev/null 2>&1; do
  [[ $(podman inspect --format '{{.State.Running}}' "$NAME") == true ]] || { podman logs "$NAME" >&2; die "the container exited"; }
  ((SECONDS < deadline)) || { podman logs "$NAME" >&2; die "not healthy after ${HEALTH_TIMEOUT_SECS}s"; }
  sleep 1
done
status=$(podman inspect --format '{{.State.Health.Status}}' "$NAME")
[[ $status == healthy ]] || die "health status is '$status', not healthy"
log "health status: $status"

CONTAINER_WS_URL="ws://$host_ip:$signal_port/container-table" CONTAINER_MEDIA_PORT="$media_port" \
  node tests/e2e/container-media.mjs || { podman logs "$NAME" >&2; die "media through the published ports"; }

# Inside the container the server holds exactly one UDP and one TCP media socket.
sockets=$("${PODMAN[@]}" exec "$NAME" sh -c "cat /proc/net/udp /proc/net/udp6 /proc/net/tcp /proc/net/tcp6" |
  awk -v port="$(printf ':%04X' "$media_port")" '$2 ~ port"$" && ($4 == "0A" || $4 == "07") {n++} END {print n+0}')
[[ $sockets == 2 ]] || die "expected one UDP and one TCP socket on the media port in the container, found $sockets"

stop_started=$SECONDS
"${PODMAN[@]}" stop -t 20 "$NAME" >/dev/null 2> >(quiet_timers)
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[[ $code == 0 ]] || { podman logs "$NAME" >&2; die "the server exited with $code after podman stop"; }
log "podman stop: exit code 0 after $((SECONDS - stop_started)) s"
log "OK in $((SECONDS - started)) s"
