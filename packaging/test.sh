#!/usr/bin/env bash
# Checks everything mediasoup-server ships besides the server itself: the systemd unit,
# the .deb and .rpm packages (built from the existing release binary), the Prometheus
# alert rules and the Grafana dashboards. Installs the tools it needs when missing.
#
#   bash packaging/test.sh
#
# MEDIASOUP_SERVER_BIN overrides the binary started for the metrics scrape (default
# target/release/mediasoup-server). The .deb round trip installs the package on this
# machine with dpkg and purges it again; it refuses to run when mediasoup-server is
# installed from elsewhere. Ends with "N passed, M failed"; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/packaging/.work/test
PY=/usr/bin/python3
BIN=${MEDIASOUP_SERVER_BIN:-$ROOT/target/release/mediasoup-server}
DIST=$ROOT/packaging/.work/dist
ALERTS=(MediasoupServerDown MediasoupServerNotReady MediasoupWorkerDied MediasoupJoinsFailing
        MediasoupNoInboundMedia MediasoupPoorMediaQuality MediasoupWorkerSaturated
        MediasoupServerRestartLoop MediasoupRecordingFailing)
# README ("systemd unit and watchdog") promises this rating; a unit change that raises it
# must update the README too.
MAX_EXPOSURE=1.1

# Each check runs in a subshell, so what must outlive it is kept in files: the pid of a
# server it started, the overlay it mounted, and a marker while the .deb is installed.
SERVER_PIDFILE=$WORK/server.pid
OVERLAY_FILE=$WORK/overlay.path
INSTALLED_MARK=$ROOT/packaging/.work/installed-by-test
GROUP_MARK=$ROOT/packaging/.work/group-added-by-test
passed=0
failed=0

cleanup() {
    if [ -f "$SERVER_PIDFILE" ]; then kill -KILL "$(cat "$SERVER_PIDFILE")" 2>/dev/null; fi
    if [ -f "$OVERLAY_FILE" ]; then
        umount "$(cat "$OVERLAY_FILE")" 2>/dev/null
        rm -rf "$(dirname "$(cat "$OVERLAY_FILE")")"
    fi
    if [ -f "$INSTALLED_MARK" ]; then dpkg -P mediasoup-server >/dev/null 2>&1 && rm -f "$INSTALLED_MARK"; fi
    if [ -f "$GROUP_MARK" ]; then groupdel mediasoup 2>/dev/null; rm -f "$GROUP_MARK"; fi
}
trap cleanup EXIT
rm -f "$SERVER_PIDFILE"   # a pid from an earlier run may belong to another process by now
cleanup
rm -rf "$WORK"
mkdir -p "$WORK/logs"

