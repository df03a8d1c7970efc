#!/usr/bin/env bash
# Checks the packaged systemd unit under a real systemd: boots a minimal Debian 12 root with
# systemd-nspawn (own network namespace: only its loopback), installs the .deb inside while
# systemd runs, and checks that
#   1. the postinst started the service and it reached active (running) through READY=1,
#      running as mediasoup, with /readyz and /metrics answering inside the container, and
#      a client joining like MediaSoupVTT gets both WebRTC transports (packaging/ws-join.py);
#   2. media flows through the sandboxed service: one WebRTC peer (aiortc driven by
#      pymediasoup, packaging/media-check.py) sends opus and VP8, another receives and
#      decodes them, and mediasoup_server_media_bytes_total grows in and out;
#   3. an upgrade (the same .deb repacked with a higher version) keeps an edited
#      /etc/mediasoup/server.env and restarts the service, which then runs with the edit;
#   4. a frozen process (SIGSTOP) is killed by the watchdog and restarted (NRestarts goes
#      up, a new main PID serves /readyz again);
#   5. a bad value in server.env stops it with exit status 78 and systemd does not restart
#      it (RestartPreventExitStatus=78);
#   6. a service that keeps failing (its port taken) is started StartLimitBurst times, then
#      systemd refuses to restart it ("Start request repeated too quickly") and leaves it
#      failed, also for a manual start, until reset-failed;
#   7. dpkg -P stops the service and removes the unit, the user and the configuration.
#
#   sudo bash packaging/nspawn-check.sh
#
# It installs what it needs: systemd-nspawn and debootstrap (apt), the .deb when
# packaging/.work/dist has none or an older one than target/release/mediasoup-server
# (packaging/build-packages.sh), a Debian 12 root (debootstrap) with the package's
# dependencies and a Python venv for media-check.py (pip, pinned in
# packaging/media-check.requirements.txt). All of that is cached in packaging/.work/nspawn/
# (git-ignored, about 450 MB); each run boots a throwaway overlay of it (--volatile=overlay).
# When this machine cannot run it (not root, no apt to install the tools, the Debian archive
# or PyPI unreachable while the cache is incomplete) it prints one "SKIPPED (reason)" line
# and exits 0. Otherwise it ends with "N passed, M failed" and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${NSPAWN_CHECK_CACHE:-$ROOT/packaging/.work/nspawn}
BASE=$CACHE/bookworm
RUN=$CACHE/run                       # bound read-only into the container at /mnt/run
DIST=$ROOT/packaging/.work/dist
REQUIREMENTS=$ROOT/packaging/media-check.requirements.txt
VENV=/opt/media-check                # inside the root
LOG=$CACHE/boot.log
UNIT=mediasoup-server.service
HOST_CA=/etc/ssl/certs/ca-certificates.crt

skip() { echo "nspawn-check.sh: SKIPPED ($*)"; exit 0; }

