#!/usr/bin/env bash
# Checks the packaged systemd unit under a real systemd: boots a minimal Debian 12 root with
# systemd-nspawn (own network namespace: only its loopback), installs the .deb inside while
# systemd runs, and checks that
#   1. the postinst started the service and it reached active (running) through READY=1,
#      running as mediasoup, with /readyz and /metrics answering inside the container, and
#      a client joining like MediaSoupVTT gets both WebRTC transports (packaging/ws-join.py);
#   2. a frozen process (SIGSTOP) is killed by the watchdog and restarted (NRestarts goes
#      up, a new main PID serves /readyz again);
#   3. dpkg -P stops the service and removes the unit, the user and the configuration.
#
#   sudo bash packaging/nspawn-check.sh       (after bash packaging/build-packages.sh)
#
# The debootstrap root is cached in packaging/.work/nspawn/ (git-ignored, about 250 MB);
# each run boots a throwaway copy of it (--ephemeral). Needs root; the first run downloads
# the root from the Debian archive. Ends with "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=$ROOT/packaging/.work/nspawn
BASE=$CACHE/bookworm
DIST=$ROOT/packaging/.work/dist
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
LOG=$CACHE/boot.log
UNIT=mediasoup-server.service

[ "$(id -u)" -eq 0 ] || { echo "nspawn-check.sh: run as root (debootstrap, systemd-nspawn)" >&2; exit 2; }
DEB=$(ls "$DIST"/mediasoup-server_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || { echo "nspawn-check.sh: no .deb in $DIST; run bash packaging/build-packages.sh first" >&2; exit 2; }
bash packaging/install-tools.sh nspawn || exit 2
mkdir -p "$CACHE"

passed=0
failed=0
NSPAWN_PID=
LEADER=
start_time=$SECONDS

result() { # result OK|FAIL TEXT
    if [ "$1" = OK ]; then passed=$((passed + 1)); echo "ok   $2"; else failed=$((failed + 1)); echo "FAIL $2"; fi
}

# in_ct COMMAND...: runs COMMAND inside the booted container (all its namespaces).
in_ct() { nsenter -t "$LEADER" -a "$@"; }

unit_prop() { in_ct systemctl show -P "$1" "$UNIT"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    while [ $SECONDS -lt $deadline ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "timed out after ${SECONDS}s waiting for: $what" >&2
    return 1
}

shutdown_container() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "$LEADER" ] && in_ct systemctl poweroff >/dev/null 2>&1
        wait_for 30 "container poweroff" bash -c "! kill -0 $NSPAWN_PID" || kill -KILL "$NSPAWN_PID"
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    NSPAWN_PID=
}
trap shutdown_container EXIT

# --- the cached root ---------------------------------------------------------------------
t0=$SECONDS
if [ ! -x "$BASE/lib/systemd/systemd" ]; then
    echo "creating the Debian 12 root in $BASE (debootstrap, once)"
    rm -rf "$BASE"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser,curl,procps \
        bookworm "$BASE" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE/debootstrap.log"; echo "debootstrap failed (log: $CACHE/debootstrap.log)" >&2; exit 1; }
fi
# The package's own dependencies and python3 (for ws-join.py), fetched with apt in a chroot
# of the cache (the booted container has no network).
deps=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g' | grep -v '^$')
missing=()
for d in $deps python3; do chroot "$BASE" dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "adding to the cached root: ${missing[*]}"
    cp /etc/resolv.conf "$BASE/etc/resolv.conf"
    { chroot "$BASE" apt-get update -qq && chroot "$BASE" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$CACHE/apt.log" 2>&1 ||
        { tail -n 20 "$CACHE/apt.log"; echo "could not install ${missing[*]} into the cached root" >&2; exit 1; }
fi
echo "root ready in $((SECONDS - t0)) s"

# --- boot --------------------------------------------------------------------------------
t0=$SECONDS
systemd-nspawn --quiet --directory="$BASE" --ephemeral --boot --register=no --keep-unit \
    --private-network --machine=mediasoup-check --bind-ro="$DIST:/mnt/dist" \
    --bind-ro="$ROOT/packaging/ws-join.py:/mnt/ws-join.py" >"$LOG" 2>&1 </dev/null &
NSPAWN_PID=$!
find_leader() {
    local p
    for p in $(pgrep -P "$NSPAWN_PID"); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = systemd ] && LEADER=$p && return 0
    done
    return 1
}
if ! wait_for 60 "the container's systemd" find_leader; then
    tail -n 30 "$LOG"; echo "0 passed, 1 failed"; exit 1
fi
find_leader
wait_for 90 "the container to finish booting" \
    bash -c "nsenter -t $LEADER -a systemctl is-system-running | grep -Eq 'running|degraded'"
echo "booted in $((SECONDS - t0)) s (state: $(in_ct systemctl is-system-running))"