# check NAME COMMAND...: runs one check in a subshell (fail exits it), its output kept in
# packaging/.work/test/logs/.
check() {
    local name=$1 n log t0=$SECONDS
    shift
    n=$((passed + failed + 1))
    log=$WORK/logs/$(printf %02d "$n")-$(echo "$name" | tr -c 'A-Za-z0-9\n' '-' | cut -c1-50).log
    if ("$@") >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "ok   $n $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        echo "FAIL $n $name ($((SECONDS - t0)) s; log: ${log#"$ROOT"/})"
        tail -n 25 "$log" | sed 's/^/     | /'
    fi
}

fail() { echo "$*" >&2; exit 1; }
# grep over a command's whole output, which also goes to the check's log. Never `cmd | grep -q`
# under pipefail: grep -q exits at the first match, the writer dies of SIGPIPE and the pipeline
# fails at random (it failed a CI run on the README's runbook headings).
logged_grep() { local out; out=$(cat); echo "$out" >&2; grep "$@" <<<"$out"; }

# --- tools -----------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
    echo "packaging/test.sh needs root (dpkg -i/-P, useradd, mount for the rpm overlay)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
bash packaging/install-tools.sh build test || { echo "0 passed, 1 failed"; exit 1; }

# --- systemd unit ------------------------------------------------------------------------
UNIT=systemd/mediasoup-server.service

unit_settings() {
    local want missing=0
    # The values the README promises ("systemd unit and watchdog"); packaging/nspawn-check.sh
    # checks that a real systemd behaves as they say.
    for want in 'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30s' 'Restart=on-failure' \
        'RestartSec=2s' 'TimeoutStartSec=60s' 'StartLimitIntervalSec=10min' 'StartLimitBurst=5' \
        'RestartPreventExitStatus=78' 'EnvironmentFile=/etc/mediasoup/server.env' \
        'User=mediasoup' 'Group=mediasoup' 'LimitNOFILE=65536' 'NoNewPrivileges=yes' \
        'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' \
        'ProtectKernelTunables=yes' 'ProtectKernelModules=yes' 'ProtectKernelLogs=yes' \
        'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' 'RestrictNamespaces=yes' \
        'LockPersonality=yes' 'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' \
        'WantedBy=multi-user.target'; do
        grep -qxF "$want" "$UNIT" || { echo "missing: $want"; missing=1; }
    done
    return $missing
}
check "unit has the required service settings" unit_settings

exposure() {
    local tmp score
    tmp=$(mktemp -d)
    # ExecStart must exist for the offline analysis; point it at a binary that does.
    sed 's#^ExecStart=.*#ExecStart=/bin/true#' "$UNIT" >"$tmp/mediasoup-server.service"
    systemd-analyze security --offline=yes "$tmp/mediasoup-server.service" | tail -n 1
    score=$(systemd-analyze security --offline=yes "$tmp/mediasoup-server.service" \
        | sed -n 's/.*Overall exposure level for mediasoup-server.service: \([0-9.]*\).*/\1/p')
    rm -rf "$tmp"
    [ -n "$score" ] || fail "no exposure score in the output"
    echo "exposure score $score (limit $MAX_EXPOSURE)"
    awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
}
check "unit exposure score (systemd-analyze security --offline=yes) <= $MAX_EXPOSURE" exposure

# --- packages ----------------------------------------------------------------------------
check "packages build (cargo deb --no-build, cargo generate-rpm)" bash packaging/build-packages.sh
DEB=$(ls "$DIST"/mediasoup-server_*.deb 2>/dev/null | head -n 1)
RPM=$(ls "$DIST"/mediasoup-server-*.rpm 2>/dev/null | head -n 1)

lintian_clean() {
    [ -f "$DEB" ] || fail "no .deb was built"
    lintian --fail-on error --display-info "$DEB"
}
check "lintian reports no errors" lintian_clean

rpmlint_clean() {
    local out
    [ -f "$RPM" ] || fail "no .rpm was built"
    out=$(rpmlint -c packaging/rpmlint.toml "$RPM" 2>&1)
    echo "$out"
    echo "$out" | grep -Eq '[^0-9]0 errors' || fail "rpmlint reported errors"
}
check "rpmlint reports no errors" rpmlint_clean

deb_contents() {
    local f listing
    [ -f "$DEB" ] || fail "no .deb was built"
    listing=$(dpkg-deb -c "$DEB" | awk '{print $6}')
    for f in ./usr/bin/mediasoup-server ./usr/lib/systemd/system/mediasoup-server.service \
        ./etc/mediasoup/server.env ./usr/lib/sysctl.d/60-mediasoup-server.conf \
        ./usr/share/man/man8/mediasoup-server.8.gz ./usr/share/doc/mediasoup-server/copyright \
        ./usr/share/lintian/overrides/mediasoup-server \
        ./usr/share/doc/mediasoup-server/README.md \
        ./usr/share/doc/mediasoup-server/changelog.Debian.gz \
        ./usr/share/mediasoup-server/alerts/mediasoup-server.rules.yml \
        ./usr/share/mediasoup-server/alerts/prometheus.example.yml \
        ./usr/share/mediasoup-server/dashboards/provisioning/mediasoup-server.yaml \
        ./usr/share/mediasoup-server/dashboards/mediasoup-server-overview.json \
        ./usr/share/mediasoup-server/dashboards/mediasoup-server-media-quality.json \
        ./usr/share/mediasoup-server/dashboards/mediasoup-server-capacity.json; do
        grep -qxF "$f" <<<"$listing" || fail "$f is not in the .deb"
    done
    dpkg-deb -f "$DEB" Depends | logged_grep -q adduser || fail "Depends lacks adduser"
    [ "$(dpkg-deb --ctrl-tarfile "$DEB" | tar -xOf - ./conffiles)" = /etc/mediasoup/server.env ] ||
        fail "conffiles is not exactly /etc/mediasoup/server.env"
    cmp <(dpkg-deb --fsys-tarfile "$DEB" | tar -xOf - ./etc/mediasoup/server.env) .env.example ||
        fail "the packaged server.env differs from .env.example"
}
check ".deb holds the binary, unit, conffile, sysctl file, docs, dashboards and rules" deb_contents

# --- .deb round trip on this machine -----------------------------------------------------
paths_named_mediasoup() {
    find /etc /usr /var/lib /run -xdev -name '*mediasoup*' 2>/dev/null | sort
    grep -h '^mediasoup:' /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>/dev/null
}

# start_packaged_server ENVFILE: starts /usr/bin/mediasoup-server as the mediasoup user
# with the variables of ENVFILE (parsed as systemd's EnvironmentFile= would), on free
# loopback ports.
start_packaged_server() {
    local -a vars
    mapfile -d '' vars < <($PY packaging/checks.py env-file "$1")
    HTTP_PORT=$($PY packaging/checks.py free-port)
    METRICS_PORT=$($PY packaging/checks.py free-port)
    RTC_MIN=$((20000 + RANDOM % 20000))
    (cd / && exec setpriv --reuid=mediasoup --regid=mediasoup --init-groups \
        env -i PATH=/usr/bin:/bin "${vars[@]}" \
        MEDIASOUP_LISTEN_ADDR="127.0.0.1:$HTTP_PORT" \
        MEDIASOUP_METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
        MEDIASOUP_ANNOUNCED_IP=127.0.0.1 \
        MEDIASOUP_RTC_MIN_PORT="$RTC_MIN" MEDIASOUP_RTC_MAX_PORT="$((RTC_MIN + 100))" \
        /usr/bin/mediasoup-server) >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    echo "$SERVER_PID" >"$SERVER_PIDFILE"
}

# wait_http URL SECONDS: polls until URL answers 200, or fails with the server's log.
wait_http() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG"; fail "the server exited before $1 answered"; }
        sleep 0.2
    done
    cat "$SERVER_LOG"
    fail "$1 did not answer 200 within $2 s"
}

# stop_server: SIGTERM, then the exit status must be 0 within 15 s.
stop_server() {
    local pid=$SERVER_PID status deadline=$((SECONDS + 15))
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fail "no exit within 15 s of SIGTERM"; fi
    wait "$pid"
    status=$?
    rm -f "$SERVER_PIDFILE"
    [ "$status" -eq 0 ] || fail "exit status $status after SIGTERM (expected 0)"
}

deb_install() {
    local before entry status
    [ -f "$DEB" ] || fail "no .deb was built"
    status=$(dpkg-query -W -f='${db:Status-Status}' mediasoup-server 2>/dev/null)
    if [ -n "$status" ] && [ "$status" != not-installed ]; then
        fail "mediasoup-server is already installed on this machine (not by this test); not touching it"
    fi
    getent passwd mediasoup >/dev/null && fail "a mediasoup user exists before the install"
    paths_named_mediasoup >"$WORK/before-install.txt"
    touch "$INSTALLED_MARK"
    dpkg -i "$DEB" || fail "dpkg -i failed"
    entry=$(getent passwd mediasoup) || fail "postinst created no mediasoup user"
    echo "user: $entry"
    [ "$(echo "$entry" | cut -d: -f3)" -lt 1000 ] || fail "mediasoup is not a system user"
    [ "$(echo "$entry" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "mediasoup can log in"
    getent group mediasoup || fail "no mediasoup group"
    for f in /usr/bin/mediasoup-server /etc/mediasoup/server.env \
        /usr/lib/systemd/system/mediasoup-server.service /usr/lib/sysctl.d/60-mediasoup-server.conf \
        /usr/share/mediasoup-server/alerts/mediasoup-server.rules.yml; do
        [ -f "$f" ] || fail "$f not installed"
    done
    dpkg-query -W -f='${Conffiles}\n' mediasoup-server |
        logged_grep -q '^ /etc/mediasoup/server.env [0-9a-f]\{32\}$' || fail "server.env is not a conffile"
    [ -L /etc/systemd/system/multi-user.target.wants/mediasoup-server.service ] ||
        fail "deb-systemd-helper did not enable the unit"
}
check ".deb installs with dpkg -i: user, files, conffile, unit enabled" deb_install

installed_unit_verifies() {
    local out
    [ -f /usr/lib/systemd/system/mediasoup-server.service ] || fail "package not installed"
    out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/mediasoup-server.service 2>&1)
    local rc=$?
    echo "$out"
    [ $rc -eq 0 ] || fail "systemd-analyze verify failed"
    ! grep -qi 'unknown\|ignoring' <<<"$out" || fail "systemd-analyze verify warned"
}
check "installed unit passes systemd-analyze verify" installed_unit_verifies

packaged_server_answers() {
    [ -x /usr/bin/mediasoup-server ] || fail "package not installed"
    SERVER_LOG=$WORK/packaged-server.log
    start_packaged_server /etc/mediasoup/server.env
    wait_http "http://127.0.0.1:$HTTP_PORT/healthz" 30
    echo "healthz: 200"
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/packaged-metrics.txt" ||
        fail "/metrics did not answer"
    grep -q '^mediasoup_server_build_info{' "$WORK/packaged-metrics.txt" ||
        fail "/metrics has no mediasoup_server_build_info"
    [ "$(ps -o user= -p "$SERVER_PID")" = mediasoup ] || fail "the server does not run as mediasoup"
    stop_server
    echo "SIGTERM -> exit 0"
}
check "packaged binary as user mediasoup with the packaged env answers /healthz and /metrics" packaged_server_answers

installed_prometheus_files() {
    [ -f /usr/share/mediasoup-server/alerts/prometheus.example.yml ] || fail "package not installed"
    promtool check config /usr/share/mediasoup-server/alerts/prometheus.example.yml
}
check "installed prometheus.example.yml and its rule file pass promtool check config" installed_prometheus_files

deb_remove_purge() {
    [ -f "$INSTALLED_MARK" ] || fail "package not installed by this run"
    dpkg -r mediasoup-server || fail "dpkg -r failed"
    [ -f /etc/mediasoup/server.env ] || fail "dpkg -r removed the conffile"
    getent passwd mediasoup >/dev/null || fail "dpkg -r removed the user (only purge may)"
    [ ! -e /usr/bin/mediasoup-server ] || fail "dpkg -r left the binary"
    dpkg -P mediasoup-server || fail "dpkg -P failed"
    rm -f "$INSTALLED_MARK"
    paths_named_mediasoup >"$WORK/after-purge.txt"
    diff -u "$WORK/before-install.txt" "$WORK/after-purge.txt" || fail "dpkg -P left the lines marked + above"
    echo "nothing named *mediasoup* left in /etc /usr /var/lib /run, passwd, group, shadow, gshadow"
}
check ".deb dpkg -r keeps conffile and user, dpkg -P leaves nothing behind" deb_remove_purge

# An administrator's own mediasoup group is used, and survives the purge with its gid.
deb_purge_keeps_existing_group() {
    local gid
    [ -f "$DEB" ] || fail "no .deb was built"
    getent group mediasoup >/dev/null && fail "a mediasoup group exists already"
    touch "$GROUP_MARK"
    groupadd --system mediasoup
    gid=$(getent group mediasoup | cut -d: -f3)
    touch "$INSTALLED_MARK"
    dpkg -i "$DEB" >/dev/null || fail "dpkg -i failed"
    [ "$(id -g mediasoup)" = "$gid" ] || fail "the user is not in the existing group $gid"
    dpkg -P mediasoup-server >/dev/null || fail "dpkg -P failed"
    rm -f "$INSTALLED_MARK"
    getent passwd mediasoup && fail "dpkg -P left the user"
    [ "$(getent group mediasoup | cut -d: -f3)" = "$gid" ] || fail "dpkg -P did not keep group mediasoup ($gid)"
    echo "user removed, group mediasoup kept with gid $gid"
    groupdel mediasoup
    rm -f "$GROUP_MARK"
}
check ".deb dpkg -P keeps a mediasoup group that existed before the install" deb_purge_keeps_existing_group

# --- .rpm ------------------------------------------------------------------------------
rpm_files() {
    [ -f "$RPM" ] || fail "no .rpm was built"
    rpm -qlp "$RPM" 2>/dev/null | sort >"$WORK/rpm-files.txt"
    cat "$WORK/rpm-files.txt"
    diff -u - "$WORK/rpm-files.txt" <<'EOF' || fail "the .rpm file list differs from the expected one"
/etc/mediasoup/server.env
/usr/bin/mediasoup-server
/usr/lib/sysctl.d/60-mediasoup-server.conf
/usr/lib/systemd/system/mediasoup-server.service
/usr/share/doc/mediasoup-server/README.md
/usr/share/licenses/mediasoup-server/LICENSE
/usr/share/man/man8/mediasoup-server.8.gz
/usr/share/mediasoup-server/alerts/mediasoup-server.rules.yml
/usr/share/mediasoup-server/alerts/prometheus.example.yml
/usr/share/mediasoup-server/dashboards/mediasoup-server-capacity.json
/usr/share/mediasoup-server/dashboards/mediasoup-server-media-quality.json
/usr/share/mediasoup-server/dashboards/mediasoup-server-overview.json
/usr/share/mediasoup-server/dashboards/provisioning/mediasoup-server.yaml
EOF
    [ "$(rpm -qcp "$RPM" 2>/dev/null)" = /etc/mediasoup/server.env ] || fail "rpm -qcp is not exactly /etc/mediasoup/server.env"
    rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null |
        logged_grep -qx 'cn /etc/mediasoup/server.env' || fail "server.env is not %config(noreplace)"
    rpm -qp --requires "$RPM" 2>/dev/null | logged_grep -qx 'shadow-utils' ||
        fail "the .rpm does not require shadow-utils (useradd)"
    rpm2cpio "$RPM" | (cd "$WORK" && cpio -idm --quiet ./usr/bin/mediasoup-server)
    file "$WORK/usr/bin/mediasoup-server" | logged_grep -q ', stripped' ||
        fail "the .rpm binary is not stripped"
}
check ".rpm file list, %config(noreplace), requires, stripped binary (rpm -qlp, -qcp)" rpm_files

rpm_scriptlets() {
    local s
    [ -f "$RPM" ] || fail "no .rpm was built"
    s=$(rpm -qp --scripts "$RPM" 2>/dev/null)
    echo "$s"
    grep -q '^preinstall scriptlet' <<<"$s" || fail "no %pre"
    grep -q 'useradd --system --gid mediasoup' <<<"$s" || fail "%pre does not create the user"
    grep -q '^postinstall scriptlet' <<<"$s" || fail "no %post"
    grep -q 'systemctl --no-reload enable mediasoup-server.service' <<<"$s" || fail "%post does not enable the unit"
    grep -q 'systemctl daemon-reload' <<<"$s" || fail "no daemon-reload"
    grep -q '^preuninstall scriptlet' <<<"$s" || fail "no %preun"
    grep -q 'disable --now mediasoup-server.service' <<<"$s" || fail "%preun does not stop and disable the unit"
    grep -q '^postuninstall scriptlet' <<<"$s" || fail "no %postun"
    grep -q 'try-restart mediasoup-server.service' <<<"$s" || fail "%postun does not restart on upgrade"
    grep -q 'rmdir "$dir"' <<<"$s" || fail "%postun does not remove the emptied directories"
}
check ".rpm scriptlets (rpm -qp --scripts)" rpm_scriptlets

# The scriptlets really run in an overlay over / (the host stays untouched): install
# creates the user and group and enables the unit; an upgrade to a newer release keeps the
# edited server.env and writes the changed packaged one as server.env.rpmnew; erase
# disables the unit, saves the edited server.env as .rpmsave, removes the files and keeps
# the user and group.
# The newer release: the same package, release 2, its server.env with one more comment line.
build_upgrade_rpm() {
    local dir=$WORK/rpm-upgrade
    rm -rf "$dir"
    mkdir -p "$dir"
    { cat .env.example; echo "# (a line added by the newer release)"; } >"$dir/server.env"
    # Cargo.toml's rpm metadata with release 2 and the changed server.env (sed, not tomllib,
    # which Ubuntu 22.04's python3 lacks).
    sed -n '/^\[package\.metadata\.generate-rpm\]$/,/^\[/{/^\[/d;p;}' Cargo.toml |
        sed "s#^release = .*#release = \"2\"#; s#source = \".env.example\"#source = \"$dir/server.env\"#" \
        >"$dir/metadata.toml"
    grep -q "^release = \"2\"" "$dir/metadata.toml" && grep -qF "source = \"$dir/server.env\"" "$dir/metadata.toml" ||
        { cat "$dir/metadata.toml" >&2; echo "could not derive the release-2 rpm metadata from Cargo.toml" >&2; return 1; }
    # Uncompressed: zstd takes a minute on a busy 2-core machine, and this one is never shipped.
    cargo generate-rpm --metadata-overwrite "$dir/metadata.toml" --payload-compress none --output "$dir/" >&2 || return 1
    ls "$dir"/mediasoup-server-*-2.*.rpm
}

rpm_overlay_round_trip() {
    local base up
    [ -f "$RPM" ] || fail "no .rpm was built"
    up=$(build_upgrade_rpm) && [ -f "$up" ] || fail "could not build the release-2 .rpm for the upgrade"
    base=$(mktemp -d /tmp/mediasoup-rpm-XXXXXX)
    mkdir -p "$base/upper" "$base/work" "$base/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root" ||
        fail "cannot mount an overlay over /"
    echo "$base/root" >"$OVERLAY_FILE"
    local R=$base/root rc=0
    # Every step states its own failure: `set -e` would do nothing here, because the
    # subshell runs on the left of `||` (and inside check's `if`).
    (
        # rpm_in ARGS...: rpm on the overlay root; its exit status, not grep's.
        rpm_in() {
            local out st
            out=$(rpm --root "$R" --dbpath /var/lib/rpm "$@" 2>&1)
            st=$?
            grep -v 'use Alien' <<<"$out"
            return $st
        }
        named() { find "$R/etc" "$R/usr" "$R/var/lib/systemd" -xdev -name '*mediasoup*' 2>/dev/null | sort; }
        account() { grep -h '^mediasoup:' "$R/etc/passwd" "$R/etc/group"; }
        conf=$R/etc/mediasoup/server.env
        rm -rf "$R/var/lib/rpm"
        rpm --root "$R" --dbpath /var/lib/rpm --initdb || fail "rpm --initdb failed"
        named >"$base/before.txt"
        [ -z "$(account)" ] || fail "a mediasoup user or group exists before the install"

        rpm_in -i --nodeps "$RPM" || fail "rpm -i failed"
        rpm_in -q mediasoup-server || fail "rpm -q does not know the installed package"
        user=$(grep '^mediasoup:' "$R/etc/passwd") || fail "%pre created no mediasoup user"
        group=$(grep '^mediasoup:' "$R/etc/group") || fail "%pre created no mediasoup group"
        echo "user: $user"
        echo "group: $group"
        [ "$(cut -d: -f3 <<<"$user")" -lt 1000 ] || fail "mediasoup is not a system user"
        [ "$(cut -d: -f4 <<<"$user")" = "$(cut -d: -f3 <<<"$group")" ] || fail "the user's primary group is not mediasoup"
        [ "$(cut -d: -f7 <<<"$user")" = /sbin/nologin ] || fail "mediasoup can log in"
        [ -x "$R/usr/bin/mediasoup-server" ] || fail "no executable /usr/bin/mediasoup-server"
        [ -L "$R/etc/systemd/system/multi-user.target.wants/mediasoup-server.service" ] ||
            fail "%post did not enable the unit"
        echo "installed: user and group created, unit enabled"

        printf '%s\n' '# edited by test.sh' 'MEDIASOUP_ANNOUNCED_IP=192.0.2.10' >>"$conf"
        edited=$(sha256sum <"$conf")
        rpm_in -U --nodeps "$up" || fail "rpm -U to release 2 failed"
        [ "$(rpm --root "$R" --dbpath /var/lib/rpm -q --qf '%{RELEASE}' mediasoup-server 2>/dev/null)" = 2 ] ||
            fail "rpm -U did not install release 2"
        [ "$(sha256sum <"$conf")" = "$edited" ] || fail "rpm -U replaced the edited server.env"
        cmp "$conf.rpmnew" "$WORK/rpm-upgrade/server.env" || fail "rpm -U did not write the new server.env as .rpmnew"
        [ "$(account)" = "$(printf '%s\n%s' "$user" "$group")" ] || fail "rpm -U changed the user or group"
        echo "upgraded to release 2: edited server.env kept, the new one is server.env.rpmnew"
        rm "$conf.rpmnew"

        rpm_in -e mediasoup-server || fail "rpm -e failed"
        rpm_in -q mediasoup-server && fail "rpm -q still knows the package after rpm -e"
        [ ! -e "$R/etc/systemd/system/multi-user.target.wants/mediasoup-server.service" ] ||
            fail "%preun did not disable the unit"
        [ -f "$conf.rpmsave" ] && grep -q 'edited by test.sh' "$conf.rpmsave" ||
            fail "rpm -e did not save the edited server.env as server.env.rpmsave"
        rm "$conf.rpmsave"
        rmdir "$R/etc/mediasoup" || fail "/etc/mediasoup holds more than server.env.rpmsave"
        named | diff -u "$base/before.txt" - || fail "rpm -e left the lines marked + above"
        [ "$(account)" = "$(printf '%s\n%s' "$user" "$group")" ] ||
            fail "rpm -e did not keep the mediasoup user and group as they were"
        echo "erased: unit disabled, edited server.env saved as .rpmsave, files and directories removed,"
        echo "        user and group kept (Fedora guidelines): $(account | tr '\n' ' ')"
    ) || rc=1
    umount "$R"
    rm -rf "$base" "$OVERLAY_FILE"
    return $rc
}
check ".rpm installs, upgrades (rpm -U keeps edited %config) and erases in an overlay root" rpm_overlay_round_trip

# --- alert rules -------------------------------------------------------------------------
check "promtool check rules alerts/mediasoup-server.rules.yml" promtool check rules alerts/mediasoup-server.rules.yml
check "promtool test rules alerts/tests/mediasoup-server.test.yml" promtool test rules alerts/tests/mediasoup-server.test.yml

alerts_complete() {
    local a rules=alerts/mediasoup-server.rules.yml
    for a in "${ALERTS[@]}"; do
        grep -q "^      - alert: $a\$" $rules || fail "$a is not in $rules"
        grep -q "alertname: $a\$" alerts/tests/mediasoup-server.test.yml || fail "$a has no unit test"
        grep -q "^### $a\$" README.md || fail "$a has no runbook section (### $a)"
    done
    [ "$(grep -c '^      - alert:' $rules)" -eq ${#ALERTS[@]} ] || fail "$rules has alerts this check does not know"
    $PY - "$rules" <<'EOF'
import sys, yaml
for rule in yaml.safe_load(open(sys.argv[1]))["groups"][0]["rules"]:
    a = rule.get("annotations", {})
    missing = [k for k in ("summary", "description", "runbook") if not a.get(k)]
    if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
        missing.append("severity")
    if missing:
        sys.exit(f'{rule["alert"]}: missing {", ".join(missing)}')
print("every rule has severity, summary, description and runbook")
EOF
}
check "every alert has severity, annotations, a unit test and a runbook section" alerts_complete

# --- dashboards --------------------------------------------------------------------------
check "dashboards JSON is what dashboards/generate.py writes" $PY dashboards/generate.py --check

dashboards_lint() {
    $PY packaging/checks.py lint-dashboards dashboards "$WORK/dashboard-exprs.rules.json" &&
        promtool check rules "$WORK/dashboard-exprs.rules.json"
}
check "dashboards: uid/title/ids/gridPos sane, datasource variable, every PromQL parses" dashboards_lint

provisioning_example() {
    $PY - <<'EOF'
import yaml
doc = yaml.safe_load(open("dashboards/provisioning/mediasoup-server.yaml"))
p = doc["providers"][0]
assert doc["apiVersion"] == 1 and p["type"] == "file", doc
assert p["options"]["path"] == "/usr/share/mediasoup-server/dashboards", p
print("provider", p["name"], "->", p["options"]["path"])
EOF
}
check "Grafana provisioning example points at the packaged dashboards" provisioning_example

# --- metric names against a real scrape --------------------------------------------------
scrape_has_every_metric() {
    local dir http metrics rtc status
    [ -x "$BIN" ] || fail "$BIN does not exist; build it (bash worker-build/setup.sh && cargo build --release)"
    dir=$(mktemp -d)
    http=$($PY packaging/checks.py free-port)
    metrics=$($PY packaging/checks.py free-port)
    rtc=$((20000 + RANDOM % 20000))
    (cd "$dir" && exec env MEDIASOUP_LISTEN_ADDR="127.0.0.1:$http" MEDIASOUP_METRICS_ADDR="127.0.0.1:$metrics" \
        MEDIASOUP_ANNOUNCED_IP=127.0.0.1 MEDIASOUP_RTC_MIN_PORT="$rtc" MEDIASOUP_RTC_MAX_PORT="$((rtc + 100))" \
        "$BIN") >"$WORK/scrape-server.log" 2>&1 &
    SERVER_PID=$!
    echo "$SERVER_PID" >"$SERVER_PIDFILE"
    SERVER_LOG=$WORK/scrape-server.log
    wait_http "http://127.0.0.1:$metrics/metrics" 30
    curl -fsS "http://127.0.0.1:$metrics/metrics" >"$WORK/scrape.txt"
    stop_server
    rm -rf "$dir"
    $PY packaging/checks.py missing-metrics "$WORK/scrape.txt" dashboards/*.json alerts/mediasoup-server.rules.yml
}
check "every metric named in dashboards and alert rules is in a real scrape" scrape_has_every_metric

echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