# The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org.
apt_mirror() {
    local m
    m=$(sed -n 's#^URIs: *\(https\?://[^ ]*/debian\)/\?$#\1#p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { sub(/\/$/, "", $2); print $2; exit }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null)
    echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${DEBIAN_MIRROR:-$(apt_mirror)}
PYPI=${PIP_INDEX_URL:-https://pypi.org/simple}

# --- can this machine run it? ------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root for debootstrap and systemd-nspawn; run: sudo bash packaging/nspawn-check.sh"
mkdir -p "$CACHE"
# One run at a time: the cached root is shared.
exec 9>"$CACHE/.lock"
flock -n 9 || { echo "another nspawn-check.sh holds $CACHE/.lock; waiting"; flock 9; }

if ! bash packaging/install-tools.sh nspawn >"$CACHE/install-tools.log" 2>&1; then
    command -v apt-get >/dev/null || skip "systemd-nspawn or debootstrap missing and no apt-get to install them"
    skip "could not install systemd-nspawn and debootstrap with apt (log: ${CACHE#"$ROOT"/}/install-tools.log)"
fi

# The root is complete when debootstrap finished, the package's dependencies are in it and
# the venv matches the requirements; otherwise the archives must be reachable.
deps_of() { dpkg-deb -f "$1" Depends | tr ',' '\n' | sed 's/[(|].*//; s/ //g' | grep -v '^$'; }
root_complete() {
    local d
    [ -f "$BASE/.debootstrap-complete" ] || return 1
    for d in "$@"; do chroot "$BASE" dpkg -s "$d" >/dev/null 2>&1 || return 1; done
    cmp -s "$REQUIREMENTS" "$BASE$VENV/requirements.txt"
}

# --- the .deb ----------------------------------------------------------------------------
DEB=$(ls -t "$DIST"/mediasoup-server_*.deb 2>/dev/null | head -n 1)
if [ -z "$DEB" ] || { [ -f target/release/mediasoup-server ] && [ target/release/mediasoup-server -nt "$DEB" ]; }; then
    echo "building the packages (packaging/build-packages.sh)"
    if ! bash packaging/build-packages.sh >"$CACHE/build-packages.log" 2>&1; then
        tail -n 20 "$CACHE/build-packages.log"
        echo "packaging/build-packages.sh failed (log: ${CACHE#"$ROOT"/}/build-packages.log)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    DEB=$(ls -t "$DIST"/mediasoup-server_*.deb | head -n 1)
fi

ROOT_PKGS=(systemd systemd-sysv dbus adduser curl procps iproute2 ca-certificates python3 python3-venv)
mapfile -t DEPS < <(deps_of "$DEB")
if ! root_complete "${ROOT_PKGS[@]}" "${DEPS[@]}"; then
    curl -fs --max-time 20 -o /dev/null "$MIRROR/dists/bookworm/Release" ||
        skip "the Debian archive $MIRROR is unreachable and the cached root ${BASE#"$ROOT"/} is incomplete"
    curl -fs --max-time 20 -o /dev/null "$PYPI/pymediasoup/" ||
        skip "the Python package index $PYPI is unreachable and the cached root ${BASE#"$ROOT"/} has no media-check venv"
fi

passed=0
failed=0
NSPAWN_PID=
LEADER=
start_time=$SECONDS

result() { # result OK|FAIL TEXT
    if [ "$1" = OK ]; then passed=$((passed + 1)); echo "ok   $2"; else failed=$((failed + 1)); echo "FAIL $2"; fi
}

# in_root COMMAND...: runs COMMAND in the cached root (not booted) with the host's network,
# to install into it.
in_root() {
    local -a ca=()
    [ -f "$HOST_CA" ] && ca=(--bind-ro="$HOST_CA:/run/host-ca.crt" --setenv=PIP_CERT=/run/host-ca.crt)
    systemd-nspawn --quiet --register=no --keep-unit --pipe --directory="$BASE" "${ca[@]}" \
        --setenv=DEBIAN_FRONTEND=noninteractive --setenv=PIP_INDEX_URL="$PYPI" \
        --setenv=PIP_DISABLE_PIP_VERSION_CHECK=1 "$@" </dev/null
}

# in_ct COMMAND...: runs COMMAND inside the booted container (all its namespaces).
in_ct() { nsenter -t "$LEADER" -a "$@"; }

unit_prop() { in_ct systemctl show -P "$1" "$UNIT"; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local limit=$1 deadline=$((SECONDS + $1)) what=$2
    shift 2
    while [ $SECONDS -lt $deadline ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "timed out after $limit s waiting for: $what" >&2
    return 1
}

is_active() { [ "$(in_ct systemctl is-active "$UNIT")" = active ]; }
readyz() { in_ct curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:3000/readyz; }

shutdown_container() {
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        [ -n "$LEADER" ] && in_ct systemctl poweroff >/dev/null 2>&1
        wait_for 30 "container poweroff" bash -c "! kill -0 $NSPAWN_PID" || kill -KILL "$NSPAWN_PID"
        wait "$NSPAWN_PID" 2>/dev/null
    fi
    NSPAWN_PID=
}
trap shutdown_container EXIT
trap 'exit 130' INT TERM    # so that the EXIT trap powers the container off

# --- the cached root ---------------------------------------------------------------------
t0=$SECONDS
if [ ! -f "$BASE/.debootstrap-complete" ]; then    # absent too after an interrupted debootstrap
    echo "creating the Debian 12 root in ${BASE#"$ROOT"/} (debootstrap from $MIRROR, once)"
    rm -rf "$BASE"
    debootstrap --variant=minbase --include="$(IFS=,; echo "${ROOT_PKGS[*]}")" \
        bookworm "$BASE" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -n 20 "$CACHE/debootstrap.log"; echo "debootstrap failed (log: $CACHE/debootstrap.log)"; echo "0 passed, 1 failed"; exit 1; }
    touch "$BASE/.debootstrap-complete"
fi
missing=()
for d in "${ROOT_PKGS[@]}" "${DEPS[@]}"; do chroot "$BASE" dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "adding to the cached root: ${missing[*]}"
    { in_root apt-get update -qq && in_root apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$CACHE/apt.log" 2>&1 ||
        { tail -n 20 "$CACHE/apt.log"; echo "could not install ${missing[*]} into the cached root"; echo "0 passed, 1 failed"; exit 1; }
fi
# The downloaded .debs and package lists are not needed to boot it (about 200 MB).
rm -rf "$BASE"/var/cache/apt/archives/*.deb "$BASE"/var/lib/apt/lists/*_dists_*
if ! cmp -s "$REQUIREMENTS" "$BASE$VENV/requirements.txt"; then
    echo "creating the media-check venv in the cached root (pip: aiortc, pymediasoup)"
    rm -rf "${BASE:?}$VENV"
    { in_root python3 -m venv "$VENV" &&
        in_root --bind-ro="$REQUIREMENTS:/run/requirements.txt" \
            "$VENV/bin/pip" install --quiet --only-binary=:all: -r /run/requirements.txt; } \
        >"$CACHE/pip.log" 2>&1 ||
        { tail -n 20 "$CACHE/pip.log"; echo "could not install the media-check venv"; echo "0 passed, 1 failed"; exit 1; }
    cp "$REQUIREMENTS" "$BASE$VENV/requirements.txt"   # marks the venv complete
fi

# What the container reads: the .deb, the same .deb repacked with a higher version (for the
# upgrade check; rebuilt only when the .deb changes) and the client scripts.
VERSION=$(dpkg-deb -f "$DEB" Version)
UP_VERSION=$VERSION+upgradecheck1
sum=$(sha256sum "$DEB" | cut -d' ' -f1)
if [ "$(cat "$CACHE/upgrade.deb.source" 2>/dev/null)" != "$sum" ] || [ ! -f "$CACHE/upgrade.deb" ]; then
    tmp=$(mktemp -d)
    dpkg-deb -R "$DEB" "$tmp/pkg" &&
        sed -i "s/^Version: .*/Version: $UP_VERSION/" "$tmp/pkg/DEBIAN/control" &&
        dpkg-deb -Znone -b "$tmp/pkg" "$CACHE/upgrade.deb" >/dev/null &&
        echo "$sum" >"$CACHE/upgrade.deb.source" || echo "could not repack $DEB with version $UP_VERSION"
    rm -rf "$tmp"
fi
rm -rf "$RUN"
mkdir -p "$RUN"
cp "$DEB" "$RUN/current.deb"
cp "$CACHE/upgrade.deb" "$RUN/upgrade.deb" 2>/dev/null
cp packaging/ws-join.py packaging/media-check.py "$RUN/"
echo "root ready in $((SECONDS - t0)) s"

# --- boot --------------------------------------------------------------------------------
t0=$SECONDS
# --volatile=overlay: the cached root stays read-only under a tmpfs overlay thrown away at
# exit, so every run starts from the same state and the cache is never modified.
systemd-nspawn --quiet --directory="$BASE" --volatile=overlay --boot --register=no --keep-unit \
    --private-network --machine=mediasoup-check --bind-ro="$RUN:/mnt/run" >"$LOG" 2>&1 </dev/null &
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
# The container's network namespace has only its loopback. Give it what a host has: an
# address on the default route (on lo here, so that nothing leaves the container). The
# server announces it (MEDIASOUP_ANNOUNCED_IP is unset in the packaged server.env) and the
# WebRTC clients of check 2 gather it as their own candidate.
LAN_IP=10.99.0.2
in_ct ip addr add "$LAN_IP/32" dev lo && in_ct ip route add default dev lo ||
    echo "could not add $LAN_IP and a default route in the container"

# --- 1. install: the postinst starts the service -----------------------------------------
echo; echo "== 1. install"
t0=$SECONDS
if in_ct dpkg -i /mnt/run/current.deb >"$CACHE/dpkg-i.log" 2>&1; then
    result OK "dpkg -i inside the booted container"
else
    cat "$CACHE/dpkg-i.log"; result FAIL "dpkg -i inside the booted container"
fi
if wait_for 60 "$UNIT active" is_active; then
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
if readyz && grep -q '^mediasoup_server_ready 1' <<<"$(in_ct curl -fsS http://127.0.0.1:9464/metrics)"; then
    result OK "/readyz 200 and mediasoup_server_ready 1 inside the container"
else
    result FAIL "/readyz or /metrics inside the container"
fi
# A client joins like MediaSoupVTT and the worker creates both WebRTC transports;
# ws-join.py checks that their UDP ports are bound.
if in_ct python3 /mnt/run/ws-join.py 127.0.0.1 3000 nspawn-check; then
    result OK "a MediaSoupVTT-style join gets both WebRTC transports (worker binds its ports)"
else
    result FAIL "a MediaSoupVTT-style join inside the container"
fi

# --- 2. media through the hardened service -----------------------------------------------
echo; echo "== 2. media"
if grep -q "announced=\"$LAN_IP\"" <<<"$(in_ct journalctl --no-pager -u "$UNIT" -o cat)"; then
    result OK "with MEDIASOUP_ANNOUNCED_IP unset the server announces the default route's address ($LAN_IP)"
else
    result FAIL "the server did not log announced=\"$LAN_IP\" (the default route's address)"
fi
t0=$SECONDS
if in_ct "$VENV/bin/python" /mnt/run/media-check.py 127.0.0.1 3000 nspawn-media \
    http://127.0.0.1:9464/metrics 2>&1; then
    result OK "audio and video RTP from one WebRTC peer reach another through the service ($((SECONDS - t0)) s)"
else
    in_ct journalctl --no-pager -u "$UNIT" -o cat | tail -n 20
    result FAIL "media between two WebRTC peers through the service"
fi
echo "the service's log so far:"
in_ct journalctl --no-pager -u "$UNIT" -o cat | sed 's/^/  | /'

# --- 3. upgrade keeps the edited configuration -------------------------------------------
echo; echo "== 3. upgrade $VERSION -> $UP_VERSION"
ENV_FILE=/etc/mediasoup/server.env
in_ct cp "$ENV_FILE" /root/server.env.packaged
# An administrator's edit: a comment and a setting the restarted server must then run with.
in_ct sh -c "printf '%s\n' '# edited by nspawn-check' 'MEDIASOUP_STATS_INTERVAL_SECS=7' >>$ENV_FILE"
edited=$(in_ct sha256sum "$ENV_FILE")
pid_before=$(unit_prop MainPID)
if [ ! -f "$RUN/upgrade.deb" ]; then
    result FAIL "no upgrade .deb to install"
elif ! in_ct dpkg -i /mnt/run/upgrade.deb >"$CACHE/dpkg-upgrade.log" 2>&1; then
    cat "$CACHE/dpkg-upgrade.log"; result FAIL "dpkg -i of version $UP_VERSION over $VERSION"
else
    new_version=$(in_ct dpkg-query -W -f='${Version}' mediasoup-server)
    leftovers=$(in_ct sh -c "ls $ENV_FILE.* 2>/dev/null")
    echo "installed version: $new_version; server.env $( [ "$(in_ct sha256sum "$ENV_FILE")" = "$edited" ] && echo unchanged || echo CHANGED)${leftovers:+; also: $leftovers}"
    if [ "$new_version" = "$UP_VERSION" ] && [ "$(in_ct sha256sum "$ENV_FILE")" = "$edited" ] && [ -z "$leftovers" ]; then
        result OK "dpkg upgrade keeps the edited $ENV_FILE (no prompt, no .dpkg-* copies)"
    else
        in_ct tail -n 3 "$ENV_FILE"; result FAIL "dpkg upgrade did not keep the edited $ENV_FILE"
    fi
    restarted_with_edit() {
        local pid
        pid=$(unit_prop MainPID)
        [ "$pid" != 0 ] && [ "$pid" != "$pid_before" ] && is_active &&
            in_ct grep -qz '^MEDIASOUP_STATS_INTERVAL_SECS=7$' "/proc/$pid/environ"
    }
    if wait_for 60 "the service restarted by the upgrade" restarted_with_edit && wait_for 30 "/readyz" readyz; then
        result OK "the upgrade restarted the service (MainPID $pid_before -> $(unit_prop MainPID)), running with the edited setting, /readyz 200"
    else
        echo "MainPID before $pid_before, now $(unit_prop MainPID), state $(unit_prop ActiveState)"
        in_ct journalctl --no-pager -u "$UNIT" | tail -n 15
        result FAIL "the service was not restarted with the kept configuration after the upgrade"
    fi
fi

# --- 4. watchdog -------------------------------------------------------------------------
echo; echo "== 4. watchdog"
main_pid=$(unit_prop MainPID)
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
    if wait_for 30 "/readyz after the restart" readyz; then
        result OK "the restarted server answers /readyz"
    else
        result FAIL "the restarted server does not answer /readyz"
    fi
else
    in_ct journalctl --no-pager -u "$UNIT" | tail -n 20
    result FAIL "no watchdog restart within 120 s of SIGSTOP"
fi

# --- 5. exit status 78 is not restarted --------------------------------------------------
echo; echo "== 5. bad configuration: exit status 78"
in_ct cp /root/server.env.packaged "$ENV_FILE"
in_ct sh -c "echo MEDIASOUP_NUM_WORKERS=several >>$ENV_FILE"
in_ct systemctl reset-failed "$UNIT"
if in_ct systemctl restart "$UNIT" 2>/dev/null; then
    echo "systemctl restart succeeded with MEDIASOUP_NUM_WORKERS=several"
fi
# Wait well past RestartSec=2s: a restart, if any, would have happened by then.
sleep 6
bad="ActiveState=$(unit_prop ActiveState) Result=$(unit_prop Result) ExecMainStatus=$(unit_prop ExecMainStatus) NRestarts=$(unit_prop NRestarts)"
echo "$bad"
in_ct journalctl --no-pager -u "$UNIT" -n 6 -o cat | sed 's/^/  | /'
journal=$(in_ct journalctl --no-pager -u "$UNIT" -n 20 -o cat)
if [ "$bad" = "ActiveState=failed Result=exit-code ExecMainStatus=78 NRestarts=0" ]; then
    result OK "exit status 78 leaves the unit failed and not restarted (NRestarts=0 6 s later; RestartSec=2s)"
else
    result FAIL "exit status 78: expected ActiveState=failed Result=exit-code ExecMainStatus=78 NRestarts=0"
fi
if grep -q 'MEDIASOUP_NUM_WORKERS' <<<"$journal"; then
    result OK "the journal names the bad variable"
else
    result FAIL "the journal does not name MEDIASOUP_NUM_WORKERS"
fi
in_ct cp /root/server.env.packaged "$ENV_FILE"

# --- 6. the start limit ------------------------------------------------------------------
echo; echo "== 6. start limit"
burst=$(unit_prop StartLimitBurst)
echo "StartLimitBurst=$burst StartLimitIntervalUSec=$(unit_prop StartLimitIntervalUSec) RestartUSec=$(unit_prop RestartUSec)"
# Something else holds the signaling port, so every start fails with exit status 1.
in_ct systemd-run --quiet --unit=port-taker python3 -c \
    'import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 3000)); s.listen(); time.sleep(3600)'
wait_for 10 "port 3000 taken" in_ct python3 -c 'import socket; socket.create_connection(("127.0.0.1", 3000), 1)'
in_ct systemctl reset-failed "$UNIT"    # also clears the start counter of the checks before
since=$(date +%s)
t0=$SECONDS
# journal_count PATTERN: lines of the unit's journal since this check started that match.
journal_count() { in_ct journalctl --no-pager -u "$UNIT" --since "@$since" -o cat | grep -c "$1"; }
REFUSED='Start request repeated too quickly'
in_ct systemctl restart "$UNIT" 2>/dev/null
# systemd 252 reports the refused restart in the journal only: the unit stays failed with
# Result=exit-code (the last real failure), not start-limit-hit.
if wait_for 120 "systemd to refuse a restart" bash -c "[ \$(nsenter -t $LEADER -a journalctl -u $UNIT --since @$since -o cat | grep -c '$REFUSED') -ge 1 ]"; then
    echo "restarts refused $((SECONDS - t0)) s after the first start"
fi
restarts=$(unit_prop NRestarts)
sleep 5    # more than RestartSec=2s: a restart, if any, would show
starts=$(journal_count '^Starting ')
state="ActiveState=$(unit_prop ActiveState) SubState=$(unit_prop SubState) NRestarts=$(unit_prop NRestarts)"
echo "$state (Result=$(unit_prop Result)); starts: $starts; '$REFUSED': $(journal_count "$REFUSED")"
in_ct journalctl --no-pager -u "$UNIT" -n 4 -o cat | sed 's/^/  | /'
if [ "$state" = "ActiveState=failed SubState=failed NRestarts=$restarts" ] && [ "$starts" = "$burst" ] &&
    [ "$(journal_count "$REFUSED")" = 1 ]; then
    result OK "a failing service is started StartLimitBurst=$burst times, then systemd gives up and leaves it failed"
else
    result FAIL "start limit: expected $burst starts, one refused restart, then failed for good"
fi
before=$(journal_count "$REFUSED")
if in_ct systemctl start "$UNIT" 2>/dev/null; then
    refused=no
else
    refused=$([ "$(journal_count "$REFUSED")" -gt "$before" ] && [ "$(journal_count '^Starting ')" = "$starts" ] && echo yes)
fi
in_ct systemctl stop port-taker
if [ "$refused" = yes ] && in_ct systemctl reset-failed "$UNIT" && in_ct systemctl start "$UNIT" &&
    wait_for 30 "/readyz" readyz; then
    result OK "systemctl start is refused ('$REFUSED') until reset-failed; then the service starts and is ready"
else
    echo "systemctl start refused by the start limit before reset-failed: ${refused:-no}"
    result FAIL "start after the start limit: refused before reset-failed, works after"
fi

# --- 7. purge under systemd --------------------------------------------------------------
echo; echo "== 7. purge"
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
echo
echo "wall time $((SECONDS - start_time)) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