# --- 1. install: the postinst starts the service -----------------------------------------
t0=$SECONDS
if in_ct dpkg -i "/mnt/dist/$(basename "$DEB")" >"$CACHE/dpkg-i.log" 2>&1; then
    result OK "dpkg -i inside the booted container"
else
    cat "$CACHE/dpkg-i.log"; result FAIL "dpkg -i inside the booted container"
fi
if wait_for 60 "$UNIT active" bash -c "[ \"\$(nsenter -t $LEADER -a systemctl is-active $UNIT)\" = active ]"; then
    echo "active $((SECONDS - t0)) s after dpkg -i started"
fi
state="$(unit_prop ActiveState) ($(unit_prop SubState))"
type=$(unit_prop Type)
status_text=$(unit_prop StatusText)
main_pid=$(unit_prop MainPID)
user=$(in_ct ps -o user= -p "$main_pid" 2>/dev/null | tr -d ' ')
echo "state: $state, Type=$type, NotifyAccess=$(unit_prop NotifyAccess), WatchdogUSec=$(unit_prop WatchdogUSec), MainPID=$main_pid, user=$user"
echo "status text: $status_text"
in_ct systemctl --no-pager status "$UNIT" | head -n 12
if [ "$state" = "active (running)" ] && [ "$type" = notify ] && [ "$user" = mediasoup ]; then
    result OK "service active (running) as mediasoup; Type=notify, so systemd saw READY=1"
else
    in_ct journalctl --no-pager -u "$UNIT" | tail -n 30
    result FAIL "service active (running) as mediasoup through READY=1"
fi
[ -n "$status_text" ] && result OK "the server reports STATUS= ($status_text)" ||
    result FAIL "no STATUS= text from the server"
if in_ct curl -fsS -o /dev/null http://127.0.0.1:3000/readyz &&
    grep -q '^mediasoup_server_ready 1' <<<"$(in_ct curl -fsS http://127.0.0.1:9464/metrics)"; then
    result OK "/readyz 200 and mediasoup_server_ready 1 inside the container"
else
    result FAIL "/readyz or /metrics inside the container"
fi
# The media path under the unit's sandbox: a client joins like MediaSoupVTT and the worker
# creates both WebRTC transports; ws-join.py checks that their UDP ports are bound.
if in_ct python3 /mnt/ws-join.py 127.0.0.1 3000 nspawn-check; then
    result OK "a MediaSoupVTT-style join gets both WebRTC transports (worker binds its ports)"
else
    result FAIL "a MediaSoupVTT-style join inside the container"
fi
echo "the service's log so far:"
in_ct journalctl --no-pager -u "$UNIT" -o cat | sed 's/^/  | /'

# --- 2. watchdog -------------------------------------------------------------------------
restarts_before=$(unit_prop NRestarts)
t0=$SECONDS
in_ct kill -STOP "$main_pid"
echo "SIGSTOP sent to MainPID $main_pid (NRestarts=$restarts_before, WatchdogSec=30s)"
restarted() {
    local pid
    pid=$(unit_prop MainPID)
    [ "$(unit_prop NRestarts)" -gt "$restarts_before" ] && [ "$pid" != 0 ] && [ "$pid" != "$main_pid" ] &&
        [ "$(unit_prop ActiveState)" = active ]
}
if wait_for 120 "a watchdog restart" restarted; then
    echo "restarted $((SECONDS - t0)) s after SIGSTOP: NRestarts=$(unit_prop NRestarts), MainPID=$(unit_prop MainPID)"
    in_ct journalctl --no-pager -u "$UNIT" | grep -Ei 'watchdog|killing|scheduled restart' | tail -n 5
    if grep -q 'Watchdog timeout' <<<"$(in_ct journalctl --no-pager -u "$UNIT")"; then
        result OK "frozen process killed by the watchdog and restarted"
    else
        result FAIL "restarted, but the journal shows no watchdog timeout"
    fi
    if wait_for 30 "/readyz after the restart" in_ct curl -fsS -o /dev/null http://127.0.0.1:3000/readyz; then
        result OK "the restarted server answers /readyz"
    else
        result FAIL "the restarted server does not answer /readyz"
    fi
else
    in_ct journalctl --no-pager -u "$UNIT" | tail -n 20
    result FAIL "no watchdog restart within 120 s of SIGSTOP"
fi

# --- 3. purge under systemd --------------------------------------------------------------
if in_ct dpkg -P mediasoup-server >"$CACHE/dpkg-P.log" 2>&1 &&
    [ "$(in_ct systemctl is-active "$UNIT")" != active ] &&
    ! in_ct getent passwd mediasoup >/dev/null &&
    [ -z "$(in_ct find /etc /usr /var/lib -name '*mediasoup*' 2>/dev/null)" ]; then
    result OK "dpkg -P stops the service and leaves nothing named *mediasoup*"
else
    cat "$CACHE/dpkg-P.log"; in_ct find /etc /usr /var/lib -name '*mediasoup*'
    result FAIL "dpkg -P under systemd"
fi

shutdown_container
echo "wall time $((SECONDS - start_time)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
